"""Phoneme segments: the contract between the TTS/alignment pipeline and the rig.

Phones are CMU ARPAbet without stress digits, lowercase ("AA1" -> "aa"), plus "sil"
for silence and pauses. Times are seconds from the start of the clip.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vendor_model.phones import ARPABET, PHONES, SILENCE  # noqa: F401 (the contract's phone set)

# Aligners round boundaries; overlaps smaller than this are not errors.
OVERLAP_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class PhonemeSegment:
    phone: str    # one of PHONES
    start: float  # seconds
    end: float    # seconds, > start

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)


def validate_segments(segments: Iterable[PhonemeSegment]) -> tuple[PhonemeSegment, ...]:
    """Check phones, durations and order; return the segments as a tuple.

    Raises ValueError (TypeError for a non-segment) naming the first bad segment: an unknown phone (stress digits
    and upper case are refused, so a forgotten normalisation fails loudly), a negative
    start, a non-positive duration, or a segment starting before the previous one ends.
    Gaps between segments are allowed (the rig treats long gaps as silence).
    """
    result = tuple(segments)
    previous_end = 0.0
    for i, seg in enumerate(result):
        if not isinstance(seg, PhonemeSegment):
            raise TypeError(f"segment {i} is a {type(seg).__name__}, not a PhonemeSegment")
        if seg.phone not in PHONES:
            hint = " (lowercase, no stress digits)" if seg.phone.rstrip("012").lower() in PHONES else ""
            raise ValueError(f"segment {i}: unknown phone {seg.phone!r}{hint}")
        if seg.start < 0:
            raise ValueError(f"segment {i} ({seg.phone}) starts before 0: {seg.start}")
        if not seg.end > seg.start:
            raise ValueError(f"segment {i} ({seg.phone}) has non-positive duration: {seg.start}..{seg.end}")
        if seg.start < previous_end - OVERLAP_TOLERANCE_S:
            raise ValueError(f"segment {i} ({seg.phone}) starts at {seg.start}, before the previous end {previous_end}")
        previous_end = seg.end
    return result
