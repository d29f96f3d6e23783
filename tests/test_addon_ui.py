"""The interactive paths that background Blender never runs by itself: the modal
Generate loop (worker thread + timer events, progress, Esc/Cancel) and the panel's
draw code. Events and the layout are stand-ins; the operator code is the real one."""
from __future__ import annotations

import time
from types import MethodType, SimpleNamespace

import pytest

from .bpy_env import import_bpy
from .test_addon_blender import files, grid_mesh, scene, tool_keys  # noqa: F401  (fixtures)

bpy = import_bpy()

from diffspeaker_blender.core.job import GenerationJob  # noqa: E402
from diffspeaker_blender.operators import DIFFSPEAKER_OT_generate_animation as Generate  # noqa: E402
from diffspeaker_blender.operators import prepare  # noqa: E402
from diffspeaker_blender.panels import DIFFSPEAKER_PT_cleanup, DIFFSPEAKER_PT_main  # noqa: E402


def modal_operator(context):
    """What `invoke` sets up in the UI: a started worker, a timer and the operator state."""
    request, target = prepare(context)
    op = SimpleNamespace(_job=GenerationJob(request).start(), _target=target, reports=[])
    op._timer = context.window_manager.event_timer_add(0.1, window=context.window)
    op.report = lambda level, message: op.reports.append((set(level), message))
    op._finish, op._fail = MethodType(Generate._finish, op), MethodType(Generate._fail, op)
    context.scene.diffspeaker.job.running = True
    return op


def run_modal(op, context, events=("TIMER",), timeout=60.0):
    """Feed events until the operator leaves the modal loop; returns (result, progress seen)."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind in events:
            result = Generate.modal(op, context, SimpleNamespace(type=kind))
            seen.append(context.scene.diffspeaker.job.progress)
            if result != {"PASS_THROUGH"}:
                return result, seen
        time.sleep(0.02)
    raise AssertionError("the modal loop did not finish")


def test_modal_generate_reports_progress_and_bakes_on_the_main_thread(scene):  # noqa: F811
    obj = grid_mesh("Face")
    scene.diffspeaker.steps = 8
    result, seen = run_modal(modal_operator(bpy.context), bpy.context)
    assert result == {"FINISHED"}
    assert tool_keys(obj)
    assert seen == sorted(seen) and seen[-1] == 1.0  # the bar only moves forward
    job = scene.diffspeaker.job
    assert not job.running and job.status.startswith("Done")


def test_escape_cancels_and_leaves_the_mesh_untouched(scene):  # noqa: F811
    obj = grid_mesh("Face")
    scene.diffspeaker.steps = 200
    op = modal_operator(bpy.context)
    result, _ = run_modal(op, bpy.context, events=("ESC", "TIMER"))
    assert result == {"CANCELLED"}
    assert tool_keys(obj) == []
    assert scene.diffspeaker.job.status == "Cancelled." and not scene.diffspeaker.job.running
    assert op.reports == [({"WARNING"}, "Cancelled.")]


def test_the_cancel_button_stops_the_job(scene):  # noqa: F811
    obj = grid_mesh("Face")
    scene.diffspeaker.steps = 200
    op = modal_operator(bpy.context)
    assert bpy.ops.diffspeaker.cancel_job() == {"FINISHED"}
    result, _ = run_modal(op, bpy.context)
    assert result == {"CANCELLED"} and tool_keys(obj) == []


def test_variety_is_the_models_own_unless_the_artist_sets_it(scene):  # noqa: F811
    grid_mesh("Face")
    settings = scene.diffspeaker
    assert settings.use_model_guidance and prepare(bpy.context)[0].guidance is None  # the model's scale
    settings.use_model_guidance, settings.guidance = False, 1.5
    assert prepare(bpy.context)[0].guidance == 1.5


def test_lip_closure_is_on_unless_the_artist_turns_it_off(scene):  # noqa: F811
    grid_mesh("Face")
    assert prepare(bpy.context)[0].close_lips
    scene.diffspeaker.close_lips = False
    assert not prepare(bpy.context)[0].close_lips


class RecordingLayout:
    """Accepts every UILayout call the panel makes and records the labels and props."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if name in ("prop", "label", "operator", "prop_search", "progress"):
                self.log.append((name, kwargs.get("text") or (args[1] if len(args) > 1 else args[0] if args else "")))
            return RecordingLayout(self.log)

        return call

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)


@pytest.mark.parametrize("state", ["strip", "file", "running", "no mesh"])
def test_the_panel_draws_in_every_state(scene, state):  # noqa: F811
    if state != "no mesh":
        grid_mesh("Face")
    else:
        bpy.context.view_layer.objects.active = None
    settings = scene.diffspeaker
    if state == "file":
        settings.audio_source = "FILE"
    if state == "running":
        settings.job.running, settings.job.status, settings.job.progress = True, "Sampling step 3 of 8", 0.4
    log = []
    DIFFSPEAKER_PT_main.draw(SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    drawn = [text for _, text in log]
    if state == "running":
        assert "diffspeaker.cancel_job" in drawn and "diffspeaker.generate_animation" not in drawn
    else:
        assert "diffspeaker.generate_animation" in drawn
    if state == "no mesh":
        assert "Select the mesh to animate (make it the active object)" in drawn
    assert "close_lips" in drawn
    assert ("sound_strip" in drawn) == (state != "file")
    assert ("audio_file" in drawn) == (state == "file")


@pytest.mark.parametrize("source", ["BUILTIN", "CHECKPOINT", "OFFICIAL"])
def test_the_preferences_draw_for_every_model_source(scene, source):  # noqa: F811
    from diffspeaker_blender import manifest_version
    from diffspeaker_blender.preferences import DIFFSPEAKER_AP_preferences

    log = []
    prefs = SimpleNamespace(layout=RecordingLayout(log), model_source=source)
    DIFFSPEAKER_AP_preferences.draw(prefs, bpy.context)
    drawn = [text for _, text in log]
    assert f"DiffSpeaker Lip Sync {manifest_version()}" in drawn
    assert ("model_path" in drawn) == (source == "CHECKPOINT")
    assert ("official_path" in drawn) == (source == "OFFICIAL")


@pytest.mark.parametrize("state", ["no mesh", "not generated", "exact", "compact", "cleaned up"])
def test_the_cleanup_panel_draws_in_every_state(scene, state):  # noqa: F811
    import numpy as np

    from diffspeaker_blender import bake

    if state == "no mesh":
        bpy.context.view_layer.objects.active = None
    else:
        obj = grid_mesh("Face")
        offsets = np.random.default_rng(0).standard_normal((2, 12, 20, 3)).astype(np.float32) * 1e-3
        if state != "not generated":
            bake.bake_offsets(obj, offsets, model_fps=30, scene=scene, start_frame=1,
                              mode="EXACT" if state == "exact" else "COMPACT")
        if state == "cleaned up":
            bpy.ops.diffspeaker.smooth_motion(face=2.0)
            bpy.ops.diffspeaker.decimate_keys(max_error_mm=0.2)
            bpy.ops.diffspeaker.use_take(take=1)
    log = []
    DIFFSPEAKER_PT_cleanup.draw(SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    drawn = [text for _, text in log]
    operators = [text for kind, text in log if kind == "operator"]
    if state in ("compact", "cleaned up"):
        assert {"diffspeaker.smooth_motion", "diffspeaker.set_intensity", "diffspeaker.offset_motion",
                "diffspeaker.decimate_keys", "diffspeaker.reset_cleanup", "diffspeaker.push_takes_to_nla"} <= set(drawn)
        assert [text for text in operators if text in ("0", "1")] == ["0", "1"]  # the take switcher
        smoothing = 2 if state == "cleaned up" else 0
        assert f"Face: smoothing {smoothing:g}, intensity 1" in drawn
        assert ("Keys decimated within 0.2 mm" in drawn) == (state == "cleaned up")
    else:
        assert not [text for text in drawn if text.startswith("diffspeaker.")]
        expected = {"no mesh": "Select the mesh", "not generated": "has no generated motion",
                    "exact": "Exact mode"}[state]
        assert any(expected in text for text in drawn), drawn
