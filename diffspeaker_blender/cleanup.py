"""Cleanup of generated motion, and takes, in Blender.

Every operator stores its setting in the bake record on the Key (``bake.BAKE_PROP``) and
re-derives the tool's F-curves from the raw values kept there (``core.cleanup``), so
operations commute and re-running one changes nothing. Each is one undo step. Only the
tool's "DS_" F-curves are rewritten: the artist's curves, keys and drivers, in the same
action or elsewhere, are never touched. Takes: see the module docstring of ``bake``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import bpy
import numpy as np
from bpy.props import FloatProperty, IntProperty

from . import bake
from .core.cleanup import ARTIST_REGIONS, CleanupSettings, apply_cleanup
from .polls import poll_reason

REGION_LABELS = {"lips": "Lips", "jaw": "Jaw", "upper_face": "Upper Face", "other": "Other", "face": "Face"}
DEFAULT_SIGMA = 1.0  # frames: what the Smooth button does on a curve not smoothed yet
DEFAULT_MAX_ERROR_MM = 0.1  # the bake's own default accuracy
SLIDER_LIMIT = 10.0  # Blender's shape-key slider range stops at ±10


def label(region: str) -> str:
    """"upper_face" -> "Upper Face"; regions a script named are shown as named."""
    return REGION_LABELS.get(region, region)


# --------------------------------------------------------------------------------------
# The stored bake
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StoredBake:
    """The raw result of a compact bake, read back from the Key."""

    names: tuple  # (K,) tool key names
    regions: tuple  # (K,) region of each key
    start: float  # scene frame of raw value 0
    takes: tuple  # per take: (K, n) float32 raw key values on frames start + j
    action: object  # the action that shows the active take; None if the artist deleted it
    active_take: int
    settings: CleanupSettings

    @property
    def region_names(self) -> tuple:
        return tuple(dict.fromkeys(self.regions))


def _record(obj):
    """(Key, the bake record) of obj, or ValueError saying in plain words what is missing."""
    if obj is None or getattr(obj, "type", None) != "MESH":
        raise ValueError("Select the mesh with the generated motion (make it the active object).")
    key = obj.data.shape_keys
    record = key.get(bake.BAKE_PROP) if key is not None else None
    if record is None:
        raise ValueError(f"'{obj.name}' has no generated motion to clean up. Generate it first.")
    if record.get("mode") != "COMPACT":
        raise ValueError(f"The motion on '{obj.name}' was baked in Exact mode (one shape key per frame), "
                         "which cannot be cleaned up. Generate it again with Bake: Compact.")
    return key, record


def stored_bake(obj) -> StoredBake:
    """What the last compact bake on obj stored; ValueError when there is none."""
    record = _record(obj)[1]
    names, regions = tuple(record["names"]), tuple(record["regions"])
    n = int(record["frames"])
    takes = tuple(_floats(record["takes"][str(k)]).reshape(len(names), n) for k in range(len(record["takes"])))
    return StoredBake(
        names=names, regions=regions, start=float(record["start"]), takes=takes, action=record.get("action"),
        active_take=int(record.get("active_take", 0)), settings=CleanupSettings.from_dict(record["cleanup"]),
    )


def _floats(prop) -> np.ndarray:
    """A copy of an ID property float array, read through the buffer protocol (fast)."""
    try:
        return np.array(memoryview(prop), dtype=np.float32)
    except TypeError:  # an ID property array without the buffer protocol
        return np.array(prop.to_list(), dtype=np.float32)


def _check_editable(obj, key, stored: StoredBake) -> None:
    if obj.mode == "EDIT":
        raise ValueError(f"'{obj.name}' is in Edit Mode; switch to Object Mode to clean up its motion.")
    if key.animation_data is not None and key.animation_data.use_tweak_mode:
        raise ValueError(f"The shape keys of '{obj.name}' are in NLA tweak mode; leave it first.")
    missing = [name for name in stored.names if name not in key.key_blocks]
    if missing:
        raise ValueError(f"The generated shape keys of '{obj.name}' were renamed or removed ({missing[0]}); "
                         "generate the motion again.")


# --------------------------------------------------------------------------------------
# Re-deriving the curves
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """What a re-derivation wrote, for the operator's report."""

    keyframes: int  # keyframes now on the active take's curves
    frames: int  # keyframes they would have undecimated
    take: int


def apply(obj, settings: CleanupSettings | None = None, take: int | None = None) -> Applied:
    """Store settings (default: keep) and the active take (default: keep), then rewrite the
    tool's F-curves: the active take into the bake's action, take k into its own action."""
    key, record = _record(obj)
    stored = stored_bake(obj)
    _check_editable(obj, key, stored)
    settings = stored.settings if settings is None else settings
    take = stored.active_take if take is None else int(take)
    if not 0 <= take < len(stored.takes):
        raise ValueError(f"'{obj.name}' has {len(stored.takes)} take(s), numbered 0 to {len(stored.takes) - 1}; "
                         f"there is no take {take}.")
    unknown = [r for r in (*settings.smoothing, *settings.intensity) if r not in stored.region_names]
    if unknown:
        raise ValueError(f"'{obj.name}' has no {unknown[0]} region; its regions are "
                         f"{', '.join(stored.region_names)}.")
    shapes = _key_shapes(key, stored.names) if settings.decimate_max_error_mm is not None else None

    def derive(k: int) -> list:
        return apply_cleanup(stored.takes[k], stored.regions, shapes, settings, stored.start)

    derived = {}
    if stored.action is not None:
        derived[take] = derive(take)
        bake.write_tool_curves(key, stored.action, list(stored.names), derived[take])
    for k in range(1, len(stored.takes)):
        action = bake.take_action(key, k)
        if action is not None:
            if k not in derived:
                derived[k] = derive(k)
            bake.write_tool_curves(key, action, list(stored.names), derived[k])
    _fit_sliders(key, stored, derived.values())
    record["cleanup"] = settings.to_dict()
    record["active_take"] = take
    shown = derived[take] if take in derived else derive(take)
    return Applied(keyframes=sum(len(f) for f, _ in shown), frames=stored.takes[take].size, take=take)


def _key_shapes(key, names) -> np.ndarray:
    """(K, V, 3) float32: each tool key's offset from the Basis, as Blender has it now."""
    basis = bake.shape_key_co(key.reference_key)
    return np.stack([bake.shape_key_co(key.key_blocks[name]) - basis for name in names])


def _fit_sliders(key, stored: StoredBake, derived) -> None:
    """Blender clamps a key's value to its slider range: widen it to every value the keys
    now take (a higher intensity goes past 1), never narrower than the raw values need."""
    lo = np.minimum(0.0, np.min([raw.min(axis=1) for raw in stored.takes], axis=0))  # (K,)
    hi = np.maximum(0.0, np.max([raw.max(axis=1) for raw in stored.takes], axis=0))
    for curves in derived:
        lo = np.minimum(lo, [values.min() for _, values in curves])
        hi = np.maximum(hi, [values.max() for _, values in curves])
    for name, low, high in zip(stored.names, lo.tolist(), hi.tolist(), strict=True):
        if high <= low:
            continue  # a key that never moves: any range will do
        block = key.key_blocks[name]
        block.slider_min = max(low, -SLIDER_LIMIT)  # min first: it is <= 0 < the current max
        block.slider_max = min(high, SLIDER_LIMIT)


def use_take(obj, take: int) -> Applied:
    """Show take in the bake's action (the tool's curves only). If the artist had assigned
    one of the tool's take actions by hand, the bake's action is assigned back, so the
    chosen take is what plays."""
    stored = stored_bake(obj)
    if stored.action is None:
        raise ValueError(f"The action that showed the generated motion on '{obj.name}' was deleted; "
                         "generate the motion again, or use the take actions in the NLA editor.")
    applied = apply(obj, take=take)
    key = obj.data.shape_keys
    anim = key.animation_data
    current = anim.action if anim is not None else None
    if current is not None and current != stored.action and current.get(bake.ACTION_KEY_PROP) == key \
            and int(current.get(bake.ACTION_TAKE_PROP, 0)) >= 1:
        anim.action = stored.action
    return applied


# --------------------------------------------------------------------------------------
# NLA
# --------------------------------------------------------------------------------------


def push_takes_to_nla(obj) -> list:
    """One muted NLA track per alternate take (takes 1..) not on a track yet, with the
    take's action as a strip at its own frames; returns the new track names. Muted, so
    the active take keeps playing until the artist unmutes or solos one."""
    key = _record(obj)[0]
    stored = stored_bake(obj)
    _check_editable(obj, key, stored)
    anim = key.animation_data or key.animation_data_create()
    on_tracks = {strip.action for track in anim.nla_tracks for strip in track.strips}
    added = []
    for k in range(1, len(stored.takes)):
        action = bake.take_action(key, k)
        if action is None or action in on_tracks:
            continue
        track = anim.nla_tracks.new()
        track.name = f"DS take {k}"
        first = float(np.floor(action.frame_range[0]))
        strip = track.strips.new(action.name, int(first), action)
        strip.action_frame_start = first  # action frame f plays at scene frame f
        track.mute = True
        added.append(track.name)
    return added


# --------------------------------------------------------------------------------------
# Panel state
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """What the panel shows for the active mesh (message is set when cleanup cannot run)."""

    message: str = ""
    takes: int = 0
    active_take: int = 0
    regions: tuple = ()
    settings: CleanupSettings = field(default_factory=CleanupSettings)


def status(obj) -> Status:
    """Cheap: reads the record's small fields only, never the raw arrays."""
    try:
        _key, record = _record(obj)
    except ValueError as exc:
        return Status(message=str(exc))
    return Status(takes=len(record["takes"]), active_take=int(record.get("active_take", 0)),
                  regions=tuple(dict.fromkeys(record["regions"])),
                  settings=CleanupSettings.from_dict(record["cleanup"]))


# --------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------


class _CleanupOperator:
    """Shared execute: run(), report in plain words, one undo step."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return poll_reason(cls, "" if obj is not None and obj.type == "MESH"
                           else "Select the mesh with the generated motion")

    def execute(self, context):
        try:
            message = self.run(context.active_object)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def _start_from_stored(self, context, prop: str, value) -> None:
        """invoke: a property not given starts from value(the stored settings), so Adjust
        Last Operation shows the current state."""
        if not self.properties.is_property_set(prop):
            try:
                setattr(self, prop, value(stored_bake(context.active_object).settings))
            except ValueError:
                pass  # nothing to clean up: execute says so


class _RegionOperator(_CleanupOperator):
    """Smooth and Intensity: one value per face region; regions not given keep theirs.
    Subclasses say which CleanupSettings mapping they set (plain attributes: annotations
    would be read as Blender properties)."""

    settings_field = ""  # "smoothing" or "intensity": {region: value}
    neutral = 0.0  # the value that leaves a region as generated (not stored)
    start = 0.0  # where the slider of a region not set yet starts
    title = ""  # the report: "<title>: Jaw 2, Lips 1", or "<title>: <nothing>" with none set
    nothing = ""

    def invoke(self, context, event):
        current = status(context.active_object)
        values = getattr(current.settings, self.settings_field)
        self._fill_regions(context, {r: values.get(r, self.start) for r in current.regions})
        return self.execute(context)

    def draw(self, context):
        self._draw_regions(context)

    def run(self, obj) -> str:
        stored = stored_bake(obj)
        given = self._region_values(stored, getattr(stored.settings, self.settings_field))
        values = {r: v for r, v in given.items() if v != self.neutral}
        apply(obj, replace(stored.settings, **{self.settings_field: values}))
        return f"{self.title}: " + (", ".join(f"{label(r)} {v:g}" for r, v in values.items()) or self.nothing)

    def _region_values(self, stored: StoredBake, current: Mapping) -> dict:
        """current, with the regions whose property was given replaced by it."""
        out = dict(current)
        for region in ARTIST_REGIONS:
            if self.properties.is_property_set(region):
                if region not in stored.region_names:
                    raise ValueError(f"This mesh has no {label(region)} region; its regions are "
                                     f"{', '.join(label(r) for r in stored.region_names)}.")
                out[region] = _typed(getattr(self, region))
        return out

    def _fill_regions(self, context, start: Mapping) -> None:
        """invoke: regions not given start from start[region] (the current state, so Adjust
        Last Operation shows it), and only the mesh's own regions are drawn."""
        regions = status(context.active_object).regions
        for region in regions:
            if not self.properties.is_property_set(region) and region in start:
                setattr(self, region, start[region])
        self._regions = regions

    def _draw_regions(self, context) -> None:
        regions = getattr(self, "_regions", None) or status(context.active_object).regions or ARTIST_REGIONS
        for region in regions:
            if region in ARTIST_REGIONS:  # regions given by a script have no slider here
                self.layout.prop(self, region, text=label(region))


def _typed(value: float) -> float:
    """An operator's float property is float32: 0.1 arrives as 0.10000000149. Keep the
    number that was typed, so the stored state and the report read as entered."""
    return float(f"{value:.6g}")


def _sigma(label: str):
    return FloatProperty(name=label, min=0.0, max=30.0, soft_max=8.0, default=DEFAULT_SIGMA, options={"SKIP_SAVE"},
                         description="Gaussian smoothing width in frames (0: none)")


def _gain(label: str):
    return FloatProperty(name=label, min=0.0, max=3.0, soft_max=2.0, default=1.0, options={"SKIP_SAVE"},
                         description="Intensity of this region's motion (1: as generated, 0: still)")


class DIFFSPEAKER_OT_smooth_motion(_RegionOperator, bpy.types.Operator):
    """Smooth the generated motion per face region (re-derived from the generated result)"""

    bl_idname = "diffspeaker.smooth_motion"
    bl_label = "Smooth"

    settings_field, neutral, title, nothing = "smoothing", 0.0, "Smoothing", "none"
    start = DEFAULT_SIGMA  # a region not smoothed yet: pressing Smooth should smooth

    jaw: _sigma("Jaw")
    lips: _sigma("Lips")
    upper_face: _sigma("Upper Face")
    other: _sigma("Other")
    face: _sigma("Face")


class DIFFSPEAKER_OT_set_intensity(_RegionOperator, bpy.types.Operator):
    """Scale the generated motion per face region (1: as generated, 0: still)"""

    bl_idname = "diffspeaker.set_intensity"
    bl_label = "Intensity"

    settings_field, neutral, title, nothing = "intensity", 1.0, "Intensity", "as generated"
    start = 1.0

    jaw: _gain("Jaw")
    lips: _gain("Lips")
    upper_face: _gain("Upper Face")
    other: _gain("Other")
    face: _gain("Face")


class DIFFSPEAKER_OT_offset_motion(_CleanupOperator, bpy.types.Operator):
    """Move the generated motion in time, relative to where it was generated (negative: earlier)"""

    bl_idname = "diffspeaker.offset_motion"
    bl_label = "Time Offset"

    frames: FloatProperty(name="Frames", min=-1000.0, max=1000.0, soft_min=-24.0, soft_max=24.0, default=0.0,
                          options={"SKIP_SAVE"}, description="Offset from the generated timing, in frames")

    def invoke(self, context, event):
        self._start_from_stored(context, "frames", lambda settings: settings.time_offset)
        return self.execute(context)

    def run(self, obj) -> str:
        settings = replace(stored_bake(obj).settings, time_offset=_typed(self.frames))
        apply(obj, settings)
        return f"Time offset: {settings.time_offset:+g} frames"


class DIFFSPEAKER_OT_decimate_keys(_CleanupOperator, bpy.types.Operator):
    """Remove keyframes while every vertex stays within the given distance of the full motion"""

    bl_idname = "diffspeaker.decimate_keys"
    bl_label = "Decimate Keys"

    max_error_mm: FloatProperty(name="Max Error (mm)", min=0.0, max=10.0, default=DEFAULT_MAX_ERROR_MM,
                                options={"SKIP_SAVE"},
                                description="Largest vertex error allowed (0: a keyframe on every frame again)")

    def invoke(self, context, event):
        self._start_from_stored(context, "max_error_mm",
                                lambda settings: settings.decimate_max_error_mm or DEFAULT_MAX_ERROR_MM)
        return self.execute(context)

    def run(self, obj) -> str:
        error = _typed(self.max_error_mm) if self.max_error_mm > 0 else None
        applied = apply(obj, replace(stored_bake(obj).settings, decimate_max_error_mm=error))
        if error is None:
            return f"Keyframes on every frame again ({applied.keyframes})"
        return (f"Kept {applied.keyframes} of {applied.frames} keyframes "
                f"({1 - applied.keyframes / max(applied.frames, 1):.0%} removed), max error {error:g} mm")


class DIFFSPEAKER_OT_reset_cleanup(_CleanupOperator, bpy.types.Operator):
    """Undo every cleanup step: the curves as generated (the chosen take is kept)"""

    bl_idname = "diffspeaker.reset_cleanup"
    bl_label = "Reset Cleanup"

    def run(self, obj) -> str:
        apply(obj, CleanupSettings())
        return "Motion back as generated"


class DIFFSPEAKER_OT_use_take(_CleanupOperator, bpy.types.Operator):
    """Show this take in the active animation (the other takes stay in their own actions)"""

    bl_idname = "diffspeaker.use_take"
    bl_label = "Use Take"

    take: IntProperty(name="Take", min=0, default=0, description="Take number (0 is the first)")

    def run(self, obj) -> str:
        applied = use_take(obj, self.take)
        return f"Take {applied.take} is active"


class DIFFSPEAKER_OT_push_takes_to_nla(_CleanupOperator, bpy.types.Operator):
    """Put every alternate take on its own muted NLA track, to compare or blend them"""

    bl_idname = "diffspeaker.push_takes_to_nla"
    bl_label = "Takes to NLA"

    def run(self, obj) -> str:
        added = push_takes_to_nla(obj)
        return f"Added NLA tracks: {', '.join(added)} (muted)" if added else "Every take is on an NLA track already"


classes = (
    DIFFSPEAKER_OT_smooth_motion,
    DIFFSPEAKER_OT_set_intensity,
    DIFFSPEAKER_OT_offset_motion,
    DIFFSPEAKER_OT_decimate_keys,
    DIFFSPEAKER_OT_reset_cleanup,
    DIFFSPEAKER_OT_use_take,
    DIFFSPEAKER_OT_push_takes_to_nla,
)

register, unregister = bpy.utils.register_classes_factory(classes)
