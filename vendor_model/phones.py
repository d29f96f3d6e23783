"""The phone inventory: CMU ARPAbet without stress digits, lowercase ("AA1" -> "aa"), plus
"sil" for silence and pauses. Shared by the aligner, the metrics, the synthetic data and
the training's frame-wise phone loss, so that a phone index means the same everywhere."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

# The 39 CMU ARPAbet phones (stress removed), in the CMU dictionary's order.
ARPABET: tuple[str, ...] = (
    "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g",
    "hh", "ih", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t",
    "th", "uh", "uw", "v", "w", "y", "z", "zh",
)
SILENCE = "sil"
PHONES: tuple[str, ...] = ARPABET + (SILENCE,)
PHONE_INDEX: dict[str, int] = {phone: i for i, phone in enumerate(PHONES)}
IGNORE = -100  # a frame with no label (torch's cross_entropy ignore_index default)


def frame_phones(segments: Iterable[Mapping], num_frames: int, fps: float) -> np.ndarray:
    """(num_frames,) int64: the PHONES index of the segment under each frame's centre
    ((i + 0.5) / fps seconds), IGNORE where no segment covers it. Segments are mappings
    with "phone", "start" and "end" (seconds), as in a synthetic set's segments/*.json."""
    labels = np.full(num_frames, IGNORE, dtype=np.int64)
    centres = (np.arange(num_frames) + 0.5) / fps
    for segment in segments:
        phone = segment["phone"]
        if phone not in PHONE_INDEX:
            raise ValueError(f"unknown phone {phone!r}; expected lowercase ARPAbet without stress digits or {SILENCE!r}")
        labels[(centres >= segment["start"]) & (centres < segment["end"])] = PHONE_INDEX[phone]
    return labels
