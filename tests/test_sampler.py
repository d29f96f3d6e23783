"""The samplers: the fast folded path equals the straightforward path for every
method and option, the schedule behaves as documented, and the loop reports
progress and honours cancellation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model.config import DiffusionConfig, SamplerConfig
from vendor_model.sampler import GenerationCancelled, SamplingJob, sample_fast, sample_reference
from vendor_model.schedule import NoiseSchedule

from .conftest import tiny_model

SCHEDULE = NoiseSchedule(DiffusionConfig())
ZERO_SNR = NoiseSchedule(DiffusionConfig(rescale_betas_zero_snr=True, timestep_spacing="trailing"))


def make_job(model, *, takes=2, groups=1, frames=40, steps=10, method="official", eta=0.0, guidance=0.0, seed=0, zero_snr=False):
    g = torch.Generator().manual_seed(seed)
    d, nfeats = model.cfg.latent_dim, model.cfg.nfeats
    noise_gen = torch.Generator().manual_seed(seed + 1)
    return SamplingJob(
        memory=torch.randn(groups, 1, frames, d, generator=g),
        style=torch.arange(takes) % model.cfg.num_styles,
        init_noise=torch.randn(takes, frames, nfeats, generator=g),
        plan=(ZERO_SNR if zero_snr else SCHEDULE).plan(steps, method, eta),
        guidance=guidance,
        noise=lambda: torch.randn(takes, frames, nfeats, generator=noise_gen),
    )


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    "options",
    [
        dict(method="official"),
        dict(method="ddim"),
        dict(method="ddim", eta=0.5),
        dict(method="official", eta=1.0),
        dict(method="official", guidance=1.5, groups=2),
        dict(method="ddim", guidance=0.7, groups=2, takes=3),
        dict(method="official", steps=1),
        dict(method="ddim", steps=37),
        dict(method="ddim", eta=1.0, guidance=2.0, groups=2, steps=13, zero_snr=True),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_fast_path_equals_straightforward_path(options):
    model = tiny_model(num_layers=2)
    reference = sample_reference(model.denoiser, make_job(model, **options))
    fast = sample_fast(model.denoiser, make_job(model, **options))
    assert reference.shape == fast.shape
    assert relative_error(fast, reference) < 1e-4


def test_fast_path_with_one_clip_per_take():
    """Batch rows may also carry different clips (memory B = K), as in the official batch."""
    model = tiny_model()
    job = make_job(model, takes=3)
    job.memory = torch.randn(1, 3, 40, model.cfg.latent_dim)
    reference = sample_reference(model.denoiser, job)
    assert relative_error(sample_fast(model.denoiser, job), reference) < 1e-4


def test_official_timesteps_and_final_scale():
    assert SCHEDULE.timesteps(50)[:3] == [981, 961, 941] and SCHEDULE.timesteps(50)[-1] == 1
    assert SCHEDULE.timesteps(10) == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    last = SCHEDULE.plan(50, "official")[-1]
    abar0 = float(SCHEDULE.alphas_cumprod[0])
    assert last.a == pytest.approx(abar0**0.5 + (1 - abar0) ** 0.5, rel=1e-6)  # 1.02873 x0_hat
    assert last.a == pytest.approx(1.02873, abs=1e-5)
    assert all(step.b == 0 and step.std == 0 for step in SCHEDULE.plan(50, "official"))


def test_textbook_ddim_recovers_x0_when_the_prediction_is_consistent():
    """With eta=0, if x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps, one DDIM step lands on
    sqrt(abar_prev) x0 + sqrt(1-abar_prev) eps: the same x0 and eps, one level less noisy."""
    step = SCHEDULE.plan(10, "ddim")[3]
    acp = SCHEDULE.alphas_cumprod.double()
    x0, eps = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    t, prev = step.timestep, step.timestep - 100
    x_t = acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * eps
    expected = acp[prev].sqrt() * x0 + (1 - acp[prev]).sqrt() * eps
    assert torch.allclose(step.a * x0 + step.b * x_t, expected, atol=1e-5)


def test_zero_terminal_snr_makes_the_last_step_pure_noise():
    """The official schedule leaves 6.8 % of x0 in x_999; the rescaled one leaves none, keeps
    abar_0, and still falls monotonically, so training at t = 999 matches sampling from noise."""
    assert float(SCHEDULE.alphas_cumprod[-1] ** 0.5) == pytest.approx(0.0683, abs=1e-4)
    acp = ZERO_SNR.alphas_cumprod
    assert float(acp[-1]) == 0.0 and float(acp[0]) == pytest.approx(float(SCHEDULE.alphas_cumprod[0]), rel=1e-6)
    assert bool((acp[1:] < acp[:-1]).all())
    x0, eps = torch.full((1, 4), 1000.0), torch.randn(1, 4)
    assert torch.equal(ZERO_SNR.add_noise(x0, eps, torch.tensor([999])), eps)


def test_trailing_spacing_starts_on_the_pure_noise_step():
    assert ZERO_SNR.timesteps(50)[:3] == [999, 979, 959] and ZERO_SNR.timesteps(50)[-1] == 19
    assert ZERO_SNR.timesteps(7) == [999, 856, 713, 570, 428, 285, 142]
    for steps in (1, 7, 30, 50, 1000):
        ts = ZERO_SNR.timesteps(steps)
        assert len(ts) == steps and ts[0] == 999 and all(a > b >= 0 for a, b in zip(ts, ts[1:]))


def test_textbook_ddim_on_a_trailing_plan_recovers_x0_at_every_step():
    """Each step of a plan maps a consistent (x0, eps) pair to the next timestep of the
    same plan, even when the spacing is uneven (30 steps of 1000)."""
    acp = ZERO_SNR.alphas_cumprod.double()
    x0, eps = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    plan = ZERO_SNR.plan(30, "ddim")
    for step, following in zip(plan, plan[1:]):
        t, prev = step.timestep, following.timestep
        x_t = acp[t].sqrt() * x0 + (1 - acp[t]).sqrt() * eps
        expected = acp[prev].sqrt() * x0 + (1 - acp[prev]).sqrt() * eps
        assert torch.allclose(step.a * x0 + step.b * x_t, expected, atol=1e-5)


@pytest.mark.parametrize("method", ["official", "ddim"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_every_plan_of_the_zero_snr_schedule_is_finite(method, eta):
    for steps in (1, 10, 50):
        for step in ZERO_SNR.plan(steps, method, eta):
            assert all(np.isfinite([step.a, step.b, step.std])), step


def test_an_unknown_timestep_spacing_is_refused():
    with pytest.raises(ValueError, match="timestep_spacing"):
        DiffusionConfig(timestep_spacing="linspace")


def test_add_noise_is_the_forward_process():
    x0, eps = torch.ones(2, 3), torch.zeros(2, 3)
    noisy = SCHEDULE.add_noise(x0, eps, torch.tensor([0, 999]))
    acp = SCHEDULE.alphas_cumprod
    assert torch.allclose(noisy[:, 0], torch.stack([acp[0].sqrt(), acp[999].sqrt()]))


@pytest.mark.parametrize("path", [sample_reference, sample_fast])
def test_progress_is_reported_after_every_step(path):
    model = tiny_model()
    seen = []
    job = make_job(model, steps=5)
    job.progress = lambda done, total: seen.append((done, total))
    path(model.denoiser, job)
    assert seen == [(i, 5) for i in range(6)]


@pytest.mark.parametrize("path", [sample_reference, sample_fast])
def test_cancel_stops_the_loop(path):
    model = tiny_model()
    calls = []
    job = make_job(model, steps=20)
    job.progress = lambda done, total: calls.append(done)
    job.cancel = lambda: len(calls) >= 3
    with pytest.raises(GenerationCancelled):
        path(model.denoiser, job)
    assert calls == [0, 1, 2]


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(steps=0), "steps"),
        (dict(steps=1001), "steps"),
        (dict(method="dpm"), "method"),
        (dict(eta=-0.1), "eta"),
        (dict(guidance=-1.0), "guidance"),
        (dict(takes=0), "takes"),
        (dict(window_frames=1), "window_frames"),
    ],
)
def test_invalid_sampler_options_are_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(**bad).validate()


def test_guidance_zero_equals_unguided_sampling():
    model = tiny_model()
    plain = sample_fast(model.denoiser, make_job(model))
    job = make_job(model, groups=2, guidance=0.0)
    job.memory = torch.cat([make_job(model).memory, torch.zeros_like(job.memory[:1])])
    assert relative_error(sample_fast(model.denoiser, job), plain) < 1e-5
    assert not np.allclose(plain.numpy(), 0)
