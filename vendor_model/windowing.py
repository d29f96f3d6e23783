"""Long clips: split the motion timeline into overlapping windows and join the
windows' outputs with a linear cross-fade.

      window 0   |=========\\
      window 1          /=========\\
      window 2                 /=========|
                        ^^^^   cross-fade: weights ramp 0->1 and 1->0, summing to 1

Every window is generated independently, so memory is bounded by the window
length whatever the clip length. A clip that fits in one window is not split, so
it gives exactly the single-pass (official) result.
"""
from __future__ import annotations

import numpy as np


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges covering 0..num_frames; all windows have length
    `window` (the last one is aligned to the end) and neighbours share >= `overlap` frames."""
    if num_frames <= window:
        return [(0, num_frames)]
    if not 0 <= 2 * overlap < window:
        raise ValueError(f"overlap ({overlap} frames) must be less than half the window ({window} frames)")
    stride = window - overlap
    starts = list(range(0, num_frames - window, stride)) + [num_frames - window]
    return [(s, s + window) for s in starts]


def crossfade_weights(windows: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per-window frame weights; at every frame the weights of the windows covering it sum to 1."""
    weights = [np.ones(end - start, dtype=np.float32) for start, end in windows]
    for i in range(1, len(windows)):
        start, prev_end = windows[i][0], windows[i - 1][1]
        shared = prev_end - start  # frames covered by both window i-1 and window i
        if shared <= 0:
            continue
        ramp = (np.arange(shared, dtype=np.float32) + 0.5) / shared  # rises 0 -> 1
        weights[i][:shared] = ramp
        weights[i - 1][-shared:] = 1.0 - ramp
    return weights


def join_windows(chunks: list[np.ndarray], windows: list[tuple[int, int]], num_frames: int) -> np.ndarray:
    """Cross-fade window outputs (each (K, n_i, ...)) into one (K, num_frames, ...) array."""
    out = np.zeros((chunks[0].shape[0], num_frames, *chunks[0].shape[2:]), dtype=np.float32)
    for chunk, (start, end), weight in zip(chunks, windows, crossfade_weights(windows)):
        out[:, start:end] += chunk * weight.reshape(1, -1, *[1] * (chunk.ndim - 2))
    return out
