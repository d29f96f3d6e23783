"""Long clips: split the motion timeline into overlapping windows and join the
windows' outputs with a linear cross-fade.

      window 0   |=========\\
      window 1          /=========\\
      window 2                 /=========|
                        ^^^^   cross-fade: each window's weight ramps over the frames it
                               shares with a neighbour; weights are normalised to sum to 1

Every window is generated independently, so memory is bounded by the window
length whatever the clip length. A clip that fits in one window is not split, so
it gives exactly the single-pass (official) result.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges covering 0..num_frames: the fewest windows of length
    `window`, evenly spaced, so that neighbours share at least `overlap` frames."""
    if num_frames <= window:
        return [(0, num_frames)]
    if not 0 <= 2 * overlap < window:
        raise ValueError(f"overlap ({overlap} frames) must be less than half the window ({window} frames)")
    count = math.ceil((num_frames - overlap) / (window - overlap))
    starts = np.round(np.linspace(0, num_frames - window, count)).astype(int)
    return [(int(s), int(s) + window) for s in starts]


def crossfade_weights(windows: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per-window frame weights; at every frame the weights of the covering windows sum to 1."""
    ramps = []
    for i, (start, end) in enumerate(windows):
        shared_before = windows[i - 1][1] - start if i > 0 else 0
        shared_after = end - windows[i + 1][0] if i + 1 < len(windows) else 0
        position = np.arange(end - start, dtype=np.float64) + 0.5
        rise = position / shared_before if shared_before > 0 else np.ones_like(position)
        fall = (end - start - position) / shared_after if shared_after > 0 else np.ones_like(position)
        ramps.append(np.minimum(1.0, np.minimum(rise, fall)))
    total = np.zeros(windows[-1][1])
    for (start, end), ramp in zip(windows, ramps):
        total[start:end] += ramp
    return [(ramp / total[start:end]).astype(np.float32) for (start, end), ramp in zip(windows, ramps)]


def join_windows(chunks: Iterable[np.ndarray], windows: list[tuple[int, int]], num_frames: int) -> np.ndarray:
    """Cross-fade window outputs (each (K, n_i, ...), in window order) into one
    (K, num_frames, ...) array. `chunks` may be a generator: each chunk is added
    as it arrives, so only one window's output is alive at a time."""
    out = None
    for chunk, (start, end), weight in zip(chunks, windows, crossfade_weights(windows)):
        if out is None:
            out = np.zeros((chunk.shape[0], num_frames, *chunk.shape[2:]), dtype=np.float32)
        out[:, start:end] += chunk * weight.reshape(1, -1, *[1] * (chunk.ndim - 2))
    return out
