"""Takes inside Blender (bpy 5.0 module): switching the active take rewrites only the
tool's curves of the active action (the artist's stay), alternates keep their own
actions for the NLA editor, and all of it is one undo step and survives saving."""
from __future__ import annotations

import numpy as np
import pytest

from .bpy_env import evaluated_co, import_bpy, mesh_co, select
from .test_blender_bake import artist_state, make_face, make_rigged_face, vertex_error
from .test_cleanup_blender import (  # noqa: F401  (addon: the autouse fixture)
    addon,
    assert_curves_equal,
    expected_curves,
    face_offsets,
    face_regions,
    record,
    run_op,
    tool_fcurves,
)

bpy = import_bpy()

from diffspeaker_blender import bake, cleanup  # noqa: E402
from diffspeaker_blender.core.cleanup import CleanupSettings  # noqa: E402

TAKES = 3
BOUND_M = 1e-4 + 1e-6  # the bake's max error, plus float32 evaluation


def bake_takes(obj, n_frames: int = 48):
    offsets = face_offsets(obj, n_frames, takes=TAKES)
    bpy.context.scene.render.fps = 30  # scene frame f shows model frame f - 1
    bake.bake_offsets(obj, offsets, model_fps=30, scene=bpy.context.scene, start_frame=1, regions=face_regions(obj))
    select(obj)
    return offsets


def assert_shows(obj, offsets_of_take: np.ndarray, frames=(5, 17, 30, 44)) -> None:
    basis = mesh_co(obj.data)
    for frame in frames:
        assert vertex_error(evaluated_co(obj, frame) - basis, offsets_of_take[frame - 1]) <= BOUND_M, frame


def test_switching_takes_shows_each_take_and_keeps_the_alternates_in_their_actions():
    obj = make_face()
    offsets = bake_takes(obj)
    key = obj.data.shape_keys
    main = key.animation_data.action
    assert main.name == "DS_Face"
    take_curves = {k: tool_fcurves(key, bpy.data.actions[f"DS_Face_take{k}"]) for k in (1, 2)}

    for take in (2, 1, 0):
        assert run_op("use_take", take=take) == {"FINISHED"}
        assert key.animation_data.action == main  # the active action stays; its tool curves change
        assert record(obj)["active_take"] == take
        assert_shows(obj, offsets[take])
        assert_curves_equal(tool_fcurves(key), expected_curves(obj, CleanupSettings(), take))
        for k in (1, 2):  # the alternates are untouched
            assert_curves_equal(tool_fcurves(key, bpy.data.actions[f"DS_Face_take{k}"]), take_curves[k])


def test_switching_keeps_the_artists_curves_in_a_shared_action():
    obj = make_rigged_face()
    before = artist_state(obj)
    bake_takes(obj)
    key = obj.data.shape_keys
    assert key.animation_data.action.name == "ArtistBlinks"
    for take in (2, 0):
        run_op("use_take", take=take)
        state = artist_state(obj)  # the blink keys, driver and other keys, untouched
        state["frame_range"] = before["frame_range"]
        assert state == before
        assert key.animation_data.action.name == "ArtistBlinks"
        assert_curves_equal(tool_fcurves(key), expected_curves(obj, CleanupSettings(), take))


def test_the_cleanup_state_applies_to_every_take():
    obj = make_face()
    bake_takes(obj)
    key = obj.data.shape_keys
    run_op("smooth_motion", jaw=1.5)
    run_op("decimate_keys", max_error_mm=0.1)
    settings = CleanupSettings.from_dict(record(obj)["cleanup"])
    for k in (1, 2):  # each alternate's own action is cleaned up too, from its own raw values
        assert_curves_equal(tool_fcurves(key, bpy.data.actions[f"DS_Face_take{k}"]), expected_curves(obj, settings, k))
    run_op("use_take", take=1)
    assert_curves_equal(tool_fcurves(key), expected_curves(obj, settings, 1))
    run_op("reset_cleanup")  # keeps the chosen take
    assert record(obj)["active_take"] == 1
    assert_curves_equal(tool_fcurves(key), expected_curves(obj, CleanupSettings(), 1))


def test_switching_after_assigning_a_take_action_by_hand_plays_the_chosen_take():
    obj = make_face()
    offsets = bake_takes(obj)
    anim = obj.data.shape_keys.animation_data
    anim.action = bpy.data.actions["DS_Face_take2"]  # the artist tried take 2 the manual way
    assert_shows(obj, offsets[2], frames=(17,))
    run_op("use_take", take=1)
    assert anim.action.name == "DS_Face"
    assert_shows(obj, offsets[1], frames=(17, 30))


def test_cleanup_reaches_the_bake_action_while_it_is_unassigned():
    obj = make_face()
    bake_takes(obj)
    key = obj.data.shape_keys
    main = key.animation_data.action
    key.animation_data.action = None  # e.g. pushed down to the NLA by the artist
    run_op("smooth_motion", lips=2.0)
    assert key.animation_data.action is None
    settings = CleanupSettings.from_dict(record(obj)["cleanup"])
    assert_curves_equal(tool_fcurves(key, main), expected_curves(obj, settings, 0))


def test_a_take_that_does_not_exist_is_explained():
    obj = make_face()
    bake_takes(obj)
    with pytest.raises(RuntimeError, match="has 3 take\\(s\\), numbered 0 to 2; there is no take 5"):
        run_op("use_take", take=5)
    assert record(obj)["active_take"] == 0


def test_switching_is_one_undo_step():
    obj = make_face()
    bake_takes(obj)
    bpy.ops.ed.undo_push(message="before")
    before = tool_fcurves(obj.data.shape_keys)
    assert run_op("use_take", undo=True, take=2) == {"FINISHED"}
    assert record(bpy.data.objects["Face"])["active_take"] == 2
    assert bpy.ops.ed.undo() == {"FINISHED"}
    obj = bpy.data.objects["Face"]
    assert record(obj)["active_take"] == 0
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), before)


def test_a_rebake_starts_again_from_take_0_with_no_cleanup():
    obj = make_face()
    bake_takes(obj)
    run_op("use_take", take=2)
    run_op("set_intensity", lips=0.5)
    offsets = bake_takes(obj)
    data = record(obj)
    assert data["active_take"] == 0 and CleanupSettings.from_dict(data["cleanup"]) == CleanupSettings()
    assert_shows(obj, offsets[0], frames=(17, 30))


# --------------------------------------------------------------------------------------
# NLA
# --------------------------------------------------------------------------------------


def test_a_take_action_on_an_nla_strip_plays_that_take():
    obj = make_face()
    offsets = bake_takes(obj)
    key = obj.data.shape_keys
    anim = key.animation_data
    take = bpy.data.actions["DS_Face_take2"]
    track = anim.nla_tracks.new()
    strip = track.strips.new("take 2", 1, take)
    if hasattr(strip, "action_slot"):  # 4.4+: the strip plays the Key's slot of the take action
        assert strip.action_slot is not None and strip.action_slot.identifier.startswith("KE")
    main = anim.action
    anim.action = None  # the strip alone drives the keys
    assert_shows(obj, offsets[2], frames=(9, 30))
    anim.action = main
    assert_shows(obj, offsets[0], frames=(9, 30))  # the active action replaces the strip again


def test_push_takes_to_nla_adds_one_muted_track_per_alternate_once():
    obj = make_face()
    offsets = bake_takes(obj)
    anim = obj.data.shape_keys.animation_data
    assert run_op("push_takes_to_nla") == {"FINISHED"}
    assert [t.name for t in anim.nla_tracks] == ["DS take 1", "DS take 2"]
    assert all(t.mute for t in anim.nla_tracks)
    assert [t.strips[0].action.name for t in anim.nla_tracks] == ["DS_Face_take1", "DS_Face_take2"]
    assert run_op("push_takes_to_nla") == {"FINISHED"}  # nothing new the second time
    assert len(anim.nla_tracks) == 2
    assert_shows(obj, offsets[0], frames=(9, 30))  # muted: the active take still plays

    anim.nla_tracks["DS take 1"].mute = False
    anim.action = None
    assert_shows(obj, offsets[1], frames=(9, 30))


def test_takes_and_their_raw_values_survive_saving(tmp_path):
    obj = make_face()
    bake_takes(obj)
    run_op("use_take", take=1)
    run_op("decimate_keys", max_error_mm=0.1)
    saved = record(obj)
    curves = tool_fcurves(obj.data.shape_keys)
    path = str(tmp_path / "takes.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.wm.open_mainfile(filepath=path)

    obj = bpy.data.objects["Face"]
    assert record(obj) == saved
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), curves)
    assert {"DS_Face", "DS_Face_take1", "DS_Face_take2"} <= set(bpy.data.actions.keys())
    select(obj)
    assert run_op("reset_cleanup") == {"FINISHED"}  # the cleanup still works from the saved raw values
    assert_curves_equal(tool_fcurves(obj.data.shape_keys), expected_curves(obj, CleanupSettings(), 1))
    assert isinstance(cleanup.stored_bake(obj).takes[0], np.ndarray)
