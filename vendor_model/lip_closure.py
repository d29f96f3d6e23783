"""Lip closure on p, b and m: shut the lips where the speech recogniser hears a bilabial.

The lips touching on p/b/m is the one lip-sync cue viewers never forgive. On real speech the
denoiser (trained on TTS voices) usually knows a closure is near, and its mouth dips there, but
it often stops 1-2 mm short or puts the dip a frame off. This step finishes the job:

1. Evidence: the probability of p, b or m per speech frame, from the phoneme recogniser that
   the model already listens to (hama, 50 fps). CTC recognisers fire in spikes that can sit up to
   ~60 ms from the phone, so a spike only says "a closure near here".
2. Where: near each spike, the frame where the generated mouth is least open: the model's own
   timing, kept. A spike next to a wide-open mouth (over `max_opening_m`) is left alone, so a
   recogniser's false alarm cannot slam an open vowel shut.
3. How: the clip's own mouth-opening motion, run backwards. Regressing every vertex offset on the
   lip gap over the clip gives the deformation the model uses to open the mouth (jaw, lips,
   chin together); subtracting the right amount of it closes the lips with the same shape
   language as the rest of the take, and leaves vertices that never move with the mouth alone.
   The closure frame is shut fully; its neighbours by `kernel` (half by default), so the lips
   ease in and out instead of popping.

The settings were chosen on synthetic voices (the training voices' validation sentences and the
held-out voices), not on the real clips they are judged on; see the model card.

Pure numpy: the add-on, the command line and the benchmarks share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .metrics import mouth_opening

__all__ = ["LipClosure", "closure_frames", "close_lips", "opening_direction"]


@dataclass(frozen=True)
class LipClosure:
    """Settings and the face it works on. template (V, 3) is the model's rest mesh; upper/lower
    are the inner lip rows (the model file's "upper_lip_seam" / "lower_lip_seam" regions)."""

    template: np.ndarray = field(repr=False, compare=False)
    upper: tuple[int, ...] = field(repr=False)
    lower: tuple[int, ...] = field(repr=False)
    threshold: float = 0.3  # p/b/m probability that counts as heard (CTC spikes are near 1)
    search_s: float = 0.067  # look this far either side of a spike for the model's dip (2 frames at 30 fps)
    max_opening_m: float = 0.005  # leave dips wider than this alone: 5 mm is half an open vowel
    kernel: tuple[float, ...] = (1.0, 0.5)  # share of the closure at the frame, ±1, ±2, ...

    def __post_init__(self):
        if not self.upper or not self.lower:
            raise ValueError("lip closure needs the upper and lower lip vertex rows")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be a probability in (0, 1], got {self.threshold}")
        if not self.kernel or self.kernel[0] != 1.0 or any(not 0.0 <= k <= 1.0 for k in self.kernel):
            raise ValueError(f"kernel must start with 1.0 and stay within [0, 1], got {self.kernel}")

    def opening(self, offsets: np.ndarray) -> np.ndarray:
        """(T,) metres, 0 = as closed as the rest mesh. offsets: (T, V, 3). Reads only the lip
        rows, so a long clip is never copied whole."""
        rows = list(self.upper) + list(self.lower)
        upper, lower = np.arange(len(self.upper)), np.arange(len(self.upper), len(rows))
        return mouth_opening(offsets[:, rows], self.template[rows], upper, lower)

    def apply(self, offsets: np.ndarray, bilabial: np.ndarray, evidence_fps: float, fps: float) -> tuple[np.ndarray, int]:
        """offsets (T, V, 3) at fps, bilabial (Ta,) p/b/m probability at evidence_fps ->
        (offsets with the lips shut at each heard closure, how many closures were placed)."""
        frames = closure_frames(bilabial, evidence_fps, self.opening(offsets), fps,
                                self.threshold, self.search_s, self.max_opening_m)
        if frames.size == 0:
            return offsets, 0
        return close_lips(offsets, frames, self), int(frames.size)


def _spikes(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of local maxima at or above threshold (a plateau counts once, at its start)."""
    p = np.asarray(probability, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0, dtype=np.int64)
    left = np.concatenate([[-np.inf], p[:-1]])
    right = np.concatenate([p[1:], [-np.inf]])
    return np.flatnonzero((p >= threshold) & (p > left) & (p >= right))


def closure_frames(bilabial: np.ndarray, evidence_fps: float, opening: np.ndarray, fps: float,
                   threshold: float, search_s: float, max_opening_m: float) -> np.ndarray:
    """Sorted unique motion frames to shut: for each p/b/m spike, the least open frame within
    ±search_s of it, unless even that frame is wider than max_opening_m."""
    opening = np.asarray(opening, dtype=np.float64)
    times = np.arange(len(opening)) / fps
    chosen = set()
    for spike in _spikes(bilabial, threshold):
        near = np.flatnonzero(np.abs(times - spike / evidence_fps) <= search_s + 1e-9)
        if near.size == 0:
            continue
        frame = int(near[np.argmin(opening[near])])
        if opening[frame] <= max_opening_m:
            chosen.add(frame)
    return np.array(sorted(chosen), dtype=np.int64)


def _lip_gap(offsets: np.ndarray, closure: LipClosure) -> np.ndarray:
    """(T, 3) lower-lip centre minus upper-lip centre, as a change from the rest mesh's:
    zero means the lips are where they are at rest (shut)."""
    lower, upper = offsets[:, list(closure.lower)], offsets[:, list(closure.upper)]
    return lower.astype(np.float64).mean(axis=1) - upper.astype(np.float64).mean(axis=1)


def opening_direction(offsets: np.ndarray, gap: np.ndarray) -> np.ndarray | None:
    """(3, V, 3): the offsets that move the lip gap by one metre along x, y and z, read off the
    clip itself (every vertex regressed on the gap over its frames). Least squares makes the
    mapping exact: the lip gap of row k is the unit vector k. A touch of ridge keeps the
    sideways and forward rows tame when the lips barely move that way. None when the mouth
    barely moves (under 0.5 mm spread): nothing to learn from."""
    centred = gap - gap.mean(axis=0)  # (T, 3)
    covariance = centred.T @ centred  # (3, 3)
    if np.trace(covariance) < len(gap) * (0.0005**2):
        return None
    # centred sums to zero over frames, so the offsets need no centring; and the product stays
    # in the offsets' own precision, so a long clip is not copied to float64
    moments = (centred.T.astype(offsets.dtype) @ offsets.reshape(len(gap), -1)).astype(np.float64)  # (3, V*3)
    ridge = 1e-3 * np.trace(covariance) * np.eye(3)
    return np.linalg.solve(covariance + ridge, moments).reshape(3, *offsets.shape[1:])


def close_lips(offsets: np.ndarray, frames: np.ndarray, closure: LipClosure) -> np.ndarray:
    """offsets (T, V, 3) with the lips at `frames` brought back to rest (shut) and their
    neighbours' lip gap scaled down by closure.kernel[1], [2], ... Frames already pressed
    tighter than rest, and every other frame, are left as they are."""
    weight = np.zeros(len(offsets))  # (T,) share of the lip gap to remove
    for frame in frames:
        for distance, share in enumerate(closure.kernel):
            for t in {frame - distance, frame + distance}:
                if 0 <= t < len(weight):
                    weight[t] = max(weight[t], share)
    weight[closure.opening(offsets) <= 0.0] = 0.0
    gap = _lip_gap(offsets, closure)  # (T, 3)
    direction = opening_direction(offsets, gap)
    if direction is None or not weight.any():
        return offsets
    result = offsets.copy()
    flat = result.reshape(len(result), -1)  # (T, V*3), a view
    shift = (weight[:, None] * gap).astype(offsets.dtype)  # (T, 3) lip gap to remove per frame
    step = direction.reshape(3, -1).astype(offsets.dtype)  # (3, V*3)
    moved = np.flatnonzero(weight)
    for start in range(0, len(moved), 64):  # a few frames at a time: no full-size temporaries
        rows = moved[start : start + 64]
        flat[rows] -= shift[rows] @ step
    return result
