"""Speech activity per motion frame, and the guidance gate built on it: audio-free guidance
fades out in a clip's pauses (where it would push the lips past rest) and is untouched
while someone speaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model.activity import HOLD_S, LEAD_S, RAMP_S, speech_activity
from vendor_model.config import SamplerConfig
from vendor_model.pipeline import generate
from vendor_model.sampler import SamplingJob, sample_fast, sample_reference

from .conftest import speech_like, tiny_model
from .test_sampler import make_job, relative_error

RATE, FPS = 16000, 30


def with_pauses(level: float = 1.0) -> np.ndarray:
    """0.6 s pause, 1 s speech, 0.8 s pause, 0.6 s speech, 0.6 s pause (faint noise in pauses)."""
    rng = np.random.default_rng(1)
    parts = []
    for seconds, speaking in ((0.6, False), (1.0, True), (0.8, False), (0.6, True), (0.6, False)):
        parts.append(speech_like(seconds, seed=len(parts)) if speaking else 0.002 * rng.standard_normal(int(seconds * RATE)))
    return (level * np.concatenate(parts)).astype(np.float32)


def frame(seconds: float) -> int:
    return int(round(seconds * FPS))


def test_pauses_are_0_speech_is_1_and_the_edges_ramp():
    gate = speech_activity(with_pauses(), FPS, frame(3.6))
    assert gate.shape == (108,) and gate.min() >= 0 and gate.max() <= 1
    assert (gate[frame(0.7):frame(1.5)] == 1).all() and (gate[frame(2.5):frame(2.9)] == 1).all()  # speaking
    margin = max(LEAD_S, HOLD_S) + RAMP_S + 0.05
    assert (gate[: frame(0.6 - margin)] == 0).all() and (gate[frame(3.0 + margin):] == 0).all()  # leading, trailing pause
    assert (gate[frame(1.6 + margin): frame(2.4 - margin)] == 0).all()  # the pause between
    assert gate[frame(0.6 - LEAD_S + 0.03)] > 0  # before the sound: lips close silently before a /b/ burst
    assert gate[frame(1.6 + HOLD_S + RAMP_S + 0.05)] == 0  # after it, only weak consonants: a shorter reach
    rising = gate[frame(0.6 - margin): frame(0.7)]
    assert (np.diff(rising) >= 0).all() and ((rising > 0) & (rising < 1)).sum() >= 2  # fades in, no jump


def test_the_gate_does_not_depend_on_the_recording_level():
    loud = speech_activity(with_pauses(), FPS, 108)
    np.testing.assert_allclose(speech_activity(with_pauses(level=0.02), FPS, 108), loud, atol=1e-12)


def test_a_clip_without_pauses_is_speech_throughout():
    np.testing.assert_array_equal(speech_activity(speech_like(2.0), FPS, 60), np.ones(60))
    assert speech_activity(np.zeros(100, np.float32), FPS, 0).shape == (0,)


def test_a_per_frame_scale_guides_each_frame_by_its_own_scale():
    job = SamplingJob(memory=torch.zeros(2, 1, 3, 4), style=torch.zeros(2, dtype=torch.long), init_noise=torch.zeros(2, 3, 5),
                      plan=[], guidance=torch.tensor([0.0, 1.0, 2.5]))
    cond, uncond = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    guided = job.guide(torch.cat([cond, uncond]))
    for t, s in enumerate((0.0, 1.0, 2.5)):
        torch.testing.assert_close(guided[:, t], cond[:, t] + s * (cond[:, t] - uncond[:, t]))


def test_fast_path_equals_straightforward_path_with_per_frame_guidance():
    model = tiny_model(num_layers=2)
    scale = torch.linspace(0.0, 2.0, 40)
    reference = sample_reference(model.denoiser, make_job(model, method="ddim", groups=2, takes=3, guidance=scale))
    fast = sample_fast(model.denoiser, make_job(model, method="ddim", groups=2, takes=3, guidance=scale))
    assert relative_error(fast, reference) < 1e-4


def test_generate_gates_guidance_only_where_the_clip_pauses():
    model = tiny_model(seed=0)

    def take(audio, **options):
        return generate(model, audio, sample_rate=RATE, device="cpu", sampler=SamplerConfig(steps=4, guidance=1.5, **options)).offsets

    paused = with_pauses()
    assert not np.allclose(take(paused), take(paused, guide_pauses=True), atol=1e-6)
    steady = speech_like(1.5)  # no pauses: the gate is 1 everywhere and changes nothing
    np.testing.assert_allclose(take(steady), take(steady, guide_pauses=True), rtol=0, atol=1e-7)


def test_guidance_in_pauses_can_be_kept_as_the_official_code_does():
    assert SamplerConfig().guide_pauses is False and SamplerConfig(guide_pauses=True).validate().guide_pauses


@pytest.mark.parametrize("frames", [1, 2, 5])
def test_very_short_clips_get_a_gate_of_their_length(frames):
    assert speech_activity(speech_like(0.2), FPS, frames).shape == (frames,)
