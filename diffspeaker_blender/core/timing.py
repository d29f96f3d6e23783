"""Mapping model frames (30 or 25 fps, time 0 = first audio sample) onto the Blender timeline.

Blender plays a sound strip's first audio sample at the strip's ``frame_start`` (a
float, in scene frames). Audio time t seconds therefore plays at scene frame
``frame_start + t * scene_fps``; trimming the strip's start (``frame_offset_start``)
hides audio but does not move it, so use ``frame_start``, not ``frame_final_start``.

Model frame i is audio time i / model_fps. To key the scene at whole frames we
resample the motion onto the scene's own frame grid, anchored at the strip start:

    model  (30 fps)  |----|----|----|----|----|----|
    scene  (24 fps)  |-----|-----|-----|-----|-----|
                     ^ strip frame_start = audio sample 0 = model frame 0 = scene frame k=0
"""
from __future__ import annotations

import math

import numpy as np

# (T - 1) * dst / src is computed in floating point; when the exact value is an integer
# (T - 1 = 250 at 25 fps onto 30 fps: 250 * 30 / 25 = 300) it must not floor to 299.
_FLOOR_EPS = 1e-9


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite frame rate, got {value!r}")
    return value


def scene_fps(fps: int, fps_base: float) -> float:
    """Blender's effective frame rate, ``scene.render.fps / scene.render.fps_base``.

    NTSC rates are stored as an integer fps and a base: 23.976 is fps=24, fps_base=1.001
    (= 24000/1001), 29.97 is fps=30, fps_base=1.001.
    """
    if isinstance(fps, bool) or int(fps) != fps or fps <= 0:
        raise ValueError(f"scene fps must be a positive integer (render.fps), got {fps!r}")
    base = float(fps_base)
    if not math.isfinite(base) or base <= 0:
        raise ValueError(f"fps_base must be positive and finite (render.fps_base), got {fps_base!r}")
    return int(fps) / base


def resampled_length(n_frames: int, src_fps: float, dst_fps: float) -> int:
    """Frames at dst_fps covering n_frames at src_fps without extrapolating:
    ``floor((n_frames - 1) * dst / src) + 1``, so the last output frame is at or
    before the last source frame's time."""
    if int(n_frames) != n_frames or n_frames < 1:
        raise ValueError(f"need at least one frame to resample, got n_frames={n_frames!r}")
    src = _check_rate("source fps", src_fps)
    dst = _check_rate("destination fps", dst_fps)
    if src == dst:
        return int(n_frames)
    return math.floor((int(n_frames) - 1) * dst / src + _FLOOR_EPS) + 1


def resample_motion(values: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """Resample values (T, ...) sampled at src_fps from time 0 onto a dst_fps grid.

    Output frame k is at time k / dst_fps, linearly interpolated between the two
    surrounding source frames; ``resampled_length`` frames, so the clip's span is kept
    to within one output frame and nothing is extrapolated. Equal rates return an
    exact copy. Floating input keeps its dtype; other input becomes float64.
    """
    values = np.asarray(values)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError(f"values must have at least one frame along axis 0, got shape {values.shape}")
    n_out = resampled_length(values.shape[0], src_fps, dst_fps)
    if float(src_fps) == float(dst_fps):
        return values.copy()
    out_dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    # Source position of each output frame, in source frames: (n_out,). Computed in
    # float64 and clipped so rounding can never index past the last source frame.
    position = np.minimum(np.arange(n_out, dtype=np.float64) * (float(src_fps) / float(dst_fps)),
                          values.shape[0] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, values.shape[0] - 1)
    frac = (position - lower).reshape(-1, *([1] * (values.ndim - 1)))  # (n_out, 1, ...)
    src = values.astype(np.float64, copy=False)
    out = src[lower] * (1.0 - frac) + src[upper] * frac
    return out.astype(out_dtype, copy=False)


def scene_frames(n_frames: int, start_frame: float) -> np.ndarray:
    """Scene frame numbers (n_frames,) float64: start_frame + k for output frame k."""
    if int(n_frames) != n_frames or n_frames < 0:
        raise ValueError(f"n_frames must be a non-negative integer, got {n_frames!r}")
    start = float(start_frame)
    if not math.isfinite(start):
        raise ValueError(f"start_frame must be finite, got {start_frame!r}")
    return start + np.arange(int(n_frames), dtype=np.float64)


def frame_at_time(t, strip_start: float, fps: float):
    """Scene frame at which audio time t (seconds, scalar or array) plays.

    Blender plays a sound strip's first audio sample at its ``frame_start``, so this is
    ``strip_start + t * fps`` (a float; round it for the frame that shows the moment).
    """
    rate = _check_rate("scene fps", fps)
    start = float(strip_start)
    if not math.isfinite(start):
        raise ValueError(f"strip_start must be finite, got {strip_start!r}")
    return start + np.asarray(t, dtype=np.float64) * rate if np.ndim(t) else start + float(t) * rate
