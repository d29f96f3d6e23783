"""Writing generated motion onto a mesh as shape keys and keyframes.

All the maths (basis, key schedule, resampling, key names) lives in ``core/``; this
module only moves arrays into Blender, in bulk (``points.foreach_set`` for shapes,
``keyframe_points.add`` + ``foreach_set`` for keys).

Ownership rules, so an artist's rig is never damaged:

* The tool's shape keys are exactly those whose names pass ``bake_math.is_tool_key``
  ("DS_basis_000", "DS_frame_0000"); only those, and the F-curves animating them,
  are ever removed or replaced. Other keys, their values, slider ranges, mute flags,
  drivers and F-curves are left alone.
* The mesh's Basis (the Key's reference key) is never modified. When the mesh had no
  shape keys, a "Basis" is made from the mesh and the Key is tagged
  (``CREATED_BASIS_PROP``) so ``remove_baked`` can give the mesh back as it was.
* Take 0 is the active animation. If the Key already has an action (say, the artist's
  blinks), the tool's F-curves are added to it; otherwise the tool makes "DS_<object>".
  Every further take goes into its own action "DS_<object>_take<k>" (with a fake user,
  so it survives saving while unassigned). Actions the tool made carry
  ``ACTION_KEY_PROP`` (the Key they animate) and ``ACTION_TAKE_PROP`` (the take).

Regions (compact mode). The keys are made per face region (``core.cleanup``: lips, jaw,
upper_face, other on the project's head; one "face" region on other meshes), so each key
moves one region only and cleanup can smooth or scale a region on its own.

What a compact bake keeps, so every cleanup step can be redone from scratch. Everything
lives on the Key datablock (``BAKE_PROP``), never on an action: take 0 may share the
artist's action, and the artist may swap actions around. ID properties save with the
.blend and follow undo. The group holds:

    mode          "COMPACT" (or "EXACT": then nothing else; cleanup needs a compact bake)
    names         (K,) tool key names, DS_basis_000 ...
    regions       (K,) the region of each key
    start, frames raw value j of every key is on scene frame start + j, j < frames
    takes         {"0": (K * frames,) float32 raw values of take 0 (row-major (K, frames)), "1": ...}
    action        the action that shows the active take (take 0's action after a bake)
    active_take   which take that action shows
    cleanup       the cleanup settings (``CleanupSettings.to_dict``); a bake resets them

Takes. The active action (``action`` above, often the artist's own) shows one take at a
time: switching a take (``cleanup.use_take``) rewrites only the tool's F-curves in it,
derived from that take's raw values and the cleanup settings, so the artist's curves in
the same action are never removed. Takes 1.. always keep their own actions,
"DS_<object>_take<k>", derived the same way, for the NLA editor; take 0's own curves
are its raw values, shown again by switching back to it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import bpy
import numpy as np

from . import compat
from .core import bake_math, timing
from .core import cleanup as cleanup_math

MODES = ("COMPACT", "EXACT")
BASIS_NAME = "Basis"
CREATED_BASIS_PROP = "diffspeaker_created_basis"  # on the Key: the tool made its Basis
ACTION_KEY_PROP = "diffspeaker_key"  # on the tool's actions: the Key datablock they animate
ACTION_TAKE_PROP = "diffspeaker_take"  # on the tool's actions: the take index they hold
BAKE_PROP = "diffspeaker_bake"  # on the Key: what the last bake made (see the module docstring)

# 'key_blocks["DS_basis_000"].value' -> 'DS_basis_000' (names with escaped quotes included).
_KEY_BLOCK_PATH = re.compile(r'key_blocks\["((?:[^"\\]|\\.)*)"\]')


def _interpolation(name: str) -> int:
    # Looked up rather than hard-coded (0 CONSTANT, 1 LINEAR in 4.2-5.3).
    return bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items[name].value


# --------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BakeResult:
    """What a bake wrote, for the status line and for tests."""

    mode: str  # "COMPACT" or "EXACT"
    keys: int  # tool shape keys written
    takes: int  # takes written (EXACT writes take 0 only)
    takes_given: int  # takes that were passed in
    first_frame: float  # scene frame of the first animated frame (audio sample 0)
    last_frame: float  # scene frame of the last animated frame
    max_error_mm: float  # achieved max per-vertex error at model frames (0 in EXACT mode)
    target_error_mm: float  # the bound asked for
    capped: bool  # True when the key limit stopped the bound from being met
    frame_end_extended: bool  # scene.frame_end was moved later to fit the animation
    frame_end: int  # scene.frame_end after the bake
    action: str  # the action holding take 0 (the active one on the Key); "" when nothing moves
    take_actions: tuple = ()  # names of the actions holding takes 1.. (COMPACT only)
    key_regions: tuple = ()  # (K,) the face region of each key (COMPACT only)

    def summary(self) -> str:
        """One short line, e.g. "12 shape keys, frames 1-73, max error 0.08 mm"."""
        frames = f"frames {_frame(self.first_frame)}-{_frame(self.last_frame)}"
        keys = f"{self.keys} shape key{'' if self.keys == 1 else 's'}"
        if self.mode == "EXACT":
            parts = [f"{keys} (one per model frame)", frames, "exact shapes"]
            if self.takes_given > 1:
                parts.append(f"first of {self.takes_given} takes only (exact mode bakes one take)")
        else:
            error = f"max error {self.max_error_mm:.2g} mm"
            if self.capped:
                error += f" (above the {self.target_error_mm:.2g} mm target: key limit reached)"
            parts = [keys, frames, error]
            if self.take_actions:
                parts.append(f"{self.takes} takes (first active; others in actions {', '.join(self.take_actions)})")
        if self.frame_end_extended:
            parts.append(f"scene end extended to frame {self.frame_end}")
        return ", ".join(parts)


def _active_action_name(key: bpy.types.Key) -> str:
    anim = key.animation_data
    return anim.action.name if anim is not None and anim.action is not None else ""


def _frame(f: float) -> str:
    return str(int(f)) if float(f).is_integer() else f"{f:.2f}"


# --------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------


def bake_offsets(
    obj: bpy.types.Object,
    offsets: np.ndarray,
    *,
    model_fps: float,
    scene: bpy.types.Scene | None = None,
    start_frame: float | None = None,
    mode: str = "COMPACT",
    max_error_m: float = 1e-4,
    max_keys: int = 64,
    regions: dict | None = None,
) -> BakeResult:
    """Bake offsets (takes, T, V, 3) or (T, V, 3), float metres at model_fps relative to the
    mesh's Basis, as shape keys animated on scene's timeline from start_frame (the scene frame
    of audio time 0, normally the sound strip's frame_start; default scene.frame_start).

    Compact mode makes its keys per face region: regions maps a region name ("lips", "jaw",
    "upper_face", ...) to a bool mask (V,) or vertex indices; overlaps go to the first in
    cleanup's priority, the rest of the mesh is "other". None uses the project head's regions
    when the mesh has its vertex count, else one "face" region. max_keys applies per region.

    Replaces whatever the tool baked before on this mesh and nothing else. Raises ValueError,
    before anything is changed, for a non-mesh, a vertex-count mismatch or bad input.
    """
    mode = _check_mode(mode)
    mesh = _check_target(obj)
    takes = _check_offsets(offsets, len(mesh.vertices), obj.name)  # (N, T, V, 3)
    scene = scene if scene is not None else bpy.context.scene
    fps = compat.scene_fps(scene)
    start = float(scene.frame_start if start_frame is None else start_frame)
    if not math.isfinite(start):
        raise ValueError(f"start_frame must be a finite frame number, got {start_frame!r}")
    n_takes, n_frames, n_verts, _ = takes.shape

    # All the maths first: if it fails, Blender has not been touched.
    if mode == "COMPACT":
        if regions is None:
            regions = cleanup_math.cleanup_regions_for(n_verts)
        parts = cleanup_math.disjoint_regions(regions, n_verts)
        regional = cleanup_math.regional_compact_basis(takes.reshape(n_takes * n_frames, n_verts, 3), parts,
                                                       max_error_m, max_keys)
        compact, key_regions = regional.compact, regional.key_regions
        shapes = compact.basis  # (K, V, 3)
        take_weights = [  # per take: (n_scene, K) key values on the scene's frame grid
            timing.resample_motion(compact.weights[i * n_frames:(i + 1) * n_frames], model_fps, fps)
            for i in range(n_takes)
        ]
        n_scene = take_weights[0].shape[0]
        error_mm, target_mm, capped = compact.max_error_m * 1e3, compact.target_error_m * 1e3, compact.capped
    else:
        shapes = bake_math.exact_keys(takes[0]).shapes  # (T, V, 3)
        schedule = bake_math.exact_key_schedule(n_frames, start, model_fps, fps)
        n_scene = schedule.shown_key.shape[0]
        error_mm, target_mm, capped = 0.0, float(max_error_m) * 1e3, False
        key_regions = ()

    key = _ensure_basis(obj)
    _remove_tool_keys(obj, key)
    names = [bake_math.compact_key_name(i) if mode == "COMPACT" else bake_math.exact_key_name(i)
             for i in range(shapes.shape[0])]
    _add_tool_keys(obj, key, names, shapes, compact.slider_range if mode == "COMPACT" else None)

    # Keyframes. Take 0 goes to the Key's active action; further takes to their own actions.
    take_actions: list = []
    if BAKE_PROP in key:
        del key[BAKE_PROP]  # the last bake's record (and its hold on an action) goes with its keys
    if not names:  # nothing moves (silence): no curves, and no empty tool actions left behind
        leftovers = _tool_actions(key)
    else:
        main, pool = _take_actions(obj, key)
        if mode == "COMPACT":
            frames = timing.scene_frames(n_scene, start)
            _animate(main, key, names, [frames] * len(names), take_weights[0].T, "LINEAR")
            take_actions = _animate_takes(obj, key, main, pool, names, frames, take_weights[1:])
            _store_bake(key, names, key_regions, start, take_weights, main)
        else:
            _animate(main, key, names, schedule.frames, schedule.values, "CONSTANT")
            key[BAKE_PROP] = {"mode": "EXACT"}
        leftovers = list(pool.values())  # takes of an earlier bake that had more takes
    for action in leftovers:
        _remove_action_if_empty(key, action)
    written_takes = 1 if mode == "EXACT" else n_takes

    first, last = start, start + n_scene - 1
    extended = math.ceil(last) > scene.frame_end
    if extended:
        scene.frame_end = math.ceil(last)  # only ever later; frame_start is the artist's
    return BakeResult(
        mode=mode, keys=len(names), takes=written_takes, takes_given=n_takes, first_frame=first, last_frame=last,
        max_error_mm=float(error_mm), target_error_mm=float(target_mm), capped=bool(capped),
        frame_end_extended=bool(extended), frame_end=int(scene.frame_end),
        action=_active_action_name(key),
        take_actions=tuple(take_actions),
        key_regions=tuple(key_regions),
    )


def remove_baked(obj: bpy.types.Object) -> int:
    """Remove the tool's shape keys, their F-curves and the tool's actions left empty;
    returns the number of shape keys removed. If only a Basis the tool made is left
    (and nothing else animates the Key), the shape keys are cleared altogether."""
    _check_target(obj)
    key = obj.data.shape_keys
    if key is None:
        return 0
    if BAKE_PROP in key:
        del key[BAKE_PROP]
    removed = _remove_tool_keys(obj, key)
    anim = key.animation_data
    for action in _tool_actions(key):
        _remove_action_if_empty(key, action)
    only_basis = len(key.key_blocks) == 1 and key.key_blocks[0] == key.reference_key
    animated = anim is not None and (anim.action is not None or len(anim.drivers) or len(anim.nla_tracks))
    if only_basis and key.get(CREATED_BASIS_PROP) and not animated:
        obj.shape_key_clear()  # the mesh is back as it was before the first bake
    return removed


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def _check_mode(mode: str) -> str:
    if not isinstance(mode, str) or mode.upper() not in MODES:
        raise ValueError(f"bake mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode.upper()


def _check_target(obj) -> bpy.types.Mesh:
    if obj is None or getattr(obj, "type", None) != "MESH":
        kind = "nothing" if obj is None else f"'{obj.name}' ({obj.type.lower()})"
        raise ValueError(f"shape keys can only be baked onto a mesh object, got {kind}")
    if obj.mode == "EDIT":
        raise ValueError(f"'{obj.name}' is in Edit Mode; switch to Object Mode so the shape keys can be written")
    mesh = obj.data
    if not getattr(mesh, "is_editable", True) or mesh.library is not None:
        raise ValueError(f"the mesh of '{obj.name}' is linked from a library and cannot be edited")
    key = mesh.shape_keys
    if key is not None:
        if not key.use_relative:
            raise ValueError(f"the shape keys of '{obj.name}' are not Relative; turn on Relative to bake")
        if key.animation_data is not None and key.animation_data.use_tweak_mode:
            raise ValueError(f"the shape keys of '{obj.name}' are in NLA tweak mode; leave it to bake")
    return mesh


def _check_offsets(offsets, n_verts: int, name: str) -> np.ndarray:
    arr = np.asarray(offsets)
    if arr.ndim == 3:
        arr = arr[None]  # one take
    if arr.ndim != 4 or arr.shape[-1] != 3 or 0 in arr.shape:
        raise ValueError(f"offsets must be shaped (takes, frames, vertices, 3), got {np.shape(offsets)}")
    if arr.shape[2] != n_verts:
        raise ValueError(f"the motion is for {arr.shape[2]} vertices but the mesh '{name}' has {n_verts} vertices; "
                         "use a mesh with the model's topology")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError("offsets must be finite numbers")
    return arr.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------
# Shape keys and F-curves
# --------------------------------------------------------------------------------------


def _points(block: bpy.types.ShapeKey):
    # ShapeKey.points is the fast, typed collection (0.002 s for 64 keys vs 0.06 s for .data).
    return block.points if hasattr(block, "points") else block.data


def shape_key_co(block: bpy.types.ShapeKey) -> np.ndarray:
    """(V, 3) float32: the positions of a shape key."""
    points = _points(block)
    co = np.empty(3 * len(points), dtype=np.float32)
    points.foreach_get("co", co)
    return co.reshape(-1, 3)


def _add_tool_keys(obj, key, names: list, shapes: np.ndarray, slider_range: np.ndarray | None) -> None:
    """Add shape keys names[i] = Basis + shapes[i] (V, 3), at value 0, relative to the Basis."""
    active = obj.active_shape_key.name if obj.active_shape_key is not None else None
    basis_co = shape_key_co(key.reference_key).reshape(-1)
    for i, (name, delta) in enumerate(zip(names, shapes, strict=True)):
        block = obj.shape_key_add(name=name, from_mix=False)
        if block.name != name:  # cannot happen after _remove_tool_keys; never write to a wrong key
            raise RuntimeError(f"shape key '{name}' was created as '{block.name}'")
        block.relative_key = key.reference_key
        block.value = 0.0  # shape_key_add() makes keys at 1.0 (5.0.1); unkeyed keys must rest at 0
        _points(block).foreach_set("co", basis_co + delta.reshape(-1))
        if slider_range is not None:  # Blender clamps key values to [slider_min, slider_max]
            block.slider_min = float(slider_range[i, 0])  # min first: max is always 1 and stays above it
            block.slider_max = float(slider_range[i, 1])
    _restore_active(obj, key, active)


def _animate(action, key, names: list, frames, values, interpolation: str) -> None:
    """One F-curve per key names[i] in action, keyed at frames[i] with values[i]; keys with
    no frames (exact-mode frames the scene never shows) get no curve and stay at 0."""
    code = _interpolation(interpolation)
    for name, key_frames, key_values in zip(names, frames, values, strict=True):
        if len(key_frames):
            _write_fcurve(action, key, name, key_frames, key_values, code)


def _animate_takes(obj, key, main, pool: dict, names: list, frames: np.ndarray, weights: list) -> list:
    """Write takes 1.. (weights[k - 1]: (n_scene, K)) into their own actions, reusing the pool's;
    returns the action names. The Key's action and slot are restored afterwards."""
    anim = key.animation_data
    slot = getattr(anim, "action_slot", None)
    written = []
    try:
        for take, take_weights in enumerate(weights, start=1):
            action = pool.pop(take, None) or _new_tool_action(f"DS_{obj.name}_take{take}", key, take)
            _rename(action, f"DS_{obj.name}_take{take}")
            anim.action = action  # 4.4+ creates F-curves through the slot of the assigned action
            _animate(action, key, names, [frames] * len(names), take_weights.T, "LINEAR")
            written.append(action.name)
    finally:
        if anim.action != main:
            anim.action = main
        if slot is not None and getattr(anim, "action_slot", None) != slot:
            anim.action_slot = slot
    return written


def _ensure_basis(obj: bpy.types.Object) -> bpy.types.Key:
    key = obj.data.shape_keys
    if key is None or len(key.key_blocks) == 0:
        obj.shape_key_add(name=BASIS_NAME, from_mix=False)  # a copy of the mesh; the mesh is unchanged
        key = obj.data.shape_keys
        key[CREATED_BASIS_PROP] = True
    return key


def _key_name(data_path: str) -> str | None:
    match = _KEY_BLOCK_PATH.match(data_path)
    return match.group(1).replace('\\"', '"').replace("\\\\", "\\") if match else None


def _is_tool_path(data_path: str) -> bool:
    name = _key_name(data_path)
    return name is not None and bake_math.is_tool_key(name)


def _fcurve_collections(action: bpy.types.Action, slot=None):
    """The F-curve collections of action (of one slot's channelbags when slot is given)."""
    if hasattr(action, "layers"):  # 4.4+: layers -> strips -> channelbags (one per slot)
        for layer in action.layers:
            for strip in layer.strips:
                for channelbag in getattr(strip, "channelbags", ()):
                    if slot is None or channelbag.slot == slot:
                        yield channelbag.fcurves
    else:  # 4.2, 4.3
        yield action.fcurves


def _remove_tool_fcurves(action: bpy.types.Action, slot=None) -> None:
    for fcurves in _fcurve_collections(action, slot):
        for fcurve in [fc for fc in fcurves if _is_tool_path(fc.data_path)]:
            fcurves.remove(fcurve)


def _tool_actions(key: bpy.types.Key) -> list:
    return [action for action in bpy.data.actions if action.get(ACTION_KEY_PROP) == key]


def _remove_tool_keys(obj: bpy.types.Object, key: bpy.types.Key) -> int:
    """Remove the tool's shape keys and every F-curve animating one (in the Key's active
    action, its active slot only, and in the tool's own actions); returns the key count."""
    anim = key.animation_data
    if anim is not None and anim.action is not None:
        slot = getattr(anim, "action_slot", None)
        # Another ID may share the artist's action through another slot: leave that one be.
        own = anim.action.get(ACTION_KEY_PROP) == key
        _remove_tool_fcurves(anim.action, None if own else slot)
    for action in _tool_actions(key):
        _remove_tool_fcurves(action)
    names = [block.name for block in key.key_blocks if bake_math.is_tool_key(block.name)]
    active = obj.active_shape_key.name if obj.active_shape_key is not None else None
    for name in names:
        obj.shape_key_remove(key.key_blocks[name])  # Blender leaves its F-curves behind: removed above
    _restore_active(obj, key, active)  # removing moves the artist's selection
    return len(names)


def _restore_active(obj: bpy.types.Object, key: bpy.types.Key, name: str | None) -> None:
    if name is not None and name in key.key_blocks and obj.active_shape_key_index != key.key_blocks.find(name):
        obj.active_shape_key_index = key.key_blocks.find(name)


def _new_tool_action(name: str, key: bpy.types.Key, take: int) -> bpy.types.Action:
    action = bpy.data.actions.new(name)
    action[ACTION_KEY_PROP] = key
    action[ACTION_TAKE_PROP] = take
    action.use_fake_user = True  # takes are switched by hand: an unassigned one must survive saving
    return action


def _rename(action: bpy.types.Action, name: str) -> None:
    """Follow the object's name; a ".001" Blender added for a clash is left as it is."""
    if not re.fullmatch(re.escape(name) + r"(\.[0-9]{3,})?", action.name):
        action.name = name


def _take_actions(obj: bpy.types.Object, key: bpy.types.Key):
    """(the action for take 0, assigned to the Key; {take: reusable tool action})."""
    anim = key.animation_data or key.animation_data_create()
    pool = {}
    for action in _tool_actions(key):
        if action != anim.action:
            pool.setdefault(int(action.get(ACTION_TAKE_PROP, -1)), action)
    main = anim.action
    if main is not None and main.get(ACTION_KEY_PROP) == key and compat.action_is_empty(main) \
            and main.get(ACTION_TAKE_PROP, 0) != 0:
        # The artist had switched to an extra take of the previous bake: it is a take again.
        pool.setdefault(int(main.get(ACTION_TAKE_PROP)), main)
        anim.action = main = None
    if main is None:
        main = pool.pop(0, None) or _new_tool_action(f"DS_{obj.name}", key, 0)
        anim.action = main
    if main.get(ACTION_KEY_PROP) == key:
        _rename(main, f"DS_{obj.name}")
    return main, pool


def _remove_action_if_empty(key: bpy.types.Key, action: bpy.types.Action) -> None:
    if not compat.action_is_empty(action):
        return  # the artist keyed something into it: it is theirs now too
    anim = key.animation_data
    if anim is not None and anim.action == action:
        anim.action = None
    bpy.data.actions.remove(action)


def _write_fcurve(action, key, name: str, frames: np.ndarray, values: np.ndarray, interpolation: int) -> None:
    fcurve = compat.new_fcurve(action, key, f'key_blocks["{name}"].value')
    points = fcurve.keyframe_points
    if len(points):
        points.clear()
    points.add(len(frames))
    points.foreach_set("co", bake_math.fcurve_points(frames, values))
    points.foreach_set("interpolation", np.full(len(frames), interpolation, dtype=np.int32))
    fcurve.update()


# --------------------------------------------------------------------------------------
# The stored raw bake, and rewriting the tool's curves (used by cleanup)
# --------------------------------------------------------------------------------------


def _store_bake(key, names: list, key_regions: tuple, start: float, take_weights: list, main) -> None:
    """Record the raw result on the Key (format in the module docstring)."""
    key[BAKE_PROP] = {
        "mode": "COMPACT",
        "names": list(names),
        "regions": list(key_regions),
        "start": float(start),
        "frames": int(take_weights[0].shape[0]),
        # (n_scene, K) -> (K, n_scene), flat: one float32 array per take.
        "takes": {str(k): np.ascontiguousarray(w.T, dtype=np.float32).ravel() for k, w in enumerate(take_weights)},
        "action": main,
        "active_take": 0,
        "cleanup": cleanup_math.CleanupSettings().to_dict(),
    }


def take_action(key: bpy.types.Key, take: int):
    """The tool's own action for take >= 1 of this Key, or None."""
    return next((a for a in _tool_actions(key) if int(a.get(ACTION_TAKE_PROP, -1)) == take and take >= 1), None)


def write_tool_curves(key: bpy.types.Key, action: bpy.types.Action, names: list, curves: list) -> None:
    """Replace the keyframes of the tool's F-curves names[i] in action (in the Key's slot)
    with curves[i] = (frames (N,), values (N,)), LINEAR; nothing else in action changes.
    The action is assigned to the Key while writing (4.4+ finds the slot that way), then
    the Key's action and slot are put back."""
    anim = key.animation_data or key.animation_data_create()
    previous, slot = anim.action, getattr(anim, "action_slot", None)
    code = _interpolation("LINEAR")
    try:
        if anim.action != action:
            anim.action = action
        for name, (frames, values) in zip(names, curves, strict=True):
            _write_fcurve(action, key, name, frames, values, code)
    finally:
        if anim.action != previous:
            anim.action = previous
        if slot is not None and previous is not None and getattr(anim, "action_slot", None) != slot:
            anim.action_slot = slot
