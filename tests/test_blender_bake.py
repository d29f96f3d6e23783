"""diffspeaker_blender.bake against the real bpy module: shapes, timing against the sound
strip, ownership of the artist's rig, takes, undo and an FBX round trip.

Meshes are a 12 x 12 grid "face" (0.2 m across) whose "mouth" opens at a known audio time.
"""
from __future__ import annotations

import numpy as np
import pytest

from .bpy_env import evaluated_co, import_bpy, key_co, mesh_co, reset_scene
from .conftest import tone, write_wav

bpy = import_bpy()

from diffspeaker_blender import bake, compat  # noqa: E402  (needs bpy imported via bpy_env)
from diffspeaker_blender.core import bake_math, timing  # noqa: E402

GRID = 12
MAX_ERROR_M = 1e-4
EVENT_S = 1.0  # the mouth is widest open at this audio time


@pytest.fixture(autouse=True)
def empty_scene():
    reset_scene()
    yield
    reset_scene()


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def make_face(name: str = "Face") -> bpy.types.Object:
    """A 12 x 12 vertex grid in the XZ plane, 0.2 m across, linked to the scene."""
    xs = np.linspace(-0.1, 0.1, GRID)
    verts = [(float(x), 0.0, float(z)) for z in xs for x in xs]
    faces = [(r * GRID + c, r * GRID + c + 1, (r + 1) * GRID + c + 1, (r + 1) * GRID + c)
             for r in range(GRID - 1) for c in range(GRID - 1)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def mouth_mask(co: np.ndarray) -> np.ndarray:
    return (np.abs(co[:, 0]) < 0.045) & (co[:, 2] > -0.07) & (co[:, 2] < -0.01)


def speech_offsets(obj, n_frames: int, fps: float, takes: int = 1, seed: int = 0) -> np.ndarray:
    """(takes, T, V, 3) float32: the mouth opens (jaw down) around EVENT_S, plus a slow smile
    and a little noise, so the motion has rank > 2 and compact mode has work to do."""
    co = mesh_co(obj.data)
    mouth = mouth_mask(co)
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / fps
    out = np.zeros((takes, n_frames, len(co), 3), dtype=np.float64)
    falloff = np.exp(-((co[:, 0] / 0.04) ** 2))  # (V,) more opening at the centre
    for k in range(takes):
        jaw = 0.01 * (1 + 0.3 * k) * np.exp(-(((t - EVENT_S) / 0.08) ** 2))  # (T,) metres
        smile = 0.003 * np.sin(2 * np.pi * (0.6 + 0.2 * k) * t) ** 2  # (T,)
        out[k, :, :, 2] -= jaw[:, None] * (falloff * mouth)[None]
        out[k, :, :, 0] += smile[:, None] * (co[:, 0] / 0.1 * mouth)[None]
        out[k] += 1e-6 * rng.standard_normal(out[k].shape)
    return out.astype(np.float32)


def vertex_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64), axis=-1).max())


def set_fps(scene, fps: int, base: float = 1.0) -> None:
    scene.render.fps = fps
    scene.render.fps_base = base


def tool_keys(obj) -> list:
    key = obj.data.shape_keys
    return [] if key is None else [b.name for b in key.key_blocks if bake_math.is_tool_key(b.name)]


def curves_by_path(id_data) -> dict:
    """{data_path: [(frame, value), ...]} of the active action's F-curves on id_data."""
    out = {}
    for fc in compat.iter_fcurves(id_data):
        co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
        fc.keyframe_points.foreach_get("co", co)
        out[(fc.data_path, fc.array_index)] = co.tolist()
    return out


def fcurves_of(action) -> list:
    """Every F-curve in action, whether or not it is assigned (4.4+ channelbags, or 4.2)."""
    if hasattr(action, "layers"):
        return [fc for layer in action.layers for strip in layer.strips
                for bag in strip.channelbags for fc in bag.fcurves]
    return list(action.fcurves)


# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scene_fps", [24, 30])
def test_compact_bake_reproduces_offsets_at_scene_rate(scene_fps):
    scene = bpy.context.scene
    set_fps(scene, scene_fps)
    obj = make_face()
    basis = mesh_co(obj.data)
    offsets = speech_offsets(obj, 60, 30)

    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1, mode="COMPACT",
                               max_error_m=MAX_ERROR_M)

    expected = timing.resample_motion(offsets[0], 30, scene_fps)  # (n_scene, V, 3)
    assert result.mode == "COMPACT" and result.keys == len(tool_keys(obj)) >= 2
    assert (result.first_frame, result.last_frame) == (1, len(expected))
    assert result.max_error_mm <= MAX_ERROR_M * 1e3 and not result.capped
    assert result.summary().startswith(f"{result.keys} shape keys, frames 1-{len(expected)}, max error ")
    assert obj.data.shape_keys.reference_key.name == "Basis"
    np.testing.assert_array_equal(key_co(obj.data.shape_keys.reference_key), basis)  # basis untouched
    bound = result.max_error_mm / 1e3 + 1e-6
    for j in range(len(expected)):
        got = evaluated_co(obj, 1 + j) - basis
        assert vertex_error(got, expected[j]) <= bound, f"scene frame {1 + j}"


def test_compact_keys_have_slider_ranges_and_linear_keys():
    obj = make_face()
    result = bake.bake_offsets(obj, speech_offsets(obj, 45, 30), model_fps=30, scene=bpy.context.scene,
                               start_frame=5)
    key = obj.data.shape_keys
    curves = {fc.data_path: fc for fc in compat.iter_fcurves(key)}
    for name in tool_keys(obj):
        block = key.key_blocks[name]
        assert block.slider_min <= 0 and block.slider_max == pytest.approx(1.0)
        fc = curves[f'key_blocks["{name}"].value']
        assert len(fc.keyframe_points) == result.last_frame - result.first_frame + 1
        assert fc.keyframe_points[0].co[0] == 5
        assert {kp.interpolation for kp in fc.keyframe_points} == {"LINEAR"}
    assert key.animation_data.action.name == "DS_Face"


def test_exact_bake_shows_one_key_per_frame():
    scene = bpy.context.scene
    set_fps(scene, 24)
    obj = make_face()
    basis = mesh_co(obj.data)
    offsets = speech_offsets(obj, 40, 30, takes=2)

    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1, mode="EXACT")

    names = tool_keys(obj)
    assert names == [bake_math.exact_key_name(i) for i in range(40)] and result.keys == 40
    assert result.takes == 1 and result.takes_given == 2
    assert "first of 2 takes only" in result.summary()
    n_scene = timing.resampled_length(40, 30, 24)
    key = obj.data.shape_keys
    for j in range(n_scene):
        got = evaluated_co(obj, 1 + j) - basis
        values = np.array([key.key_blocks[name].value for name in names])
        on = np.flatnonzero(values != 0)
        nearest = int(np.floor(j * 30 / 24 + 0.5))
        assert on.tolist() == [nearest] and values[nearest] == 1.0, f"scene frame {1 + j}"
        assert vertex_error(got, offsets[0, nearest]) <= 1e-6
    assert {kp.interpolation for fc in compat.iter_fcurves(key) for kp in fc.keyframe_points} == {"CONSTANT"}
    # Before and after the clip every tool key is back at 0: the rest pose.
    for frame in (0, n_scene + 1):
        assert vertex_error(evaluated_co(obj, frame), basis) <= 1e-6


# --------------------------------------------------------------------------------------
# Timing against the sound strip
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps", "fps_base", "model_fps"),
    [(24, 1.0, 30), (30, 1.0, 30), (60, 1.0, 30), (24, 1.001, 30), (24, 1.0, 25), (30, 1.0, 25), (60, 1.0, 25),
     (24, 1.001, 25)],
    ids=lambda v: str(v),
)
def test_mouth_opens_on_the_frame_the_audio_plays(tmp_path, fps, fps_base, model_fps):
    """A motion event at audio time 1.0 s lands on strip start + 1.0 s x scene fps."""
    scene = bpy.context.scene
    set_fps(scene, fps, fps_base)
    strip = compat.new_sound_strip(scene, "speech", str(write_wav(tmp_path / "speech.wav", tone(2.5))), frame_start=10)
    assert compat.sound_strips(scene) and strip.frame_start == 10
    obj = make_face()
    basis = mesh_co(obj.data)
    mouth = mouth_mask(basis)
    offsets = speech_offsets(obj, int(2.5 * model_fps), model_fps)

    result = bake.bake_offsets(obj, offsets, model_fps=model_fps, scene=scene, start_frame=strip.frame_start)

    frames = np.arange(int(result.first_frame), int(result.last_frame) + 1)
    opening = np.array([-(evaluated_co(obj, f) - basis)[mouth, 2].mean() for f in frames])
    peak = int(np.argmax(opening))
    # Sub-frame peak from a parabola through the top three samples.
    a, b, c = opening[peak - 1:peak + 2]
    refined = frames[peak] + 0.5 * (a - c) / (a - 2 * b + c)
    scene_rate = fps / fps_base
    expected = timing.frame_at_time(EVENT_S, strip.frame_start, scene_rate)
    assert frames[peak] == 10 + round(EVENT_S * scene_rate)
    assert abs(refined - expected) <= 0.5, (refined, expected)


# --------------------------------------------------------------------------------------
# Ownership of the artist's rig
# --------------------------------------------------------------------------------------


def make_rigged_face(shared_action: bool = False) -> bpy.types.Object:
    """Artist's rig: Basis, blink_L (value 0.3, driven, keyed in the artist's action),
    smile (muted, custom slider range), plus location keys on the object: in an action of
    its own, or (shared_action, what keying does by default in 4.4+) in another slot of
    the Key's action."""
    obj = make_face()
    obj.shape_key_add(name="Basis", from_mix=False)
    blink = obj.shape_key_add(name="blink_L", from_mix=False)
    co = key_co(blink)
    co[co[:, 2] > 0.05, 2] -= 0.01
    blink.points.foreach_set("co", co.ravel())
    blink.value = 0.3
    smile = obj.shape_key_add(name="smile", from_mix=False)
    co = key_co(smile)
    co[:, 0] *= 1.05
    smile.points.foreach_set("co", co.ravel())
    smile.mute = True
    smile.slider_max = 2.0
    smile.value = 0.5
    obj.active_shape_key_index = 2  # smile
    key = obj.data.shape_keys
    driver = key.driver_add('key_blocks["blink_L"].value').driver
    driver.type = "SCRIPTED"
    driver.expression = "0.3"
    key.animation_data.action = bpy.data.actions.new("ArtistBlinks")
    for frame, value in ((1, 0.0), (8, 1.0), (12, 0.0)):
        blink.value = value
        blink.keyframe_insert("value", frame=frame)
    blink.value = 0.3
    if not shared_action:
        obj.animation_data_create().action = bpy.data.actions.new("ArtistMove")
    for frame, x in ((1, 0.0), (20, 0.5)):
        obj.location.x = x
        obj.keyframe_insert("location", frame=frame)
    if shared_action and obj.animation_data.action != key.animation_data.action:
        pytest.skip("this Blender keeps object and shape-key keys in separate actions")
    return obj


def artist_state(obj) -> dict:
    key = obj.data.shape_keys
    blocks = {
        b.name: (round(b.value, 6), b.mute, b.slider_min, b.slider_max, b.relative_key.name, key_co(b).tobytes())
        for b in key.key_blocks if not bake_math.is_tool_key(b.name)
    }
    drivers = [(d.data_path, d.driver.expression, d.mute) for d in key.animation_data.drivers]
    key_curves = {p: v for p, v in curves_by_path(key).items() if "DS_" not in p[0]}
    return {
        "blocks": blocks,
        "order": [b.name for b in key.key_blocks if not bake_math.is_tool_key(b.name)],
        "active": obj.active_shape_key.name,
        "drivers": drivers,
        "key_action": key.animation_data.action.name,
        "key_curves": key_curves,
        "object_action": obj.animation_data.action.name,
        "object_curves": curves_by_path(obj),
        "mesh": mesh_co(obj.data).tobytes(),
        "frame_range": (bpy.context.scene.frame_start, bpy.context.scene.frame_end),
    }


def tool_curves(id_data) -> list:
    return sorted(fc.data_path for fc in compat.iter_fcurves(id_data) if "DS_" in fc.data_path)


@pytest.mark.parametrize("shared_action", [False, True], ids=["own object action", "object in Key's action"])
def test_bake_rebake_and_remove_leave_the_artists_rig_alone(shared_action):
    scene = bpy.context.scene
    obj = make_rigged_face(shared_action)
    before = artist_state(obj)

    first = bake.bake_offsets(obj, speech_offsets(obj, 30, 30, takes=2), model_fps=30, scene=scene, start_frame=1)
    assert artist_state(obj) == before
    assert all(name.startswith("DS_") for name in tool_keys(obj))
    assert len(tool_keys(obj)) == first.keys
    key = obj.data.shape_keys
    assert first.action == "ArtistBlinks"  # take 0 joined the artist's action
    assert tool_curves(key) == sorted(f'key_blocks["{n}"].value' for n in tool_keys(obj))
    assert tool_curves(obj) == []  # nothing landed in the object's slot of a shared action
    assert "DS_Face_take1" in bpy.data.actions

    # Re-bake with other motion: the tool's keys are replaced, never added to.
    second = bake.bake_offsets(obj, 2 * speech_offsets(obj, 30, 30, seed=1), model_fps=30, scene=scene,
                               start_frame=1)
    assert artist_state(obj) == before
    assert len(tool_keys(obj)) == second.keys
    assert len(key.key_blocks) == 3 + second.keys
    assert not any("." in name for name in tool_keys(obj))
    assert tool_curves(key) == sorted(f'key_blocks["{n}"].value' for n in tool_keys(obj))
    assert "DS_Face_take1" not in bpy.data.actions  # the single take left no stale take actions

    assert bake.remove_baked(obj) == second.keys
    assert artist_state(obj) == before
    assert tool_keys(obj) == [] and tool_curves(obj.data.shape_keys) == []
    assert not [a.name for a in bpy.data.actions if a.name.startswith("DS_")]
    assert bake.remove_baked(obj) == 0


def test_no_shape_keys_before_means_none_after_remove():
    obj = make_face()
    mesh_before = mesh_co(obj.data)
    result = bake.bake_offsets(obj, speech_offsets(obj, 20, 30), model_fps=30, scene=bpy.context.scene)
    key = obj.data.shape_keys
    assert key.reference_key.name == "Basis" and key.get(bake.CREATED_BASIS_PROP)
    assert result.action == "DS_Face"

    assert bake.remove_baked(obj) == result.keys
    assert obj.data.shape_keys is None
    assert "DS_Face" not in bpy.data.actions
    np.testing.assert_array_equal(mesh_co(obj.data), mesh_before)


def test_artist_keys_added_after_the_bake_are_kept():
    obj = make_face()
    bake.bake_offsets(obj, speech_offsets(obj, 20, 30), model_fps=30, scene=bpy.context.scene)
    obj.shape_key_add(name="jawOpen", from_mix=False)
    bake.remove_baked(obj)
    assert [b.name for b in obj.data.shape_keys.key_blocks] == ["Basis", "jawOpen"]


def test_motionless_takes_make_no_keys_and_no_actions():
    obj = make_face()
    offsets = np.zeros((3, 20, GRID * GRID, 3), dtype=np.float32)
    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene)
    assert result.keys == 0 and result.max_error_mm == 0 and result.action == ""
    assert result.summary().startswith("0 shape keys, frames 1-")
    assert len(bpy.data.actions) == 0
    assert bake.remove_baked(obj) == 0 and obj.data.shape_keys is None


def test_frame_end_is_extended_never_shrunk():
    scene = bpy.context.scene
    set_fps(scene, 30)
    scene.frame_start, scene.frame_end = 1, 250
    obj = make_face()
    short = bake.bake_offsets(obj, speech_offsets(obj, 30, 30), model_fps=30, scene=scene, start_frame=1)
    assert (scene.frame_start, scene.frame_end) == (1, 250) and not short.frame_end_extended
    assert "extended" not in short.summary()

    scene.frame_end = 20
    longer = bake.bake_offsets(obj, speech_offsets(obj, 30, 30), model_fps=30, scene=scene, start_frame=5)
    assert longer.frame_end_extended and (scene.frame_start, scene.frame_end) == (1, 34)
    assert "scene end extended to frame 34" in longer.summary()


# --------------------------------------------------------------------------------------
# Takes
# --------------------------------------------------------------------------------------


def test_extra_takes_get_their_own_actions():
    scene = bpy.context.scene
    set_fps(scene, 30)
    obj = make_face()
    basis = mesh_co(obj.data)
    offsets = speech_offsets(obj, 40, 30, takes=3)
    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1)

    key = obj.data.shape_keys
    assert result.take_actions == ("DS_Face_take1", "DS_Face_take2") and result.takes == 3
    assert "3 takes" in result.summary()
    paths = tool_curves(key)
    assert len(paths) == result.keys
    for k, name in enumerate(result.take_actions, start=1):
        action = bpy.data.actions[name]
        assert action.use_fake_user
        assert sorted(fc.data_path for fc in fcurves_of(action)) == paths
        # Switching to the take plays that take's motion.
        key.animation_data.action = action
        for frame in (1, 20, 31, 40):
            assert vertex_error(evaluated_co(obj, frame) - basis, offsets[k, frame - 1]) <= 1e-4 + 1e-6
    key.animation_data.action = bpy.data.actions["DS_Face"]
    assert vertex_error(evaluated_co(obj, 31) - basis, offsets[0, 30]) <= 1e-4 + 1e-6


def test_rebake_while_a_take_is_active_reuses_the_take_actions():
    scene = bpy.context.scene
    obj = make_face()
    offsets = speech_offsets(obj, 20, 30, takes=3)
    bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1)
    key = obj.data.shape_keys
    key.animation_data.action = bpy.data.actions["DS_Face_take2"]  # the artist tries take 3
    assert bpy.data.actions["DS_Face"].use_fake_user  # so take 1 is not lost on save meanwhile

    obj.name = "Head"
    result = bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1)
    assert key.animation_data.action.name == "DS_Head" == result.action
    assert sorted(a.name for a in bpy.data.actions) == ["DS_Head", "DS_Head_take1", "DS_Head_take2"]
    assert bake.remove_baked(obj) == result.keys
    assert obj.data.shape_keys is None and len(bpy.data.actions) == 0


# --------------------------------------------------------------------------------------
# Undo
# --------------------------------------------------------------------------------------


def test_undo_restores_the_state_before_the_bake():
    obj = make_rigged_face()
    before = artist_state(obj)
    assert bpy.ops.ed.undo_push(message="before") == {"FINISHED"}
    bake.bake_offsets(obj, speech_offsets(obj, 20, 30), model_fps=30, scene=bpy.context.scene, start_frame=1)
    assert tool_keys(obj)
    assert bpy.ops.ed.undo_push(message="bake") == {"FINISHED"}
    assert bpy.ops.ed.undo() == {"FINISHED"}

    obj = bpy.data.objects["Face"]  # undo reloads the data: old references are stale
    assert tool_keys(obj) == []
    assert tool_curves(obj.data.shape_keys) == []
    assert artist_state(obj) == before


# --------------------------------------------------------------------------------------
# FBX round trip
# --------------------------------------------------------------------------------------


def test_fbx_round_trip_keeps_keys_shapes_and_animation(tmp_path):
    from diffspeaker_blender.export import export_fbx

    scene = bpy.context.scene
    set_fps(scene, 30)
    obj = make_face()
    bake.bake_offsets(obj, speech_offsets(obj, 45, 30), model_fps=30, scene=scene, start_frame=1)
    key = obj.data.shape_keys
    basis = key_co(key.reference_key)
    shapes = {n: key_co(key.key_blocks[n]) - basis for n in tool_keys(obj)}
    frames = range(scene.frame_start, scene.frame_end + 1)
    values = {fc.data_path: [fc.evaluate(f) for f in frames] for fc in compat.iter_fcurves(key)}
    assert len(values) == len(shapes) >= 2
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    path = str(tmp_path / "face.fbx")
    assert export_fbx(path, use_selection=True) == {"FINISHED"}

    reset_scene()
    assert bpy.ops.import_scene.fbx(filepath=path, anim_offset=0.0) == {"FINISHED"}
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    assert len(meshes) == 1
    key = meshes[0].data.shape_keys
    assert sorted(b.name for b in key.key_blocks if bake_math.is_tool_key(b.name)) == sorted(shapes)
    basis = key_co(key.reference_key)
    for name, shape in shapes.items():
        assert vertex_error(key_co(key.key_blocks[name]) - basis, shape) <= 1e-5, name
    imported = {fc.data_path: fc for fc in compat.iter_fcurves(key)}
    assert sorted(imported) == sorted(values)
    for data_path, expected in values.items():
        got = [imported[data_path].evaluate(f) for f in frames]
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=data_path)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_wrong_vertex_count_is_refused_before_anything_changes():
    obj = make_face()
    wrong = np.zeros((1, 10, GRID * GRID + 1, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="vertices"):
        bake.bake_offsets(obj, wrong, model_fps=30, scene=bpy.context.scene)
    assert obj.data.shape_keys is None


def test_non_mesh_is_refused():
    empty = bpy.data.objects.new("Empty", None)
    bpy.context.scene.collection.objects.link(empty)
    with pytest.raises(ValueError, match="mesh"):
        bake.bake_offsets(empty, np.zeros((1, 5, 4, 3), np.float32), model_fps=30, scene=bpy.context.scene)
    with pytest.raises(ValueError, match="mesh"):
        bake.remove_baked(empty)


def test_bad_mode_and_non_finite_offsets_are_refused():
    obj = make_face()
    offsets = speech_offsets(obj, 10, 30)
    with pytest.raises(ValueError, match="mode"):
        bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene, mode="FAST")
    offsets[0, 3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene)
    assert obj.data.shape_keys is None
