"""Specification of diffspeaker_blender.core.timing: model frames onto the Blender timeline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffspeaker_blender.core.timing import (
    frame_at_time,
    resample_motion,
    resampled_length,
    scene_fps,
    scene_frames,
)

# (render.fps, render.fps_base) as Blender stores them.
SCENE_RATES = [
    pytest.param(24, 1.0, id="24fps"),
    pytest.param(24, 1.001, id="23.976fps"),
    pytest.param(25, 1.0, id="25fps"),
    pytest.param(30, 1.001, id="29.97fps"),
    pytest.param(30, 1.0, id="30fps"),
    pytest.param(60, 1.0, id="60fps"),
]
MODEL_RATES = [pytest.param(30, id="model30fps"), pytest.param(25, id="model25fps")]
# Sound strip starts: Blender's default first frame, and a strip moved to a late, fractional frame.
STRIP_STARTS = [pytest.param(1.0, id="strip@1"), pytest.param(137.5, id="strip@137.5")]
# On both model grids (multiples of 0.2 s), so a single-frame pulse is exactly at the event.
EVENT_TIMES = [pytest.param(1.0, id="t=1.0s"), pytest.param(2.2, id="t=2.2s")]

JAW = 2  # the "jaw" vertex of the synthetic mouth (4 vertices)


def mouth(model_fps: int, seconds: float, event_s: float, shape: str) -> np.ndarray:
    """Mouth-opening offsets (T, 4, 3): the jaw vertex drops at event_s, everything else rests."""
    n = round(seconds * model_fps)
    t = np.arange(n) / model_fps
    if shape == "pulse":  # one model frame open, exactly at the event
        opening = (np.abs(t - event_s) < 0.5 / model_fps).astype(np.float64)
    else:  # "gaussian": a smooth opening centred between model frames
        opening = np.exp(-0.5 * ((t - event_s) / 0.04) ** 2)
    values = np.zeros((n, 4, 3), dtype=np.float32)
    values[:, JAW, 1] = -0.01 * opening  # 1 cm down
    return values


# --------------------------------------------------------------------------------------
# Frame rates
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fps, base, expected",
    [
        pytest.param(24, 1.0, 24.0, id="24fps"),
        pytest.param(24, 1.001, 24000 / 1001, id="23.976fps"),
        pytest.param(30, 1.001, 30000 / 1001, id="29.97fps"),
        pytest.param(60, 1.0, 60.0, id="60fps"),
        pytest.param(50, 2.0, 25.0, id="50/2"),
    ],
)
def test_scene_fps(fps, base, expected):
    assert scene_fps(fps, base) == pytest.approx(expected, rel=1e-15)


@pytest.mark.parametrize(
    "fps, base, message",
    [
        pytest.param(0, 1.0, "positive integer", id="fps=0"),
        pytest.param(-24, 1.0, "positive integer", id="fps<0"),
        pytest.param(24.5, 1.0, "positive integer", id="fractional-fps"),
        pytest.param(24, 0.0, "fps_base", id="base=0"),
        pytest.param(24, -1.0, "fps_base", id="base<0"),
        pytest.param(24, float("nan"), "fps_base", id="base=nan"),
    ],
)
def test_scene_fps_rejects_bad_rates(fps, base, message):
    with pytest.raises(ValueError, match=message):
        scene_fps(fps, base)


# --------------------------------------------------------------------------------------
# Where an audio moment lands
# --------------------------------------------------------------------------------------


def test_first_audio_sample_plays_at_strip_start():
    assert frame_at_time(0.0, 101.0, 24.0) == 101.0
    assert frame_at_time(1.5, 1.0, 24.0) == 37.0
    np.testing.assert_allclose(frame_at_time(np.array([0.0, 0.5, 2.0]), 10.0, 30.0), [10.0, 25.0, 70.0])


def test_scene_frames_count_up_from_the_start():
    np.testing.assert_array_equal(scene_frames(4, 137.5), [137.5, 138.5, 139.5, 140.5])
    assert scene_frames(0, 1.0).shape == (0,)


@pytest.mark.parametrize("strip_start", STRIP_STARTS)
@pytest.mark.parametrize("event_s", EVENT_TIMES)
@pytest.mark.parametrize("model_fps", MODEL_RATES)
@pytest.mark.parametrize("fps, base", SCENE_RATES)
def test_mouth_pulse_lands_on_its_scene_frame(fps, base, model_fps, event_s, strip_start):
    rate = scene_fps(fps, base)
    motion = mouth(model_fps, 4.0, event_s, "pulse")
    on_scene = resample_motion(motion, model_fps, rate)
    frames = scene_frames(len(on_scene), strip_start)

    open_frame = frames[np.argmax(-on_scene[:, JAW, 1])]
    expected = frame_at_time(event_s, strip_start, rate)
    assert abs(open_frame - expected) <= 0.5 + 1e-9
    assert open_frame == strip_start + round(event_s * rate)
    # Nothing but the jaw's y moves, on any frame.
    moved = np.abs(on_scene).sum(axis=0) > 0
    assert moved[JAW, 1] and moved.sum() == 1


@pytest.mark.parametrize("model_fps", MODEL_RATES)
@pytest.mark.parametrize("fps, base", SCENE_RATES)
def test_smooth_opening_centre_lands_within_a_tenth_of_a_frame(fps, base, model_fps):
    # 1.37 s is between model frames at both rates: timing must not snap to the model grid.
    rate = scene_fps(fps, base)
    on_scene = resample_motion(mouth(model_fps, 3.0, 1.37, "gaussian"), model_fps, rate)
    opening = -on_scene[:, JAW, 1]
    frames = scene_frames(len(on_scene), 1.0)
    centre = float((frames * opening).sum() / opening.sum())
    assert centre == pytest.approx(frame_at_time(1.37, 1.0, rate), abs=0.1)


# --------------------------------------------------------------------------------------
# Lengths, copies and interpolation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_frames", [1, 2, 149, 250, 300, 301, 1234])
@pytest.mark.parametrize("model_fps", MODEL_RATES)
@pytest.mark.parametrize("fps, base", SCENE_RATES)
def test_duration_is_kept_within_one_scene_frame(fps, base, model_fps, n_frames):
    rate = scene_fps(fps, base)
    n_out = resampled_length(n_frames, model_fps, rate)
    assert len(resample_motion(np.zeros(n_frames, dtype=np.float32), model_fps, rate)) == n_out
    source_span = (n_frames - 1) / model_fps  # first to last model frame, seconds
    scene_span = (n_out - 1) / rate
    # Never past the last model frame (no extrapolation), and short of it by under one frame.
    assert -1e-9 <= source_span - scene_span < 1 / rate


def test_exact_integer_spans_are_not_floored_away():
    # 250 model frames at 25 fps after frame 0 is exactly 10 s = 300 frames at 30 fps.
    assert resampled_length(251, 25, 30) == 301
    assert resampled_length(301, 30, 24) == 241
    assert resampled_length(301, 30, 60) == 601


def test_equal_rates_give_an_exact_copy():
    values = np.random.default_rng(0).standard_normal((50, 7, 3)).astype(np.float32)
    out = resample_motion(values, 30, 30.0)
    assert out.dtype == values.dtype
    np.testing.assert_array_equal(out, values)
    out[0] = 0  # a copy, not a view
    assert values[0].any()


@pytest.mark.parametrize("model_fps", MODEL_RATES)
@pytest.mark.parametrize("fps, base", SCENE_RATES)
def test_linear_motion_is_interpolated_exactly(fps, base, model_fps):
    rate = scene_fps(fps, base)
    t = np.arange(90) / model_fps
    values = np.stack([2.0 * t - 1.0, -0.5 * t], axis=1)  # (T, 2)
    out = resample_motion(values, model_fps, rate)
    t_out = np.arange(len(out)) / rate
    np.testing.assert_allclose(out, np.stack([2.0 * t_out - 1.0, -0.5 * t_out], axis=1), atol=1e-12)


def test_dtypes():
    assert resample_motion(np.zeros((10, 3), dtype=np.float32), 30, 24).dtype == np.float32
    assert resample_motion(np.arange(10), 30, 24).dtype == np.float64
    single = resample_motion(np.ones((1, 5, 3)), 30, 24)
    assert single.shape == (1, 5, 3)


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, dst",
    [
        pytest.param(0, 24, id="src=0"),
        pytest.param(-30, 24, id="src<0"),
        pytest.param(30, 0, id="dst=0"),
        pytest.param(30, -24, id="dst<0"),
        pytest.param(math.nan, 24, id="src=nan"),
        pytest.param(30, math.inf, id="dst=inf"),
    ],
)
def test_resample_rejects_bad_rates(src, dst):
    with pytest.raises(ValueError, match="positive, finite frame rate"):
        resample_motion(np.zeros((10, 3)), src, dst)


@pytest.mark.parametrize("values", [np.zeros((0, 5, 3)), np.zeros(0), np.float32(1.0)],
                         ids=["no-frames", "empty-1d", "scalar"])
def test_resample_rejects_empty_values(values):
    with pytest.raises(ValueError, match="at least one frame"):
        resample_motion(values, 30, 24)


def test_other_functions_reject_bad_input():
    with pytest.raises(ValueError, match="positive, finite frame rate"):
        frame_at_time(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="strip_start must be finite"):
        frame_at_time(1.0, math.nan, 24.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        scene_frames(-1, 1.0)
    with pytest.raises(ValueError, match="at least one frame"):
        resampled_length(0, 30, 24)
