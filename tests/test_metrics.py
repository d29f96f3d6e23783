"""vendor_model.metrics: the official LVE/FDD on hand-computed cases and on FLAME-sized data
with the real masks (when ../shared has them), and the lip-sync metrics on synthetic mouth
signals whose answers are known."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vendor_model import metrics
from vendor_model.metrics import (
    closure_rate, count_segments, jitter, lip_vertex_error, mean_over_sequences, mouth_opening,
    official_scores, opening_loudness_lag, opening_rate, replication_summary, rest_in_silence,
    rms_envelope, silence_frames, upper_face_dynamics, upper_face_dynamics_deviation,
)

TOPOLOGIES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "topologies"
FLAME_MASKS = TOPOLOGIES / "FLAME_masks.pkl"


def verts(*frames) -> np.ndarray:
    """(T, V, 3) from nested lists."""
    return np.array(frames, dtype=np.float64)


# ---- LVE ----------------------------------------------------------------------------------------

# 2 frames, 3 vertices; prediction all zeros.
GT = verts(
    [[1, 0, 0], [0, 2, 0], [0, 0, 3]],  # squared norms 1, 4, 9
    [[1, 1, 0], [0, 0, 0], [2, 0, 0]],  # squared norms 2, 0, 4
)
ZEROS = np.zeros_like(GT)


def test_lve_is_the_frame_mean_of_the_largest_squared_lip_distance():
    assert lip_vertex_error(ZEROS, GT, [0, 1]) == pytest.approx((4 + 2) / 2)  # max(1,4), max(2,0)
    assert lip_vertex_error(ZEROS, GT, [0, 1, 2]) == pytest.approx((9 + 4) / 2)
    assert lip_vertex_error(ZEROS, GT, [2]) == pytest.approx((9 + 4) / 2)


def test_lve_has_no_square_root_and_is_symmetric():
    with_sqrt = (2 + math.sqrt(2)) / 2  # what an L2 (not squared) version would give for lips [0, 1]
    assert lip_vertex_error(ZEROS, GT, [0, 1]) != pytest.approx(with_sqrt)
    assert lip_vertex_error(GT, ZEROS, [0, 1]) == lip_vertex_error(ZEROS, GT, [0, 1])
    assert lip_vertex_error(GT, GT, [0, 1, 2]) == 0.0


def test_lve_truncates_to_the_common_length():
    longer = np.concatenate([ZEROS, np.full((1, 3, 3), 100.0)])  # an extra frame that must be ignored
    assert lip_vertex_error(longer, GT, [0, 1]) == pytest.approx(3.0)


def test_lve_rejects_mismatched_topologies():
    with pytest.raises(ValueError, match="same V"):
        lip_vertex_error(np.zeros((2, 4, 3)), GT, [0])


# ---- FDD ----------------------------------------------------------------------------------------

TEMPLATE = np.zeros((3, 3))
FDD_GT = verts(
    [[1, 0, 0], [0, 0, 0], [5, 5, 5]],  # v0 squared displacement 1 ...
    [[3, 0, 0], [0, 0, 0], [0, 0, 0]],  # ... then 9: population std 4; v1 never moves: 0
)
FDD_PRED = verts(
    [[1, 0, 0], [0, 1, 0], [0, 0, 0]],  # v0 constant: std 0; v1 squared 1 ...
    [[1, 0, 0], [0, 2, 0], [9, 9, 9]],  # ... then 4: population std 1.5
)
UPPER = [0, 1]  # vertex 2 is not upper face: its large motion must not count


def test_upper_face_dynamics_uses_the_population_std_of_squared_displacements():
    assert upper_face_dynamics(FDD_GT, TEMPLATE, UPPER) == pytest.approx((4 + 0) / 2)
    assert upper_face_dynamics(FDD_PRED, TEMPLATE, UPPER) == pytest.approx((0 + 1.5) / 2)
    sample_std = np.std([1, 9], ddof=1) / 2  # what ddof=1 would give: must differ
    assert upper_face_dynamics(FDD_GT, TEMPLATE, UPPER) != pytest.approx(sample_std)


def test_fdd_is_signed_gt_minus_prediction():
    assert upper_face_dynamics_deviation(FDD_PRED, FDD_GT, TEMPLATE, UPPER) == pytest.approx(2 - 0.75)
    assert upper_face_dynamics_deviation(FDD_GT, FDD_PRED, TEMPLATE, UPPER) == pytest.approx(-(2 - 0.75))
    assert upper_face_dynamics_deviation(FDD_GT, FDD_GT, TEMPLATE, UPPER) == 0.0


def test_fdd_measures_displacement_from_the_template():
    template = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 0]])  # v0 rests at x=1: squared 0, then 4
    assert upper_face_dynamics(FDD_GT, template, [0]) == pytest.approx(2.0)


# ---- averaging ----------------------------------------------------------------------------------


def test_sequences_are_averaged_unweighted_by_length():
    short = (ZEROS, GT, TEMPLATE)  # 2 frames: LVE 3
    long_gt = np.repeat(GT[:1], 8, axis=0)  # 8 frames of frame 0: LVE 4 on lips [0, 1]
    long = (np.zeros_like(long_gt), long_gt, TEMPLATE)
    scores = official_scores([short, long], [0, 1], UPPER)
    assert scores.num_sequences == 2
    assert scores.lve == pytest.approx((3 + 4) / 2)  # a length-weighted mean would be 3.8
    assert mean_over_sequences([1.0, 2.0, 6.0]) == 3.0
    with pytest.raises(ValueError):
        mean_over_sequences([])


def test_a_sequence_run_with_several_styles_is_averaged_over_styles_first():
    styles = np.stack([ZEROS, GT])  # (S=2, T, V, 3): LVE 3 and 0
    scores = official_scores([(styles, GT, TEMPLATE), (GT, GT, TEMPLATE)], [0, 1], UPPER)
    assert scores.lve == pytest.approx(((3 + 0) / 2 + 0) / 2)
    fdd_styles = np.stack([FDD_PRED, FDD_GT])
    assert official_scores([(fdd_styles, FDD_GT, TEMPLATE)], [0], UPPER).fdd == pytest.approx(1.25 / 2)


def test_replication_summary_is_mean_and_196_std_over_sqrt_n():
    mean, half_width = replication_summary([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half_width == pytest.approx(1.96 * math.sqrt(2 / 3) / math.sqrt(3))


# ---- the real FLAME masks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flame_masks():
    if not FLAME_MASKS.is_file():
        pytest.skip(f"shared fixture not available: {FLAME_MASKS}")
    from vendor_model.untrusted import load_numpy_pickle

    return load_numpy_pickle(FLAME_MASKS)


def test_flame_lip_and_upper_face_sets_have_the_official_sizes(flame_masks):
    assert len(metrics.flame_lip_indices(flame_masks)) == 254
    upper = metrics.flame_upper_face_indices(flame_masks)
    assert len(flame_masks["forehead"]) == 133 and len(flame_masks["eye_region"]) == 751
    assert len(upper) == 827 and len(np.unique(upper)) == 827


def test_lve_and_fdd_on_flame_sized_data_equal_a_direct_implementation(flame_masks):
    rng = np.random.default_rng(0)
    template = rng.normal(scale=0.1, size=(5023, 3))
    gt = template + rng.normal(scale=2e-3, size=(12, 5023, 3))
    pred = template + rng.normal(scale=3e-3, size=(12, 5023, 3))
    lips = metrics.flame_lip_indices(flame_masks)
    upper = sorted(set(flame_masks["forehead"].tolist()) | set(flame_masks["eye_region"].tolist()))

    lve = np.mean([max(float(np.sum((pred[t, v] - gt[t, v]) ** 2)) for v in lips) for t in range(12)])

    def dynamics(x):
        return np.mean([np.std([float(np.sum((x[t, v] - template[v]) ** 2)) for t in range(12)]) for v in upper])

    assert lip_vertex_error(pred, gt, lips) == pytest.approx(lve, rel=1e-12)
    assert upper_face_dynamics_deviation(pred, gt, template, metrics.flame_upper_face_indices(flame_masks)) == pytest.approx(
        dynamics(gt) - dynamics(pred), rel=1e-9)


# ---- mouth opening --------------------------------------------------------------------------------

# A 4-vertex mouth: two upper-lip vertices at y = 0, two lower-lip vertices 2 mm below.
MOUTH = np.array([[-0.01, 0.0, 0.0], [0.01, 0.0, 0.0], [-0.01, -0.002, 0.0], [0.01, -0.002, 0.0]])
UPPER_LIP, LOWER_LIP = [0, 1], [2, 3]


def test_mouth_opening_is_the_lip_centre_distance_minus_the_rest_distance():
    offsets = np.zeros((3, 4, 3))
    offsets[1, 2:, 1] = -0.005  # lower lip 5 mm down
    offsets[2, :2, 1] = -0.001  # upper lip 1 mm down: the gap shrinks (a press)
    opening = mouth_opening(offsets, MOUTH, UPPER_LIP, LOWER_LIP)
    np.testing.assert_allclose(opening, [0.0, 0.005, -0.001], atol=1e-12)
    absolute = mouth_opening(MOUTH + offsets, MOUTH, UPPER_LIP, LOWER_LIP, offsets=False)
    np.testing.assert_allclose(absolute, opening, atol=1e-12)


def test_mouth_opening_ignores_rigid_motion_of_the_whole_mouth():
    offsets = np.broadcast_to(np.array([0.003, -0.004, 0.01]), (2, 4, 3))
    np.testing.assert_allclose(mouth_opening(offsets, MOUTH, UPPER_LIP, LOWER_LIP), 0.0, atol=1e-12)


# ---- closure / opening rates ----------------------------------------------------------------------

FPS = 30


@dataclass(frozen=True)
class Seg:  # the duck type the metrics accept (the alignment's PhoneSegment is one)
    phone: str
    start: float
    end: float


SEGMENTS = [  # "sil  b ah  m  sil  p aa sil", two seconds
    Seg("sil", 0.0, 0.4), Seg("b", 0.4, 0.5), Seg("ah", 0.5, 0.7), Seg("m", 0.7, 0.8),
    Seg("sil", 0.8, 1.2), Seg("p", 1.2, 1.3), Seg("aa", 1.3, 1.6), Seg("sil", 1.6, 2.0),
]
T = 60  # frames at 30 fps: 0 .. 1.967 s


def frames_of(*names, widen=0.0) -> np.ndarray:
    mask = np.zeros(T, dtype=bool)
    times = np.arange(T) / FPS
    for s in SEGMENTS:
        if s.phone in names:
            mask |= (times >= s.start - widen) & (times <= s.end + widen)
    return mask


def test_a_signal_closed_exactly_during_p_b_m_has_closure_rate_one():
    opening = np.full(T, 0.006)
    opening[frames_of("p", "b", "m")] = 0.0
    assert closure_rate(opening, SEGMENTS, FPS) == 1.0
    assert closure_rate(np.full(T, 0.006), SEGMENTS, FPS) == 0.0


def test_closure_rate_counts_segments_not_frames():
    opening = np.full(T, 0.006)
    opening[frames_of("p")] = 0.0  # 1 of 3 bilabials closes
    assert closure_rate(opening, SEGMENTS, FPS) == pytest.approx(1 / 3)
    assert count_segments(SEGMENTS, metrics.BILABIALS) == 3


def test_a_phone_shorter_than_a_frame_owns_the_frames_within_half_a_frame():
    segments = [("sil", 0.0, 0.105), ("p", 0.105, 0.125), ("sil", 0.125, 1.0)]  # between frames 3 and 4
    opening = np.full(30, 0.006)
    opening[4] = 0.0  # t = 0.1333 s: 8 ms after the p ends, within half a frame (16.7 ms)
    assert closure_rate(opening, segments, FPS) == 1.0
    opening = np.full(30, 0.006)
    opening[5] = 0.0  # t = 0.1667 s: too far
    assert closure_rate(opening, segments, FPS) == 0.0


def test_rates_are_nan_when_the_clip_has_no_such_phone():
    assert math.isnan(closure_rate(np.zeros(T), [Seg("aa", 0.0, 1.0)], FPS))
    assert math.isnan(opening_rate(np.zeros(T), [Seg("m", 0.0, 1.0)], FPS))


def test_a_signal_open_during_open_vowels_has_opening_rate_one():
    opening = np.zeros(T)
    opening[frames_of("ah", "aa")] = 0.008
    assert opening_rate(opening, SEGMENTS, FPS) == 1.0
    opening[frames_of("aa", widen=1 / FPS)] = 0.002  # below the 3 mm threshold
    assert opening_rate(opening, SEGMENTS, FPS) == 0.5
    assert count_segments(SEGMENTS, metrics.OPEN_VOWELS) == 2


# ---- rest in silence --------------------------------------------------------------------------------


def test_silence_frames_skip_short_pauses_and_the_edges_of_long_ones():
    frames = silence_frames(SEGMENTS, FPS, T)
    times = frames / FPS
    # sil 0.0-0.4 -> 0.1..0.3; sil 0.8-1.2 -> 0.9..1.1; sil 1.6-2.0 -> 1.7..1.9 (all > 0.3 s long)
    assert times.min() == pytest.approx(0.1) and times.max() == pytest.approx(1.9)
    assert not ((times > 0.3 + 1e-9) & (times < 0.9 - 1e-9)).any()
    assert silence_frames([Seg("sil", 0.0, 0.25), Seg("aa", 0.25, 1.0)], FPS, T).size == 0


def test_a_mouth_at_rest_in_pauses_scores_one_even_if_it_moves_at_their_edges():
    opening = np.full(T, 0.005)
    in_pauses = np.zeros(T, dtype=bool)
    in_pauses[silence_frames(SEGMENTS, FPS, T)] = True
    opening[in_pauses] = 0.0  # still in the trimmed pauses, moving at their edges
    assert rest_in_silence(opening, SEGMENTS, FPS) == 1.0
    assert rest_in_silence(np.full(T, 0.005), SEGMENTS, FPS) == 0.0
    opening[np.flatnonzero(in_pauses)[:5]] = 0.005
    assert rest_in_silence(opening, SEGMENTS, FPS) == pytest.approx(1 - 5 / in_pauses.sum())


def test_rest_in_silence_on_vertex_offsets_uses_the_largest_vertex_motion():
    offsets = np.zeros((T, 4, 3))
    frames = silence_frames(SEGMENTS, FPS, T)
    offsets[frames[0], 3, 2] = 0.002  # one lip vertex 2 mm off in one silent frame
    assert rest_in_silence(offsets, SEGMENTS, FPS) == pytest.approx(1 - 1 / len(frames))
    assert math.isnan(rest_in_silence(np.zeros(T), [Seg("aa", 0.0, 2.0)], FPS))


# ---- lag ------------------------------------------------------------------------------------------


def syllable_envelope(times: np.ndarray) -> np.ndarray:
    """A smooth positive envelope at syllable rates (2-5 Hz), like speech loudness."""
    rng = np.random.default_rng(1)
    freqs, phases = rng.uniform(2.0, 5.0, 6), rng.uniform(0, 2 * np.pi, 6)
    return 1.2 + sum(np.sin(2 * np.pi * f * times + p) for f, p in zip(freqs, phases)) / 6


def speech_and_mouth(lag_s: float, seconds: float = 8.0):
    sr = 16_000
    t_audio = np.arange(int(seconds * sr)) / sr
    carrier = np.random.default_rng(2).standard_normal(t_audio.size)
    audio = 0.1 * syllable_envelope(t_audio) * carrier
    t_frames = np.arange(int(seconds * FPS)) / FPS
    opening = 0.01 * syllable_envelope(t_frames - lag_s)  # the mouth follows the sound by lag_s
    return opening, audio


@pytest.mark.parametrize("lag", [0.06, -0.06, 0.0, 0.15], ids=lambda v: f"{v * 1000:+.0f}ms")
def test_the_lag_of_a_shifted_mouth_is_recovered_to_5_ms(lag):
    opening, audio = speech_and_mouth(lag)
    assert opening_loudness_lag(opening, audio, FPS) == pytest.approx(lag, abs=0.005)


def test_the_lag_search_stays_within_200_ms_and_a_constant_mouth_gives_nan():
    opening, audio = speech_and_mouth(0.0)
    assert abs(opening_loudness_lag(opening, audio, FPS, max_lag=0.1)) <= 0.1
    assert math.isnan(opening_loudness_lag(np.zeros(FPS * 2), audio[:32000], FPS))


def test_rms_envelope_of_a_steady_sine_is_its_rms():
    t = np.arange(16000) / 16000
    envelope = rms_envelope(0.5 * np.sin(2 * np.pi * 300 * t), FPS, 30)
    np.testing.assert_allclose(envelope[1:-1], 0.5 / math.sqrt(2), rtol=0.02)  # interior: full windows


# ---- jitter -----------------------------------------------------------------------------------------


def test_jitter_is_the_mean_absolute_second_difference_in_mm():
    assert jitter(np.linspace(0, 0.01, 10)) == pytest.approx(0.0, abs=1e-12)  # constant velocity
    assert jitter(np.array([0.0, 0.001, 0.0])) == pytest.approx(2.0)  # |0 - 2*1 + 0| mm
    assert jitter(np.array([0.0, 0.001, 0.0, 0.001])) == pytest.approx(2.0)
    assert math.isnan(jitter(np.zeros(2)))


def test_jitter_of_vertices_uses_each_vertex_acceleration_norm():
    motion = np.zeros((3, 2, 3))
    motion[1, 0] = [0.0003, 0.0, 0.0004]  # vertex 0 second difference norm 2 * 0.5 mm = 1 mm; vertex 1 still
    assert jitter(motion) == pytest.approx(0.5)
