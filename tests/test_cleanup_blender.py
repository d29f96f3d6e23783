"""Cleanup of a compact bake inside Blender (bpy 5.0 module): the raw result stored on the
Key, each operator one undo step, curves re-derived exactly from raw, the artist's rig
untouched, and the decimation bound measured on the baked F-curves."""
from __future__ import annotations

from types import MethodType, SimpleNamespace

import numpy as np
import pytest

from .addon_env import addon_enabled
from .bpy_env import evaluated_co, import_bpy, mesh_co, reset_scene, select
from .test_blender_bake import artist_state, curves_by_path, make_face, make_rigged_face, mouth_mask, vertex_error

bpy = import_bpy()

from diffspeaker_blender import bake, cleanup, compat  # noqa: E402
from diffspeaker_blender.core import cleanup as cleanup_math  # noqa: E402
from diffspeaker_blender.core.cleanup import CleanupSettings, apply_cleanup  # noqa: E402

MM = 1e-3


@pytest.fixture(autouse=True)
def addon():
    with addon_enabled(fps=24):
        yield
    reset_scene()


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def face_regions(obj) -> dict:
    """The grid face's regions: the mouth (lips), the chin below it (jaw), the brow (upper_face)."""
    co = mesh_co(obj.data)
    return {"lips": mouth_mask(co), "jaw": co[:, 2] <= -0.07, "upper_face": co[:, 2] > 0.05}


def face_offsets(obj, n_frames: int, fps: float = 30, takes: int = 1, seed: int = 0) -> np.ndarray:
    """(takes, T, V, 3) float32: the chin drops and the mouth opens and smiles with speech-like
    timing, the brow rises slowly; each take a little different."""
    co = mesh_co(obj.data)
    regions = face_regions(obj)
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    out = np.zeros((takes, n_frames, len(co), 3))
    for k in range(takes):
        phase = rng.uniform(0, 2 * np.pi)
        syllables = np.maximum(0.0, np.sin(2 * np.pi * 4.0 * t + phase)) ** 2 * np.exp(-((t - 1.0) / 0.8) ** 2)
        smile = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t + k)
        brow = np.sin(2 * np.pi * 0.4 * t + 2 * k) ** 2
        out[k, :, regions["jaw"], 2] -= 0.008 * syllables[None, :] * (1 + 0.2 * k)
        out[k, :, regions["lips"], 2] -= 0.006 * syllables[None, :] * np.exp(-(co[regions["lips"], 0] / 0.03) ** 2)[:, None]
        out[k, :, regions["lips"], 0] += 0.002 * smile[None, :] * (co[regions["lips"], 0] / 0.045)[:, None]
        out[k, :, regions["upper_face"], 2] += 0.003 * brow[None, :]
    return out.astype(np.float32)


def bake_face(obj, n_frames: int = 60, takes: int = 1, **kwargs):
    return bake.bake_offsets(obj, face_offsets(obj, n_frames, takes=takes), model_fps=30, scene=bpy.context.scene,
                             start_frame=1, regions=face_regions(obj), **kwargs)


def baked_face(**kwargs):
    """A face with a compact bake (bake_face's options), selected for the operators."""
    obj = make_face()
    bake_face(obj, **kwargs)
    select(obj)
    return obj


def tool_fcurves(key, action=None) -> dict:
    """{key name: (frames float32, values float32)} of the tool's curves in action (default:
    the Key's active action), in the Key's slot."""
    anim = key.animation_data
    previous = anim.action
    if action is not None and action != previous:
        anim.action = action
    try:
        out = {}
        for fc in compat.iter_fcurves(key):
            name = bake._key_name(fc.data_path)
            if name is not None and name.startswith("DS_"):
                co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
                fc.keyframe_points.foreach_get("co", co)
                out[name] = (co[0::2].copy(), co[1::2].copy())
        return out
    finally:
        if anim.action != previous:
            anim.action = previous


def expected_curves(obj, settings: CleanupSettings, take: int = 0) -> dict:
    stored = cleanup.stored_bake(obj)
    shapes = cleanup._key_shapes(obj.data.shape_keys, stored.names)
    curves = apply_cleanup(stored.takes[take], stored.regions, shapes, settings, stored.start)
    return {name: (f.astype(np.float32), v.astype(np.float32)) for name, (f, v) in zip(stored.names, curves)}


def same_curves(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(
        np.array_equal(a[name][0], b[name][0]) and np.array_equal(a[name][1], b[name][1]) for name in a)


def assert_curves_equal(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name][0], expected[name][0], err_msg=name)
        np.testing.assert_array_equal(got[name][1], expected[name][1], err_msg=name)


def record(obj) -> dict:
    """The bake record as plain data (the action by name: undo reloads datablocks)."""
    data = obj.data.shape_keys[bake.BAKE_PROP].to_dict()
    if data.get("action") is not None:
        data["action"] = data["action"].name
    for take, values in data.get("takes", {}).items():
        data["takes"][take] = np.asarray(values, np.float32).tobytes()
    return data


OPERATIONS = [
    ("smooth_motion", {"jaw": 2.0, "lips": 1.0}),
    ("set_intensity", {"jaw": 0.5, "upper_face": 0.0}),
    ("offset_motion", {"frames": 2.5}),
    ("decimate_keys", {"max_error_mm": 0.1}),
    ("reset_cleanup", {}),
]


def run_op(name: str, undo: bool = False, **kwargs):
    op = getattr(bpy.ops.diffspeaker, name)
    return op("EXEC_DEFAULT", True, **kwargs) if undo else op(**kwargs)


# --------------------------------------------------------------------------------------
# The stored raw result
# --------------------------------------------------------------------------------------


def test_a_compact_bake_stores_its_raw_result_on_the_key():
    obj = make_face()
    result = bake_face(obj, takes=2)
    data = record(obj)
    names = [b.name for b in obj.data.shape_keys.key_blocks if b.name.startswith("DS_")]
    assert data["mode"] == "COMPACT" and data["names"] == names
    assert tuple(data["regions"]) == result.key_regions
    assert {"lips", "jaw", "upper_face"} <= set(data["regions"])
    assert data["start"] == 1.0 and data["active_take"] == 0
    assert data["frames"] == result.last_frame - result.first_frame + 1
    assert sorted(data["takes"]) == ["0", "1"]
    assert obj.data.shape_keys[bake.BAKE_PROP]["action"] == bpy.data.actions["DS_Face"] and data["action"] == "DS_Face"
    assert CleanupSettings.from_dict(data["cleanup"]) == CleanupSettings()
    # Each key moves its own region only.
    regions = dict(cleanup_math.disjoint_regions(face_regions(obj), len(obj.data.vertices)))
    shapes = cleanup._key_shapes(obj.data.shape_keys, names)
    for shape, region in zip(shapes, data["regions"], strict=True):
        moved = np.flatnonzero(np.abs(shape).sum(axis=1) > 0)
        assert np.isin(moved, regions[region]).all(), region


def test_the_stored_raw_values_are_the_baked_curves():
    obj = make_face()
    bake_face(obj)
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), expected_curves(obj, CleanupSettings()))


def test_the_default_head_bakes_per_region_without_being_told(tmp_path):
    from synth import rig
    from synth.head import build_head
    from synth.segments import PhonemeSegment

    head = build_head()
    mesh = bpy.data.meshes.new("Head")
    mesh.from_pydata(head.vertices.tolist(), [], head.polygons())
    obj = bpy.data.objects.new("Head", mesh)
    bpy.context.scene.collection.objects.link(obj)
    segments = [PhonemeSegment(p, 0.1 + 0.12 * i, 0.22 + 0.12 * i) for i, p in enumerate(["m", "aa", "p", "iy", "uw"])]
    offsets = rig.animate(segments, fps=30, duration=1.0)
    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene, start_frame=1)
    assert {"lips", "jaw"} <= set(result.key_regions)
    assert result.max_error_mm <= 0.1


def test_exact_and_silent_bakes_and_remove_leave_no_raw_result():
    obj = make_face()
    bake_face(obj, mode="EXACT")
    assert record(obj) == {"mode": "EXACT"}
    bake.bake_offsets(obj, np.zeros((1, 10, len(obj.data.vertices), 3), np.float32), model_fps=30,
                      scene=bpy.context.scene)
    assert bake.BAKE_PROP not in obj.data.shape_keys
    bake_face(obj)
    assert bake.remove_baked(obj)
    assert obj.data.shape_keys is None or bake.BAKE_PROP not in obj.data.shape_keys


# --------------------------------------------------------------------------------------
# Re-derivation
# --------------------------------------------------------------------------------------


def test_every_operator_rewrites_the_curves_exactly_from_raw_and_state():
    obj = baked_face()
    expected = {}
    for name, kwargs in OPERATIONS:
        assert run_op(name, **kwargs) == {"FINISHED"}
        state = CleanupSettings.from_dict(record(obj)["cleanup"])
        if name == "smooth_motion":
            assert dict(state.smoothing) == kwargs
        elif name == "set_intensity":
            assert dict(state.intensity) == kwargs
        elif name == "offset_motion":
            assert state.time_offset == 2.5
        elif name == "decimate_keys":
            assert state.decimate_max_error_mm == 0.1
        else:
            assert state == CleanupSettings()
        expected = expected_curves(obj, state)
        assert_curves_equal(tool_fcurves(obj.data.shape_keys), expected)
    # Reset: back to the raw bake, keyframe for keyframe.
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), expected_curves(obj, CleanupSettings()))


def test_order_does_not_matter_and_running_again_changes_nothing():
    obj = baked_face()
    run_op("smooth_motion", jaw=2.0)
    run_op("decimate_keys", max_error_mm=0.05)
    first = tool_fcurves(obj.data.shape_keys)
    run_op("decimate_keys", max_error_mm=0.05)
    run_op("smooth_motion", jaw=2.0)
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), first)

    run_op("reset_cleanup")
    run_op("decimate_keys", max_error_mm=0.05)
    run_op("smooth_motion", jaw=2.0)  # smoothing after decimating: same as before
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), first)


def test_regions_not_given_keep_their_setting():
    obj = baked_face()
    run_op("set_intensity", jaw=0.5)
    run_op("set_intensity", lips=0.8)
    assert dict(CleanupSettings.from_dict(record(obj)["cleanup"]).intensity) == {"jaw": 0.5, "lips": 0.8}
    run_op("set_intensity", jaw=1.0)
    assert dict(CleanupSettings.from_dict(record(obj)["cleanup"]).intensity) == {"lips": 0.8}


def test_intensity_zero_stills_a_region_and_leaves_the_others_moving():
    obj = make_face()
    offsets = face_offsets(obj, 60)
    bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene, start_frame=1, regions=face_regions(obj))
    select(obj)
    basis = mesh_co(obj.data)
    regions = dict(cleanup_math.disjoint_regions(face_regions(obj), len(basis)))
    before = {f: evaluated_co(obj, f) - basis for f in range(4, 48, 3)}
    run_op("set_intensity", jaw=0.0)
    for frame, moved in before.items():
        after = evaluated_co(obj, frame) - basis
        assert np.abs(after[regions["jaw"]]).max() == 0.0, frame
        np.testing.assert_array_equal(after[regions["lips"]], moved[regions["lips"]])
        np.testing.assert_array_equal(after[regions["upper_face"]], moved[regions["upper_face"]])
    assert max(np.abs(moved[regions["jaw"]]).max() for moved in before.values()) > 1e-3  # it did move before


def test_a_higher_intensity_widens_the_slider_range_so_blender_does_not_clamp():
    obj = baked_face()
    run_op("set_intensity", jaw=2.0, lips=2.0)
    key = obj.data.shape_keys
    for name, (_, values) in tool_fcurves(key).items():
        block = key.key_blocks[name]
        assert block.slider_min <= values.min() + 1e-6 and values.max() <= block.slider_max + 1e-6, name


def test_decimation_bound_holds_on_the_baked_fcurves():
    obj = baked_face(n_frames=75)
    run_op("smooth_motion", lips=1.0)
    run_op("offset_motion", frames=0.5)
    full = expected_curves(obj, CleanupSettings.from_dict(record(obj)["cleanup"]))
    assert run_op("decimate_keys", max_error_mm=0.05) == {"FINISHED"}

    key = obj.data.shape_keys
    stored = cleanup.stored_bake(obj)
    shapes = cleanup._key_shapes(key, stored.names).astype(np.float64)  # (K, V, 3)
    curves = {cleanup.bake._key_name(fc.data_path): fc for fc in compat.iter_fcurves(key)}
    kept = sum(len(curves[name].keyframe_points) for name in stored.names)
    assert kept < 0.8 * sum(len(full[name][0]) for name in stored.names)
    times = np.arange(stored.start, stored.start + stored.takes[0].shape[1] + 1, 0.25)
    got = np.array([[curves[name].evaluate(t) for name in stored.names] for t in times])  # (F, K)
    want = np.stack([np.interp(times, *full[name]) for name in stored.names], axis=1)  # (F, K)
    error = vertex_error(np.einsum("fk,kvc->fvc", got, shapes), np.einsum("fk,kvc->fvc", want, shapes))
    assert error <= 0.05 * MM + 1e-9


# --------------------------------------------------------------------------------------
# Undo
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), OPERATIONS, ids=[name for name, _ in OPERATIONS])
def test_each_operator_is_one_undo_step(name, kwargs):
    obj = baked_face()
    run_op("set_intensity", lips=0.7)  # a state to go back to, so reset has something to undo
    bpy.ops.ed.undo_push(message="before")
    before_curves = tool_fcurves(obj.data.shape_keys)
    before_record = record(obj)

    assert run_op(name, undo=True, **kwargs) == {"FINISHED"}
    obj = bpy.data.objects["Face"]
    assert not same_curves(tool_fcurves(obj.data.shape_keys), before_curves) or record(obj) != before_record
    assert bpy.ops.ed.undo() == {"FINISHED"}

    obj = bpy.data.objects["Face"]  # undo reloads the data: old references are stale
    assert record(obj) == before_record
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), before_curves)


# --------------------------------------------------------------------------------------
# The artist's rig
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared_action", [False, True], ids=["own object action", "object in Key's action"])
def test_the_artists_keys_curves_and_drivers_survive_every_operation(shared_action):
    obj = make_rigged_face(shared_action)
    before = artist_state(obj)
    bake.bake_offsets(obj, face_offsets(obj, 40, takes=2), model_fps=30, scene=bpy.context.scene, start_frame=1,
                      regions=face_regions(obj))
    assert obj.data.shape_keys.animation_data.action.name == "ArtistBlinks"
    select(obj)
    object_curves = curves_by_path(obj)
    for name, kwargs in [*OPERATIONS, ("decimate_keys", {"max_error_mm": 0.2}), ("use_take", {"take": 1}),
                         ("push_takes_to_nla", {})]:
        assert run_op(name, **kwargs) == {"FINISHED"}, name
        state = artist_state(obj)
        state["frame_range"] = before["frame_range"]  # the bake may extend the scene end
        assert state == before, name
        assert curves_by_path(obj) == object_curves, name
        assert not [p for p, _ in curves_by_path(obj) if "DS_" in p], name  # nothing in the object's slot


# --------------------------------------------------------------------------------------
# Plain-words errors
# --------------------------------------------------------------------------------------


def test_a_mesh_without_generated_motion_is_explained():
    select(make_face())
    with pytest.raises(RuntimeError, match="has no generated motion to clean up"):
        run_op("smooth_motion", lips=1.0)


def test_an_exact_bake_is_explained():
    baked_face(mode="EXACT")
    with pytest.raises(RuntimeError, match="Exact mode.*Compact"):
        run_op("decimate_keys", max_error_mm=0.1)


def test_a_region_the_mesh_lacks_is_explained():
    obj = make_face()
    bake.bake_offsets(obj, face_offsets(obj, 30), model_fps=30, scene=bpy.context.scene, start_frame=1)
    select(obj)
    assert set(record(obj)["regions"]) == {"face"}  # an unknown mesh: one region
    with pytest.raises(RuntimeError, match="no Jaw region; its regions are Face"):
        run_op("set_intensity", jaw=0.5)
    assert run_op("set_intensity", face=0.5) == {"FINISHED"}


def test_renamed_generated_keys_are_explained_and_nothing_changes():
    obj = baked_face()
    curves = tool_fcurves(obj.data.shape_keys)
    obj.data.shape_keys.key_blocks[1].name = "mine"
    with pytest.raises(RuntimeError, match="renamed or removed"):
        run_op("smooth_motion", lips=1.0)
    assert record(obj)["cleanup"] == CleanupSettings().to_dict()
    assert len(tool_fcurves(obj.data.shape_keys)) <= len(curves)


def test_without_a_mesh_the_operators_say_what_to_select():
    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="Select the mesh"):
        run_op("reset_cleanup")


class ClickedOperator:
    """Stands in for the operator instance Blender makes for a click in the panel: background
    Blender runs execute() for 'INVOKE_DEFAULT', never invoke(). The class's own methods
    run on it; a property counts as given once set."""

    def __init__(self, cls):
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "values", {})
        object.__setattr__(self, "reports", [])
        object.__setattr__(self, "properties", SimpleNamespace(is_property_set=lambda name: name in self.values))

    def __getattr__(self, name):
        if name in self.values:
            return self.values[name]
        attr = getattr(self._cls, name)
        return MethodType(attr, self) if callable(attr) else attr

    def __setattr__(self, name, value):
        self.values[name] = value

    def report(self, level, message):
        self.reports.append(message)


def click(cls) -> set:
    return cls.invoke(ClickedOperator(cls), bpy.context, None)


def test_the_buttons_start_from_the_current_state():
    """A click: Smooth smooths every region not smoothed yet by the default and keeps the
    others; Intensity, Time Offset and Decimate start from the current state."""
    obj = baked_face()
    run_op("set_intensity", jaw=0.0)
    run_op("smooth_motion", lips=3.0)
    run_op("offset_motion", frames=-1.5)
    for cls in (cleanup.DIFFSPEAKER_OT_smooth_motion, cleanup.DIFFSPEAKER_OT_set_intensity,
                cleanup.DIFFSPEAKER_OT_offset_motion, cleanup.DIFFSPEAKER_OT_decimate_keys):
        assert click(cls) == {"FINISHED"}, cls.bl_idname
    state = CleanupSettings.from_dict(record(obj)["cleanup"])
    regions = set(record(obj)["regions"])
    assert dict(state.smoothing) == {r: 3.0 if r == "lips" else cleanup.DEFAULT_SIGMA for r in regions}
    assert dict(state.intensity) == {"jaw": 0.0}
    assert state.time_offset == -1.5
    assert state.decimate_max_error_mm == cleanup.DEFAULT_MAX_ERROR_MM
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), expected_curves(obj, state))
