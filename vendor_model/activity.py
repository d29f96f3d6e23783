"""Where a clip holds speech, frame by frame: the gate that keeps audio-free guidance out
of pauses.

Guidance extrapolates away from the audio-free prediction, x0 = c + s (c - u). In a pause
the conditional prediction c is the rest pose, but the audio-free one u does not know it
is a pause and keeps "talking", so guidance pushes the lips past rest, away from a
talking mouth. Fading the scale to 0 where the clip is silent leaves the conditional
prediction (rest) there and changes nothing while someone speaks.
"""
from __future__ import annotations

import numpy as np

from .config import SAMPLE_RATE
from .metrics import rms_envelope

# Speech reaches this far before its first loud frame (lips close silently before a /p/ or
# /b/ burst and prepare for the first sound) and this far after its last (weak consonants).
LEAD_S = 0.2
HOLD_S = 0.1
RAMP_S = 0.05  # guidance fades in and out over this long, so it never switches abruptly
MIN_RANGE_DB = 12.0  # less contrast than this between the loud and quiet frames: no pauses to find


def speech_activity(waveform: np.ndarray, fps: float, num_frames: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(num_frames,) in [0, 1]: 1 where there is speech (or near it), 0 in clear pauses.

    Loudness per motion frame is compared with the clip's own range (10th to 99th
    percentile, in dB): frames above 30 % of that range are speech. So the gate does not
    depend on the recording level, and a clip without quiet stretches counts as speech
    throughout (guidance then applies everywhere, as without the gate)."""
    if num_frames < 1:
        return np.ones(0)
    level = 20 * np.log10(rms_envelope(waveform, fps, num_frames, sample_rate) + 1e-9)  # (T,) dB
    floor, peak = np.percentile(level, [10, 99])
    if peak - floor < MIN_RANGE_DB:
        return np.ones(num_frames)
    speech = (level > floor + 0.3 * (peak - floor)).astype(np.float64)
    lead, hold = int(round(LEAD_S * fps)), int(round(HOLD_S * fps))
    ends = np.concatenate([[0.0], np.cumsum(speech)])  # frame t is held when speech is within [t - hold, t + lead]
    t = np.arange(num_frames)
    held = ends[np.minimum(t + lead + 1, num_frames)] - ends[np.maximum(t - hold, 0)] > 0
    ramp = max(int(round(RAMP_S * fps)), 1)
    padded = np.pad(held.astype(np.float64), ramp, mode="edge")
    return np.convolve(padded, np.ones(2 * ramp + 1), mode="same")[ramp:-ramp] / (2 * ramp + 1)  # exact 0 and 1
