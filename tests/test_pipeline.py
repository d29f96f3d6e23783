"""`generate`: one call from speech to per-frame vertex offsets. Shapes and rates,
seeding and takes, audio input forms, input validation, progress and cancellation,
sampler options, output smoothing and long-clip windowing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model.audio import AudioError
from vendor_model.config import SamplerConfig
from vendor_model.pipeline import Generation, GenerationCancelled, generate, smooth_interior

from .conftest import speech_like, tiny_model

STEPS = 4


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=0)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_like(1.2)  # 19200 samples at 16 kHz -> 35 frames at 30 fps


def run(model, audio, sample_rate=16000, **sampler):
    """generate() on the CPU with a few steps unless told otherwise."""
    sampler.setdefault("steps", STEPS)
    return generate(model, audio, sample_rate=sample_rate, sampler=SamplerConfig(**sampler), device="cpu")


# ---- shape, dtype, rate ---------------------------------------------------------------------


def test_output_is_takes_frames_vertices_xyz_float32_at_the_model_rate(model, audio):
    result = run(model, audio, takes=2)
    assert isinstance(result, Generation)
    frames = model.num_frames(len(audio))
    assert frames == 35
    assert result.offsets.shape == (2, frames, 20, 3)
    assert result.offsets.dtype == np.float32 and np.isfinite(result.offsets).all()
    assert result.fps == model.cfg.fps == 30
    assert result.num_frames == frames and result.duration_s == pytest.approx(frames / 30)
    assert result.style == 0 and result.windows == ((0, frames),)
    assert np.abs(result.offsets).max() > 0


def test_offsets_come_back_in_metres_whatever_the_motion_scale(audio):
    # A head that always predicts the same x0: the sampler runs in scaled units, and
    # generation divides its result by the scale.
    outputs = []
    for scale in (1.0, 1000.0):
        model = tiny_model(seed=0, motion_scale=scale, smooth_output=False)
        torch.nn.init.zeros_(model.denoiser.motion_decoder.weight)
        torch.nn.init.constant_(model.denoiser.motion_decoder.bias, 2.0)
        outputs.append(run(model, audio).offsets)
    np.testing.assert_allclose(outputs[0], 2.0, atol=0.1)  # 4 steps leave a little of the noise
    np.testing.assert_allclose(outputs[1] * 1000.0, outputs[0], rtol=1e-5)


def test_the_sampling_update_defaults_to_the_models_own(audio):
    import dataclasses

    model = tiny_model(seed=0)
    own = dataclasses.replace(model.cfg.diffusion, sample_method="ddim")
    model.cfg = dataclasses.replace(model.cfg, diffusion=own)
    default = run(model, audio).offsets
    np.testing.assert_array_equal(default, run(model, audio, method="ddim").offsets)
    assert not np.allclose(default, run(model, audio, method="official").offsets)


def test_guidance_defaults_to_the_models_own(audio):
    import dataclasses

    model = tiny_model(seed=0)
    model.cfg = dataclasses.replace(model.cfg, diffusion=dataclasses.replace(model.cfg.diffusion, guidance_scale=1.5))
    default = run(model, audio).offsets
    np.testing.assert_array_equal(default, run(model, audio, guidance=1.5).offsets)
    assert not np.allclose(default, run(model, audio, guidance=0.0).offsets, atol=1e-4)  # the caller's choice wins


def test_style_selects_a_different_motion(model, audio):
    a = run(model, audio, seed=1)
    b = generate(model, audio, sample_rate=16000, style=2, sampler=SamplerConfig(steps=STEPS, seed=1), device="cpu")
    assert b.style == 2
    assert not np.allclose(a.offsets, b.offsets, atol=1e-5)


# ---- seeds and takes ------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_motion_and_another_seed_does_not(model, audio):
    a, b, c = run(model, audio, seed=7), run(model, audio, seed=7), run(model, audio, seed=8)
    np.testing.assert_array_equal(a.offsets, b.offsets)
    assert not np.allclose(a.offsets, c.offsets, atol=1e-4)
    assert a.seeds == (7,) and c.seeds == (8,)


def test_take_k_equals_a_single_take_run_with_seed_plus_k(model, audio):
    batch = run(model, audio, seed=10, takes=3)
    assert batch.seeds == (10, 11, 12)
    for k in range(3):
        single = run(model, audio, seed=10 + k)
        np.testing.assert_allclose(batch.offsets[k], single.offsets[0], atol=1e-6, rtol=0, err_msg=f"take {k}")
    assert not np.allclose(batch.offsets[0], batch.offsets[1], atol=1e-4)


def test_takes_stay_independent_with_stochastic_sampling(model, audio):
    batch = run(model, audio, seed=3, takes=2, method="ddim", eta=0.7)
    single = run(model, audio, seed=4, method="ddim", eta=0.7)
    np.testing.assert_allclose(batch.offsets[1], single.offsets[0], atol=1e-6, rtol=0)


def test_without_a_seed_the_seeds_used_are_reported_and_reproduce_the_run(model, audio):
    first = run(model, audio, seed=None, takes=2)
    assert len(first.seeds) == 2 and first.seeds[1] == first.seeds[0] + 1
    again = run(model, audio, seed=first.seeds[0], takes=2)
    np.testing.assert_array_equal(first.offsets, again.offsets)


def test_a_seeded_run_leaves_the_global_random_state_alone(model, audio):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run(model, audio, seed=0, takes=2, method="ddim", eta=0.5)
    assert torch.equal(torch.get_rng_state(), before)


def test_an_unseeded_run_leaves_the_global_random_state_alone(model, audio):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    run(model, audio, seed=None, steps=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_init_noise_replaces_the_seeded_noise(model, audio):
    frames = model.num_frames(len(audio))
    noise = torch.randn((1, frames, model.cfg.nfeats), generator=torch.Generator().manual_seed(21))
    given = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=STEPS, seed=0),
                     init_noise=noise, device="cpu")
    seeded = run(model, audio, seed=21)
    np.testing.assert_array_equal(given.offsets, seeded.offsets)


# ---- audio input ----------------------------------------------------------------------------


def test_a_stereo_44k_file_equals_the_same_array_with_its_sample_rate(model, tmp_path):
    import soundfile as sf

    rate = 44100
    left = speech_like(1.0, rate=rate, seed=1)
    stereo = np.stack([left, 0.5 * left[::-1]], axis=1)  # (samples, 2)
    path = tmp_path / "line.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")

    from_file = generate(model, str(path), sampler=SamplerConfig(steps=STEPS, seed=2), device="cpu")
    from_path_object = generate(model, path, sampler=SamplerConfig(steps=STEPS, seed=2), device="cpu")
    from_array = run(model, stereo, sample_rate=rate, seed=2)
    np.testing.assert_array_equal(from_file.offsets, from_array.offsets)
    np.testing.assert_array_equal(from_path_object.offsets, from_array.offsets)
    assert from_file.num_frames == model.num_frames(16000)  # 1 s, resampled to 16 kHz


# ---- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", [-1, 3, 99])
def test_a_style_outside_the_model_is_refused(model, audio, style):
    with pytest.raises(ValueError, match=f"style {style}"):
        generate(model, audio, sample_rate=16000, style=style, sampler=SamplerConfig(steps=1))


def test_a_template_with_another_vertex_count_is_refused(model, audio):
    with pytest.raises(ValueError, match="vertices"):
        generate(model, audio, sample_rate=16000, template=np.zeros((19, 3), np.float32))
    for template in (np.zeros((20, 3), np.float32), np.zeros(60, np.float32)):  # the right size is accepted
        assert generate(model, audio, sample_rate=16000, template=template, sampler=SamplerConfig(steps=1)).num_frames == 35


@pytest.mark.parametrize(
    "options",
    [
        dict(steps=0), dict(steps=1001), dict(method="euler"), dict(eta=-0.1), dict(eta=1.5),
        dict(eta=float("nan")), dict(guidance=-1.0), dict(guidance=float("nan")), dict(takes=0),
        dict(window_frames=1), dict(overlap_frames=-1),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_invalid_sampler_options_are_refused(model, audio, options):
    with pytest.raises(ValueError):
        generate(model, audio, sample_rate=16000, sampler=SamplerConfig(**options), device="cpu")


def test_an_overlap_of_half_the_window_or_more_is_refused_for_a_long_clip(model, audio):
    with pytest.raises(ValueError, match="overlap"):
        run(model, audio, window_frames=20, overlap_frames=10)


def test_init_noise_is_refused_for_a_clip_that_needs_several_windows(model, audio):
    noise = torch.zeros(1, 35, model.cfg.nfeats)
    with pytest.raises(ValueError, match="init_noise"):
        generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=1, window_frames=20, overlap_frames=5),
                 init_noise=noise, device="cpu")


def test_too_short_or_silent_audio_is_an_audio_error(model):
    with pytest.raises(AudioError, match="too short"):
        generate(model, speech_like(0.05), sample_rate=16000, sampler=SamplerConfig(steps=1))
    with pytest.raises(AudioError, match="silent"):
        generate(model, np.zeros(16000, np.float32), sample_rate=16000, sampler=SamplerConfig(steps=1))
    with pytest.raises(AudioError, match="sample_rate"):
        generate(model, speech_like(1.0), sampler=SamplerConfig(steps=1))


# ---- progress and cancellation --------------------------------------------------------------


def test_progress_counts_every_step_up_to_the_total(model, audio):
    calls = []
    generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=6), device="cpu",
             progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert all(b > a for a, b in zip(done, done[1:])), done
    assert {t for _, t in calls} == {6}
    assert calls[-1] == (6, 6)
    assert len([d for d in done if d > 0]) == 6  # once per step


def test_progress_spans_all_windows_of_a_long_clip(model):
    calls = []
    result = generate(model, speech_like(2.0), sample_rate=16000, progress=lambda d, t: calls.append((d, t)), device="cpu",
                      sampler=SamplerConfig(steps=3, window_frames=30, overlap_frames=8))
    total = 3 * len(result.windows)
    assert len(result.windows) > 1
    done = [d for d, _ in calls]
    assert all(b >= a for a, b in zip(done, done[1:])), done
    assert {t for _, t in calls} == {total} and calls[-1] == (total, total)


def test_cancel_stops_generation_promptly(model, audio):
    asked, reported = [], []

    def cancel():
        asked.append(True)
        return len(asked) >= 3  # let two checks pass, then cancel

    with pytest.raises(GenerationCancelled):
        generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=50), device="cpu",
                 progress=lambda d, t: reported.append(d), cancel=cancel)
    assert len(asked) == 3  # raised on the first check that said stop
    assert reported == [0, 1]  # no step is reported after the cancel


def test_cancel_before_the_first_step_runs_no_step(model, audio):
    reported = []
    with pytest.raises(GenerationCancelled):
        generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=50), device="cpu",
                 progress=lambda d, t: reported.append(d), cancel=lambda: True)
    assert reported == []


def test_cancel_that_never_fires_does_not_change_the_result(model, audio):
    plain = run(model, audio, seed=5)
    watched = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=STEPS, seed=5), device="cpu",
                       cancel=lambda: False, progress=lambda d, t: None)
    np.testing.assert_array_equal(plain.offsets, watched.offsets)


# ---- sampler options ------------------------------------------------------------------------


def test_guidance_changes_the_result_and_zero_guidance_is_the_default(model, audio):
    default = generate(model, audio, sample_rate=16000, device="cpu", sampler=SamplerConfig(steps=STEPS))
    zero = run(model, audio, guidance=0.0)
    guided = run(model, audio, guidance=1.5)
    np.testing.assert_array_equal(default.offsets, zero.offsets)
    assert np.isfinite(guided.offsets).all()
    assert not np.allclose(guided.offsets, zero.offsets, atol=1e-4)


def test_ddim_runs_and_differs_from_the_official_update(model, audio):
    ddim = run(model, audio, method="ddim")
    official = run(model, audio, method="official")
    assert ddim.offsets.shape == official.offsets.shape and np.isfinite(ddim.offsets).all()
    assert not np.allclose(ddim.offsets, official.offsets, atol=1e-4)
    noisy_a, noisy_b = run(model, audio, method="ddim", eta=1.0, seed=9), run(model, audio, method="ddim", eta=1.0, seed=9)
    np.testing.assert_array_equal(noisy_a.offsets, noisy_b.offsets)  # fresh noise is seeded too


def test_more_steps_change_the_result(model, audio):
    assert not np.allclose(run(model, audio, steps=2).offsets, run(model, audio, steps=5).offsets, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [dict(), dict(method="ddim"), dict(method="ddim", eta=0.5, guidance=1.0, takes=2)],
    ids=["official", "ddim", "ddim-eta-guided-2takes"],
)
def test_the_fast_sampler_matches_the_reference_sampler(model, audio, options):
    fast = run(model, audio, seed=1, fast=True, **options).offsets
    reference = run(model, audio, seed=1, fast=False, **options).offsets
    assert np.abs(fast - reference).max() <= 1e-4 * np.abs(reference).max()


# ---- smoothing ------------------------------------------------------------------------------


def test_smooth_interior_keeps_the_ends_and_averages_three_frames_inside():
    x = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(0))
    y = smooth_interior(x.clone())  # may work in place; compare with the untouched input
    assert y.shape == x.shape
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, -1], x[:, -1])
    torch.testing.assert_close(y[:, 1:-1], (x[:, :-2] + x[:, 1:-1] + x[:, 2:]) / 3, atol=1e-6, rtol=0)
    short = torch.randn(1, 2, 6)
    assert torch.equal(smooth_interior(short.clone()), short)  # nothing interior to smooth


def test_generate_smooths_only_when_the_model_says_so(audio):
    smoothed_model, raw_model = tiny_model(seed=0, smooth_output=True), tiny_model(seed=0, smooth_output=False)
    for key, value in smoothed_model.export_state_dict().items():
        assert torch.equal(raw_model.export_state_dict()[key], value), key  # same weights
    smoothed = run(smoothed_model, audio, seed=4, takes=2).offsets
    raw = run(raw_model, audio, seed=4, takes=2).offsets
    np.testing.assert_array_equal(smoothed[:, 0], raw[:, 0])
    np.testing.assert_array_equal(smoothed[:, -1], raw[:, -1])
    np.testing.assert_allclose(smoothed[:, 1:-1], (raw[:, :-2] + raw[:, 1:-1] + raw[:, 2:]) / 3, atol=1e-6, rtol=0)
    assert not np.allclose(smoothed, raw, atol=1e-5)


# ---- long clips -----------------------------------------------------------------------------


def test_a_long_clip_is_generated_in_overlapping_windows_over_its_full_length(model):
    clip = speech_like(4.0)
    frames = model.num_frames(len(clip))
    result = run(model, clip, steps=3, seed=2, takes=2, window_frames=40, overlap_frames=10)
    assert result.offsets.shape == (2, frames, 20, 3) and np.isfinite(result.offsets).all()
    windows = result.windows
    assert len(windows) > 1
    assert windows[0][0] == 0 and windows[-1][1] == frames
    assert all(end - start == 40 for start, end in windows)
    for (_, prev_end), (start, _) in zip(windows, windows[1:]):
        assert prev_end - start >= 10  # neighbours overlap by at least the cross-fade
    covered = np.zeros(frames, bool)
    for start, end in windows:
        covered[start:end] = True
    assert covered.all()
    single = run(model, clip, steps=3, seed=3, window_frames=40, overlap_frames=10)
    np.testing.assert_allclose(result.offsets[1], single.offsets[0], atol=1e-6, rtol=0)  # takes stay seed + k


def test_a_clip_that_fits_in_one_window_is_not_affected_by_the_window_setting(model, audio):
    windowed = run(model, audio, seed=6, window_frames=40, overlap_frames=10)
    plain = run(model, audio, seed=6)
    assert windowed.windows == plain.windows == ((0, 35),)
    np.testing.assert_array_equal(windowed.offsets, plain.offsets)
