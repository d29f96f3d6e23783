"""Lip closure on p/b/m (`vendor_model.lip_closure`): where it closes, how, and what it leaves
alone. The face is a toy: two lip rows, a chin and a forehead vertex, whose mouth opens and
closes like a jaw."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model.checkpoint import ModelBundle
from vendor_model.config import SamplerConfig
from vendor_model.frontends import is_bilabial
from vendor_model.lip_closure import LipClosure, close_lips, closure_frames
from vendor_model.pipeline import generate

from .conftest import speech_like, tiny_model

FPS = 30.0
EVIDENCE_FPS = 50.0
UPPER, LOWER, CHIN, FOREHEAD = (0, 1), (2, 3), 4, 5
TEMPLATE = np.array([[-0.01, 0.0, 0.0], [0.01, 0.0, 0.0], [-0.01, -0.0005, 0.0], [0.01, -0.0005, 0.0],
                     [0.0, -0.04, 0.01], [0.0, 0.08, 0.0]])


def jaw_motion(opening_mm: np.ndarray) -> np.ndarray:
    """(T, 6, 3) offsets: the lower lip and chin drop by the opening, the upper lip rises by a
    fifth of it and moves forward a little (so the opening direction is not purely vertical)."""
    o = np.asarray(opening_mm, dtype=np.float64)[:, None] / 1000.0
    offsets = np.zeros((len(o), 6, 3))
    offsets[:, list(LOWER), 1] = -0.8 * o
    offsets[:, CHIN, 1] = -0.9 * o[:, 0]
    offsets[:, list(UPPER), 1] = 0.2 * o
    offsets[:, list(UPPER), 2] = 0.1 * o
    return offsets.astype(np.float32)


def closure(**options) -> LipClosure:
    return LipClosure(TEMPLATE, UPPER, LOWER, **options)


def spike_at(seconds: float, duration_s: float, height: float = 1.0) -> np.ndarray:
    """(Ta,) p/b/m probability at 50 fps: one CTC-like spike."""
    evidence = np.zeros(int(duration_s * EVIDENCE_FPS) + 1)
    evidence[round(seconds * EVIDENCE_FPS)] = height
    return evidence


# A mouth that opens 6 mm on vowels, dips to 2 mm (not quite shut) at frame 10 and stays wide
# open over frames 12-19.
OPENING_MM = np.array([0, 1, 3, 5, 6, 6, 5, 4, 3, 2.5, 2.0, 2.5, 6, 6, 6, 6, 6, 6, 6, 6, 5, 3, 1, 0], dtype=float)


def test_the_opening_is_measured_from_rest():
    # the upper lip also moves forward a little, so the opening is 0.5 % more than the drop
    np.testing.assert_allclose(closure().opening(jaw_motion(OPENING_MM)) * 1000, OPENING_MM * 1.005, atol=0.01)


def test_a_heard_bilabial_closes_the_models_own_dip():
    # the spike is 40 ms after the dip: within reach, so the dip (the model's timing) is shut
    frames = closure_frames(spike_at(10 / FPS + 0.04, 1.0), EVIDENCE_FPS, OPENING_MM / 1000, FPS,
                            threshold=0.3, search_s=0.067, max_opening_m=0.005)
    assert frames.tolist() == [10]


def test_weak_distant_or_wide_open_evidence_closes_nothing():
    opening = OPENING_MM / 1000
    weak = spike_at(10 / FPS, 1.0, height=0.2)
    far = spike_at(10 / FPS + 0.2, 1.0)  # 200 ms away: frames 14-18 within reach, all 6 mm open
    for evidence in (weak, far, np.zeros(51)):
        assert closure_frames(evidence, EVIDENCE_FPS, opening, FPS, 0.3, 0.067, 0.005).size == 0
    # the same far spike closes when wide-open mouths are allowed
    assert closure_frames(far, EVIDENCE_FPS, opening, FPS, 0.3, 0.067, 0.007).size == 1


def test_closing_shuts_the_frame_eases_the_neighbours_and_leaves_the_rest():
    motion = jaw_motion(OPENING_MM)
    lips = closure()
    closed = close_lips(motion, np.array([10]), lips)  # neighbours half closed, the default
    after = lips.opening(closed) * 1000
    assert abs(after[10]) < 0.05  # shut (the threshold for "closed" is 1 mm)
    np.testing.assert_allclose(after[[9, 11]], 0.5 * OPENING_MM[[9, 11]], atol=0.05)
    untouched = np.setdiff1d(np.arange(len(motion)), [9, 10, 11])
    np.testing.assert_array_equal(closed[untouched], motion[untouched])
    # the clip's own shape of opening, run backwards: the chin rises with the lower lip,
    # the forehead never moved and does not now
    assert closed[10, CHIN, 1] == pytest.approx(-0.9 * 0.0, abs=5e-5)
    np.testing.assert_array_equal(closed[:, FOREHEAD], motion[:, FOREHEAD])


def test_a_lip_press_is_not_undone_and_a_still_mouth_is_left_alone():
    pressed = OPENING_MM.copy()
    pressed[10] = -0.5  # tighter than rest
    motion = jaw_motion(pressed)
    closed = close_lips(motion, np.array([10]), closure(kernel=(1.0,)))
    np.testing.assert_array_equal(closed, motion)
    still = jaw_motion(np.full(20, 2.0))
    np.testing.assert_array_equal(close_lips(still, np.array([5]), closure()), still)


def test_apply_reports_how_many_closures_it_placed():
    motion = jaw_motion(OPENING_MM)
    duration = len(OPENING_MM) / FPS
    evidence = spike_at(10 / FPS, duration) + spike_at(21 / FPS, duration)  # the second reaches frames 19-23
    closed, count = closure().apply(motion, evidence, EVIDENCE_FPS, FPS)
    assert count == 2
    after = closure().opening(closed)
    assert after[10] < 0.0001 and after[23] < 0.0001  # the second dip was the already-shut last frame
    assert after[22] == pytest.approx(0.5 * 0.001, abs=5e-5)  # eased towards it
    same, none = closure().apply(motion, np.zeros_like(evidence), EVIDENCE_FPS, FPS)
    assert none == 0 and same is motion


@pytest.mark.parametrize("options, message", [
    ({"kernel": (0.5,)}, "kernel"), ({"kernel": (1.0, 1.5)}, "kernel"), ({"threshold": 0.0}, "threshold"),
])
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        closure(**options)
    with pytest.raises(ValueError, match="lip vertex rows"):
        LipClosure(TEMPLATE, (), LOWER)


def test_hamas_bilabial_classes():
    assert all(is_bilabial(s) for s in ("p", "b", "m", "p\u02b0", "m\u0329", "b\u02d0"))
    assert not any(is_bilabial(s) for s in ("f", "v", "w", "n", "mb", "<blank>", "\u0271"))


# ---- inside generate and the model bundle -------------------------------------------------------


class HearsBilabials(torch.nn.Module):
    """Wraps a model's encoder and adds the recogniser's p/b/m probability: a spike at 0.5 s."""

    feature_fps = EVIDENCE_FPS

    def __init__(self, encoder):
        super().__init__()
        self.inner = encoder
        self.calls = []

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def bilabial_probability(self, waveform):
        self.calls.append(waveform.shape[-1])
        return spike_at(0.5, waveform.shape[-1] / 16000)


def model_that_hears_bilabials():
    model = tiny_model()
    model.audio_encoder = HearsBilabials(model.audio_encoder)
    return model


def toy_closure(model) -> LipClosure:
    template = np.zeros((model.cfg.n_vertices, 3))
    template[1, 1] = -0.0005
    return LipClosure(template, (0,), (1,), max_opening_m=1.0)


def test_generate_applies_the_closure_to_every_take_from_the_whole_clips_evidence():
    model = model_that_hears_bilabials()
    lips = toy_closure(model)
    audio = speech_like(1.0)
    sampler = SamplerConfig(steps=3, seed=4, takes=2)
    plain = generate(model, audio, sample_rate=16000, sampler=sampler)
    closed = generate(model, audio, sample_rate=16000, sampler=sampler, lip_closure=lips)
    assert plain.lip_closures == () and closed.lip_closures == (1, 1)
    assert model.audio_encoder.calls == [16000]  # heard once, on the whole (single-window) clip
    for take in range(2):
        expected, _ = lips.apply(plain.offsets[take], spike_at(0.5, 1.0), EVIDENCE_FPS, plain.fps)
        np.testing.assert_allclose(closed.offsets[take], expected, atol=1e-6)


def test_a_long_clip_hears_each_window_at_its_place_in_the_clip():
    model = model_that_hears_bilabials()
    lips = toy_closure(model)
    audio = speech_like(2.0)
    sampler = SamplerConfig(steps=2, seed=1, window_frames=30, overlap_frames=10)
    plain = generate(model, audio, sample_rate=16000, sampler=sampler)
    closed = generate(model, audio, sample_rate=16000, sampler=sampler, lip_closure=lips)
    assert len(closed.windows) >= 3 and len(model.audio_encoder.calls) == len(closed.windows)
    assert closed.lip_closures[0] >= 2 and not np.allclose(closed.offsets, plain.offsets)
    expected = np.zeros(round(len(audio) * EVIDENCE_FPS / 16000) + 1)  # each window's spike, 0.5 s into it
    for (start, _), samples in zip(closed.windows, model.audio_encoder.calls):
        spike = round(start * 16000 / plain.fps) * EVIDENCE_FPS / 16000 + round(0.5 * EVIDENCE_FPS)
        if 0.5 < samples / 16000:
            expected[round(spike)] = 1.0
    np.testing.assert_allclose(closed.offsets[0], lips.apply(plain.offsets[0], expected, EVIDENCE_FPS, plain.fps)[0], atol=1e-6)


def test_generate_refuses_lip_closure_for_a_model_that_cannot_hear_phonemes():
    model = tiny_model()
    with pytest.raises(ValueError, match="phonemes.*lip closure off"):
        generate(model, speech_like(0.5), sample_rate=16000, sampler=SamplerConfig(steps=2), lip_closure=toy_closure(model))


def test_a_bundle_offers_lip_closure_only_when_it_has_everything_it_needs():
    hearing, deaf = model_that_hears_bilabials(), tiny_model()
    template = np.zeros((hearing.cfg.n_vertices, 3))
    regions = {"upper_lip_seam": [0, 2], "lower_lip_seam": [1, 3]}
    offered = ModelBundle(hearing, template, ("a",), {"regions": regions}).lip_closure()
    assert offered is not None and offered.upper == (0, 2) and offered.lower == (1, 3)
    assert ModelBundle(deaf, template, ("a",), {"regions": regions}).lip_closure() is None  # no recogniser
    assert ModelBundle(hearing, None, ("a",), {"regions": regions}).lip_closure() is None  # no rest mesh
    assert ModelBundle(hearing, template, ("a",), {}).lip_closure() is None  # no lip rows
