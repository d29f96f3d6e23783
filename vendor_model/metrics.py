"""Evaluation metrics: the official LVE and FDD, and lip-sync checks that need no 3D ground truth.

Official metrics (spec §9), per sequence, in squared dataset units (VOCASET: m², no scale):

    lip_vertex_error(pred, gt, lip_idx)                          mean_t max_{v in lips} |pred - gt|²
    upper_face_dynamics_deviation(pred, gt, template, upper_idx) dyn(gt) - dyn(pred)   (signed)
    mean_over_sequences(values), replication_summary(pass_means), official_scores(triples)

Lip-sync metrics for real speech, scored against a forced alignment (phone segments in
seconds) instead of captured meshes. They all read a mouth-opening signal in metres:

    mouth_opening(offsets, template, upper_lip_idx, lower_lip_idx)  -> (T,)
    closure_rate / opening_rate / rest_in_silence / opening_loudness_lag / jitter

Frame t of a motion at `fps` is taken to show time t / fps (the convention of the pipeline's
output and of keyframing in Blender). numpy only: no torch, no bpy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .phones import SILENCE

__all__ = [
    "BILABIALS", "OPEN_VOWELS", "SILENCE",
    "CLOSURE_THRESHOLD_M", "OPEN_THRESHOLD_M", "REST_THRESHOLD_M",
    "SILENCE_MIN_S", "SILENCE_EDGE_S", "MAX_LAG_S",
    "OfficialScores",
    "lip_vertex_error", "upper_face_dynamics", "upper_face_dynamics_deviation",
    "mean_over_sequences", "replication_summary", "official_scores",
    "flame_lip_indices", "flame_upper_face_indices",
    "mouth_opening", "segment_extremes", "closure_rate", "opening_rate", "silence_frames", "rest_in_silence",
    "rms_envelope", "opening_loudness_lag", "jitter", "count_segments",
]

# ---- phone classes (ARPAbet, lowercase, no stress digits; 'sil' for silence) -------------------

BILABIALS = ("p", "b", "m")  # the lips must touch: the one unambiguous visual cue of speech
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")  # the jaw drops for these (ah includes reduced schwa)

# ---- thresholds (metres; VOCASET/FLAME units) -----------------------------------------------------
# The opening signal is relative to the template, assumed closed-mouthed (FLAME/VOCASET neutral
# templates are; a head with parted lips at rest needs a lower closure threshold), so 0 means
# "as closed as at rest" and a bilabial press goes slightly negative. Speech opens the inner-lip gap by roughly 5-15 mm on open vowels.

# Closed = lips touching: at most ~1 mm above rest, i.e. under ~10 % of a typical open gap and of
# the order of the mesh registration noise of captured closures. Measured against rest rather than
# the clip's own minimum, so a model that never closes cannot pass by its least-open frame.
CLOSURE_THRESHOLD_M = 0.001
# Open = clearly past the closure band: 3 mm is three times the closure threshold and ~30 % of a
# typical open-vowel gap, so reduced vowels ("the", "a") in fast speech still count when the jaw moves.
OPEN_THRESHOLD_M = 0.003
# At rest in silence: every lip vertex within 1 mm of the template (the closure tolerance again).
REST_THRESHOLD_M = 0.001

# Silence used for the rest check: pauses long enough that a speaker really stops (0.3 s), with
# 0.1 s trimmed at each edge because lips legitimately move into and out of the neighbouring phones.
SILENCE_MIN_S = 0.3
SILENCE_EDGE_S = 0.1
# Audio-visual lag search range: natural speakers open the mouth up to ~100-150 ms before the sound;
# ±200 ms covers that with margin while staying below a syllable (~250 ms), which would alias.
MAX_LAG_S = 0.2


# ==================================================================================================
# Official metrics
# ==================================================================================================


@dataclass(frozen=True)
class OfficialScores:
    lve: float  # mean over sequences of the per-sequence LVE (squared units)
    fdd: float  # mean over sequences of the per-sequence signed FDD (squared units)
    num_sequences: int


def _common_length(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official evaluation truncates both to the shorter sequence (equal by construction)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[1:] != gt.shape[1:] or pred.shape[2] != 3:
        raise ValueError(f"pred and gt must both be (T, V, 3) with the same V, got {pred.shape} and {gt.shape}")
    n = min(len(pred), len(gt))
    return pred[:n], gt[:n]


def lip_vertex_error(pred: np.ndarray, gt: np.ndarray, lip_idx: Sequence[int] | np.ndarray) -> float:
    """LVE of one sequence: per frame the largest *squared* lip-vertex distance (no square
    root), averaged over frames. pred, gt: (T, V, 3) vertices (or offsets from one template)."""
    pred, gt = _common_length(pred, gt)
    lips = np.asarray(lip_idx, dtype=np.int64)
    squared = np.sum((pred[:, lips] - gt[:, lips]) ** 2, axis=-1)  # (T, L)
    return float(squared.max(axis=1).mean())


def upper_face_dynamics(vertices: np.ndarray, template: np.ndarray, upper_idx: Sequence[int] | np.ndarray) -> float:
    """Mean over upper-face vertices of the population std over time of the per-frame squared
    displacement |x_t,v - template_v|². vertices: (T, V, 3); template: (V, 3)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    template = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    upper = np.asarray(upper_idx, dtype=np.int64)
    squared = np.sum((vertices[:, upper] - template[upper]) ** 2, axis=-1)  # (T, U)
    return float(squared.std(axis=0, ddof=0).mean())


def upper_face_dynamics_deviation(
    pred: np.ndarray, gt: np.ndarray, template: np.ndarray, upper_idx: Sequence[int] | np.ndarray
) -> float:
    """FDD of one sequence, signed as the official code: dynamics(gt) - dynamics(pred).
    Positive = the prediction's upper face moves less than the capture."""
    pred, gt = _common_length(pred, gt)
    return upper_face_dynamics(gt, template, upper_idx) - upper_face_dynamics(pred, template, upper_idx)


def mean_over_sequences(values: Iterable[float]) -> float:
    """The official per-pass aggregate: the plain mean over sequences. (The official code
    computes a length-weighted LVE and then overwrites it with this unweighted mean.)"""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no sequences to average")
    return float(values.mean())


def replication_summary(pass_means: Iterable[float]) -> tuple[float, float]:
    """(mean, 95 % half-width) over the replication passes: 1.96 * std / sqrt(n), with the
    population std (numpy's default, as the official script)."""
    values = np.asarray(list(pass_means), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no passes to summarise")
    return float(values.mean()), float(1.96 * values.std() / math.sqrt(values.size))


def official_scores(
    sequences: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    lip_idx: Sequence[int] | np.ndarray,
    upper_idx: Sequence[int] | np.ndarray,
) -> OfficialScores:
    """One evaluation pass over (pred, gt, template) triples. pred is (T, V, 3), or
    (S, T, V, 3) for a sequence run with S styles (unseen VOCASET test subjects): each metric
    is then averaged over the styles first, and sequences are weighted equally."""
    lves, fdds = [], []
    for pred, gt, template in sequences:
        styles = np.asarray(pred)
        styles = styles[None] if styles.ndim == 3 else styles  # (S, T, V, 3)
        lves.append(np.mean([lip_vertex_error(p, gt, lip_idx) for p in styles]))
        fdds.append(np.mean([upper_face_dynamics_deviation(p, gt, template, upper_idx) for p in styles]))
    return OfficialScores(mean_over_sequences(lves), mean_over_sequences(fdds), len(lves))


def flame_lip_indices(masks: Mapping[str, Any]) -> np.ndarray:
    """VOCASET lip set: FLAME_masks.pkl['lips'] (254 vertices)."""
    return np.asarray(masks["lips"], dtype=np.int64)


def flame_upper_face_indices(masks: Mapping[str, Any]) -> np.ndarray:
    """VOCASET upper-face set: union of 'forehead' and 'eye_region' (827 unique vertices), sorted."""
    return np.union1d(np.asarray(masks["forehead"], dtype=np.int64), np.asarray(masks["eye_region"], dtype=np.int64))


# ==================================================================================================
# Lip-sync metrics against a phone alignment
# ==================================================================================================


def mouth_opening(
    motion: np.ndarray,
    template: np.ndarray,
    upper_lip_idx: Sequence[int] | np.ndarray,
    lower_lip_idx: Sequence[int] | np.ndarray,
    *,
    offsets: bool = True,
) -> np.ndarray:
    """(T,) inner-lip opening in metres: |centre(lower lip) - centre(upper lip)| minus the same
    distance on the template. motion: (T, V, 3) offsets from `template` (V, 3), or absolute
    vertices with offsets=False.

    Centres rather than the minimum distance between inner-lip rows: a centroid averages out
    single-vertex noise and works with any upper/lower lip vertex sets (a min over vertex pairs
    needs true inner-contour rows and is dominated by the one closest pair, e.g. a lip corner,
    which barely moves). The Euclidean distance needs no up axis; it is nearly vertical anyway.
    """
    template = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    vertices = np.asarray(motion, dtype=np.float64)
    if vertices.ndim != 3 or vertices.shape[1:] != template.shape:
        raise ValueError(f"motion must be (T, V, 3) with V = {len(template)}, got {vertices.shape}")
    if offsets:
        vertices = vertices + template
    upper, lower = np.asarray(upper_lip_idx, dtype=np.int64), np.asarray(lower_lip_idx, dtype=np.int64)
    gap = vertices[:, lower].mean(axis=1) - vertices[:, upper].mean(axis=1)  # (T, 3)
    rest = np.linalg.norm(template[lower].mean(axis=0) - template[upper].mean(axis=0))
    return np.linalg.norm(gap, axis=-1) - rest


def _segment_fields(segment: Any) -> tuple[str, float, float]:
    """(phone, start, end) of an object with .phone/.start/.end or a (phone, start, end) tuple."""
    if hasattr(segment, "phone"):
        return str(segment.phone), float(segment.start), float(segment.end)
    phone, start, end = segment[:3]
    return str(phone), float(start), float(end)


def _frames_near(start: float, end: float, fps: float, num_frames: int) -> np.ndarray:
    """Frames whose time t/fps lies within [start, end] widened by half a frame on each side,
    so that a phone shorter than a frame still owns its nearest frame."""
    first = max(math.ceil(start * fps - 0.5), 0)
    last = min(math.floor(end * fps + 0.5), num_frames - 1)
    return np.arange(first, last + 1)


def _fraction(hits: int, total: int) -> float:
    return hits / total if total else float("nan")  # NaN: no such segment in the clip


def segment_extremes(opening: np.ndarray, segments: Iterable[Any], fps: float, phones: Sequence[str], reduce) -> np.ndarray:
    """reduce(opening within the segment ± half a frame), e.g. np.min, for each `phones` segment."""
    opening = np.asarray(opening, dtype=np.float64)
    values = []
    for segment in segments:
        phone, start, end = _segment_fields(segment)
        frames = _frames_near(start, end, fps, len(opening))
        if phone in phones and frames.size:
            values.append(reduce(opening[frames]))
    return np.asarray(values, dtype=np.float64)


def _segment_rate(opening, segments, fps, phones, reduce, hit) -> float:
    """Fraction of `phones` segments whose extreme opening (see segment_extremes) is a hit."""
    values = segment_extremes(opening, segments, fps, phones, reduce)
    return _fraction(int(hit(values).sum()), values.size)


def closure_rate(
    opening: np.ndarray, segments: Iterable[Any], fps: float,
    phones: Sequence[str] = BILABIALS, threshold: float = CLOSURE_THRESHOLD_M,
) -> float:
    """Fraction of `phones` segments whose minimum opening (within the segment ± half a frame)
    is below `threshold`: did the lips close for p/b/m? NaN when the clip has none."""
    return _segment_rate(opening, segments, fps, phones, np.min, lambda lowest: lowest < threshold)


def opening_rate(
    opening: np.ndarray, segments: Iterable[Any], fps: float,
    phones: Sequence[str] = OPEN_VOWELS, threshold: float = OPEN_THRESHOLD_M,
) -> float:
    """Fraction of open-vowel segments whose maximum opening (segment ± half a frame) exceeds
    `threshold`: did the mouth open for them? NaN when the clip has none."""
    return _segment_rate(opening, segments, fps, phones, np.max, lambda highest: highest > threshold)


def silence_frames(
    segments: Iterable[Any], fps: float, num_frames: int,
    min_duration: float = SILENCE_MIN_S, edge: float = SILENCE_EDGE_S,
) -> np.ndarray:
    """Sorted frame indices inside 'sil' segments longer than `min_duration`, `edge` seconds
    trimmed at both ends: the frames rest_in_silence looks at."""
    frames = []
    for segment in segments:
        phone, start, end = _segment_fields(segment)
        if phone == SILENCE and end - start > min_duration:
            first = max(math.ceil((start + edge) * fps), 0)
            last = min(math.floor((end - edge) * fps), num_frames - 1)
            frames.append(np.arange(first, last + 1))
    return np.unique(np.concatenate(frames)) if frames else np.zeros(0, dtype=np.int64)


def rest_in_silence(
    motion: np.ndarray, segments: Iterable[Any], fps: float, threshold: float = REST_THRESHOLD_M,
    min_duration: float = SILENCE_MIN_S, edge: float = SILENCE_EDGE_S,
) -> float:
    """Fraction of silence frames (pauses longer than `min_duration`, minus `edge` at each end)
    where the mouth is at rest. motion: (T,) opening signal (|opening| is used) or (T, V, 3)
    offsets, e.g. of the lip vertices (the largest vertex offset norm is used). NaN when the clip
    has no such pause."""
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim == 1:
        magnitude = np.abs(motion)  # (T,)
    elif motion.ndim == 3:
        magnitude = np.linalg.norm(motion, axis=-1).max(axis=1)  # (T,)
    else:
        raise ValueError(f"motion must be (T,) or (T, V, 3), got {motion.shape}")
    frames = silence_frames(segments, fps, len(magnitude), min_duration, edge)
    return _fraction(int((magnitude[frames] < threshold).sum()), frames.size)


def rms_envelope(audio: np.ndarray, fps: float, num_frames: int, sample_rate: int = 16_000) -> np.ndarray:
    """(num_frames,) RMS of the audio in a one-frame window centred on each frame time t / fps."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    energy = np.concatenate([[0.0], np.cumsum(audio**2)])  # prefix sums: each window in O(1)
    centres = np.arange(num_frames) / fps * sample_rate
    first = np.clip(np.round(centres - sample_rate / (2 * fps)).astype(np.int64), 0, len(audio))
    last = np.clip(np.round(centres + sample_rate / (2 * fps)).astype(np.int64), 0, len(audio))
    width = np.maximum(last - first, 1)
    return np.sqrt((energy[last] - energy[first]) / width)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else float("nan")


def opening_loudness_lag(
    opening: np.ndarray, audio: np.ndarray, fps: float, sample_rate: int = 16_000, max_lag: float = MAX_LAG_S,
) -> float:
    """Seconds by which the mouth opening lags the loudness of the audio (negative = leads).

    The RMS envelope at the motion rate is correlated with the opening at integer frame lags
    within ±max_lag (Pearson over the overlapping frames, so shorter overlaps are not
    penalised), and the best lag is refined by a parabola through the peak and its neighbours.
    A result of exactly ±max_lag means the correlation peaks at the edge of the window (no
    peak inside it). NaN if either signal is constant.
    """
    opening = np.asarray(opening, dtype=np.float64)
    envelope = rms_envelope(audio, fps, len(opening), sample_rate)  # (T,)
    reach = min(math.floor(max_lag * fps + 1e-9), len(opening) - 2)
    lags = np.arange(-reach, reach + 1)
    # c(k) compares opening[t + k] with envelope[t]: a peak at k > 0 means the mouth follows the sound.
    corr = np.array([
        _pearson(opening[k:], envelope[: len(envelope) - k]) if k >= 0 else _pearson(opening[:k], envelope[-k:])
        for k in lags
    ])
    if not np.isfinite(corr).any():
        return float("nan")
    best = int(np.nanargmax(corr))
    shift = 0.0
    if 0 < best < len(lags) - 1 and np.isfinite(corr[best - 1 : best + 2]).all():
        left, centre, right = corr[best - 1], corr[best], corr[best + 1]
        curvature = left - 2 * centre + right
        if curvature < 0:
            shift = 0.5 * (left - right) / curvature
    lag = (lags[best] + shift) / fps
    return float(np.clip(lag, -max_lag, max_lag))


def jitter(motion: np.ndarray) -> float:
    """Mean absolute second difference (acceleration) in mm/frame². motion in metres: (T,)
    signal, or (T, V, 3) vertices/offsets (norm of each vertex's acceleration, then the mean).
    Per frame², so it depends on the frame rate: multiply by fps² for mm/s² when comparing
    models at different rates. NaN for fewer than 3 frames."""
    motion = np.asarray(motion, dtype=np.float64)
    if len(motion) < 3:
        return float("nan")
    acceleration = motion[2:] - 2 * motion[1:-1] + motion[:-2]  # (T-2,) or (T-2, V, 3)
    magnitude = np.abs(acceleration) if motion.ndim == 1 else np.linalg.norm(acceleration, axis=-1)
    return float(magnitude.mean()) * 1000.0


def count_segments(segments: Iterable[Any], phones: Sequence[str]) -> int:
    """How many segments carry one of `phones`."""
    return sum(_segment_fields(s)[0] in phones for s in segments)
