"""Keyframing a character's own ARKit shape keys with generated motion.

The motion (on the character's vertices) is solved per frame as weights of the mesh's
ARKit mouth and jaw keys (`core.arkit.solve_weights`), resampled to the scene's frame rate
and written as F-curves into the Key's action by bake.py's conventions (the artist's
action if the Key has one, else the tool's "DS_<object>").

Ownership: the key shapes, their values, slider ranges and drivers are never changed. A
key that is driven, muted, limited to a vertex group or already animated by the artist is
left out of the solve (and named in the summary). The names of the curves the tool wrote
are kept on the Key (`ARKIT_CURVES_PROP`), so the next bake replaces exactly those and
`remove_arkit_curves` removes exactly those.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import bpy
import numpy as np

from . import bake, compat
from .core import arkit as arkit_math
from .core import timing

ARKIT_CURVES_PROP = "diffspeaker_arkit_curves"  # on the Key: names of the keys whose curves the tool wrote
_VALUE_PATH = re.compile(r'key_blocks\["((?:[^"\\]|\\.)*)"\]\.value')


@dataclass(frozen=True)
class ArkitBakeResult:
    keys: tuple            # the shape keys keyframed
    skipped: tuple         # ((key name, why), ...) ARKit keys left alone
    first_frame: float
    last_frame: float
    max_error_mm: float    # worst vertex error of the fit on the keys' vertices, at model frames
    rms_error_mm: float
    takes_given: int
    action: str
    frame_end_extended: bool

    def summary(self) -> str:
        parts = [f"{len(self.keys)} ARKit key{'' if len(self.keys) == 1 else 's'} keyframed",
                 f"frames {_frame(self.first_frame)}-{_frame(self.last_frame)}",
                 f"fit error {self.max_error_mm:.2g} mm at worst ({self.rms_error_mm:.2g} mm RMS)"]
        if self.skipped:
            parts.append("left alone: " + ", ".join(f"{name} ({why})" for name, why in self.skipped))
        if self.takes_given > 1:
            parts.append(f"first of {self.takes_given} takes only")
        return ", ".join(parts)


def _frame(f: float) -> str:
    return str(int(f)) if float(f).is_integer() else f"{f:.2f}"


def bake_arkit(obj: bpy.types.Object, offsets: np.ndarray, *, model_fps: float, scene: bpy.types.Scene,
               start_frame: float) -> ArkitBakeResult:
    """Keyframe obj's ARKit mouth/jaw keys to follow offsets ((takes,) T, V, 3 on obj's
    vertices, metres in obj's space, at model_fps). Take 0 only: ARKit keys have one action.
    Raises ValueError, before changing anything, when there is nothing it may key."""
    takes = np.asarray(offsets)
    takes = takes[None] if takes.ndim == 3 else takes
    mesh = obj.data
    if takes.ndim != 4 or takes.shape[2] != len(mesh.vertices):
        raise ValueError(f"the motion is for {takes.shape[2] if takes.ndim == 4 else '?'} vertices but "
                         f"'{obj.name}' has {len(mesh.vertices)}")
    if obj.mode != "OBJECT":
        raise ValueError(f"'{obj.name}' is in {obj.mode.title()} Mode; switch to Object Mode to bake")
    key = mesh.shape_keys
    found = arkit_math.match_arkit_names([b.name for b in key.key_blocks if b != key.reference_key],
                                         arkit_math.SPEECH_NAMES) if key is not None else {}
    if not found:
        raise ValueError(f"'{obj.name}' has no ARKit mouth or jaw shape keys (jawOpen, mouthClose, ...). "
                         "Turn off Drive ARKit Keys to bake new shape keys instead.")
    ours = set(key.get(ARKIT_CURVES_PROP, ()))
    driven = {_key_name(d.data_path) for d in key.animation_data.drivers} if key.animation_data else set()
    animated = {_key_name(fc.data_path) for fc in compat.iter_fcurves(key)} - ours
    usable, skipped = [], []
    for name in found.values():
        block = key.key_blocks[name]
        why = ("has a driver" if name in driven else "animated by you" if name in animated
               else "muted" if block.mute else "limited to a vertex group" if block.vertex_group else "")
        (skipped.append((name, why)) if why else usable.append(name))
    if not usable:
        raise ValueError(f"Every ARKit key on '{obj.name}' is driven, muted, limited to a vertex group or animated "
                         "already; nothing was changed.")

    # The maths first: if it fails, Blender has not been touched.
    deltas = np.stack([_co(key.key_blocks[n]) - _co(key.key_blocks[n].relative_key) for n in usable])  # (K, V, 3)
    fit = arkit_math.solve_weights(deltas, takes[0])
    fps = compat.scene_fps(scene)
    values = timing.resample_motion(fit.weights, model_fps, fps)                     # (n_scene, K)
    frames = timing.scene_frames(values.shape[0], start_frame)

    bake.remove_baked(obj)             # new shape keys from an earlier bake would add to these
    _remove_curves(key, ours)
    main, _pool = bake._take_actions(obj, key)
    linear = bake._interpolation("LINEAR")
    for name, column in zip(usable, values.T, strict=True):
        bake._write_fcurve(main, key, name, frames, column, linear)
    key[ARKIT_CURVES_PROP] = list(usable)
    last = float(frames[-1]) if len(frames) else float(start_frame)
    extended = math.ceil(last) > scene.frame_end
    if extended:
        scene.frame_end = math.ceil(last)
    return ArkitBakeResult(
        keys=tuple(usable), skipped=tuple(skipped), first_frame=float(start_frame), last_frame=last,
        max_error_mm=float(fit.max_error.max(initial=0.0) * 1000),
        rms_error_mm=fit.overall_rms * 1000,
        takes_given=takes.shape[0], action=main.name, frame_end_extended=bool(extended),
    )


def remove_arkit_curves(obj: bpy.types.Object) -> int:
    """Remove the F-curves the tool wrote on obj's ARKit keys (the keys keep their values),
    and the tool's own action if that leaves it empty; returns how many keys lost their curve."""
    key = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    if key is None or ARKIT_CURVES_PROP not in key:
        return 0
    removed = _remove_curves(key, set(key[ARKIT_CURVES_PROP]))
    del key[ARKIT_CURVES_PROP]
    action = key.animation_data.action if key.animation_data is not None else None
    if action is not None and action.get(bake.ACTION_KEY_PROP) == key:
        bake._remove_action_if_empty(key, action)  # "DS_<object>", made for these curves
    return removed


def _co(block) -> np.ndarray:
    return bake.shape_key_co(block).astype(np.float64)


def _key_name(data_path: str) -> str | None:
    """'key_blocks["jawOpen"].value' -> 'jawOpen' (None for other paths)."""
    match = _VALUE_PATH.fullmatch(data_path)
    return match.group(1).replace('\\"', '"').replace("\\\\", "\\") if match else None


def _remove_curves(key: bpy.types.Key, names: set) -> int:
    """Remove the curves animating key_blocks[name].value for names, from the Key's active action
    (its own slot only: the action may be shared); returns how many were removed."""
    anim = key.animation_data
    if not names or anim is None or anim.action is None:
        return 0
    slot = getattr(anim, "action_slot", None)  # None before 4.4: one set of curves
    if slot is None and hasattr(anim.action, "layers"):
        return 0  # 4.4+ without a slot: nothing in the action animates this Key
    removed = 0
    for fcurves in bake._fcurve_collections(anim.action, slot):
        for fcurve in [fc for fc in fcurves if _key_name(fc.data_path) in names]:
            fcurves.remove(fcurve)
            removed += 1
    return removed
