"""Equivalence with the official implementation: every tensor in
../shared/fixtures/official_golden/ is reproduced at atol = rtol = 1e-5."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model.config import EncoderConfig, SamplerConfig, preset
from vendor_model.denoiser import Denoiser, attention_biases
from vendor_model.encoders import resample_features
from vendor_model.masks import alignment_mask, period_bias, periodic_encoding, timestep_features
from vendor_model.model import DiffSpeaker, position_velocity_loss
from vendor_model.pipeline import generate, smooth_interior
from vendor_model.sampler import SamplingJob, sample_fast, sample_reference
from vendor_model.schedule import NoiseSchedule
from vendor_model.audio import normalize_waveform

from .conftest import golden_b_config

TOL = dict(atol=1e-5, rtol=1e-5)


def close(actual, expected):
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(actual, np.asarray(expected), **TOL)


@pytest.fixture(scope="module")
def fixture_a(golden_dir):
    io = {k: torch.from_numpy(v) for k, v in np.load(golden_dir / "A_vocaset_dims_io.npz").items()}
    weights = torch.load(golden_dir / "A_vocaset_dims_weights.pt", weights_only=True)["state_dict"]
    denoiser = Denoiser(preset("vocaset", n_vertices=32)).eval()  # nfeats 96, everything else official
    denoiser.load_state_dict({k.removeprefix("denoiser."): v for k, v in weights.items()}, strict=True)
    return denoiser, io


@pytest.fixture(scope="module")
def masks(golden_dir):
    return dict(np.load(golden_dir / "masks_reference.npz"))


@pytest.mark.parametrize("period", [30, 25])
def test_self_attention_bias_matches_official_table(masks, period):
    close(period_bias(64, 4, period), masks[f"alibi_p{period}_h4_T64"])


def test_alignment_mask_and_periodic_encoding_match(masks):
    close(alignment_mask(64).float(), masks["mem_mask_T64"])
    close(periodic_encoding(64, 512, 30), masks["ppe_p30_d512_first64"])


def test_full_masks_with_condition_columns(fixture_a):
    _, io = fixture_a
    self_bias, cross_bias = attention_biases(64, 4, 30)
    close(self_bias.expand(2, -1, -1, -1).reshape(8, 64, 66), io["tgt_mask"])  # batch-major n*H + h
    assert torch.equal(torch.isinf(cross_bias[0, 0]), io["memory_mask"])


def test_condition_tokens_and_input_embedding(fixture_a):
    denoiser, io = fixture_a
    style = io["id_onehot"].argmax(-1)
    with torch.no_grad():
        close(timestep_features(io["timesteps"], 768), io["time_proj"])
        (tokens,) = denoiser.condition_tokens(io["timesteps"], style)
        close(tokens[:, 0], io["style_token"])
        close(tokens[:, 1], io["time_token"])
        close(denoiser.vertice_map(io["x_t"]) + denoiser.positional(64), io["vertice_embed_plus_ppe"])


def test_audio_resampling_and_memory(fixture_a):
    denoiser, io = fixture_a
    resized = resample_features(io["audio_feat_50fps"], int(io["num_frames"]))
    close(resized, io["audio_feat_resized"])
    with torch.no_grad():
        close(denoiser.memory(resized), io["hidden_state"])


def test_single_denoiser_call(fixture_a):
    denoiser, io = fixture_a
    with torch.no_grad():
        out = denoiser(io["x_t"], io["hidden_state"], io["timesteps"], io["id_onehot"].argmax(-1))
    close(out, io["denoiser_out"])


def test_padded_batch(fixture_a):
    denoiser, io = fixture_a
    frame_mask = io["vertice_attention_padded"].bool()
    with torch.no_grad():
        out = denoiser(io["x_t"], io["hidden_state"], io["timesteps"], io["id_onehot"].argmax(-1), frame_mask)
    close(out, io["denoiser_out_padded"])


def test_training_loss(fixture_a):
    denoiser, io = fixture_a
    schedule = NoiseSchedule(preset("vocaset").diffusion)
    offsets = io["train_gt_vertices"] - io["train_template"][:, None]
    noisy = schedule.add_noise(offsets, io["train_noise"], io["train_timesteps"])
    close(noisy, io["train_noisy_x0"])
    with torch.no_grad():
        pred = denoiser(noisy, io["hidden_state"], io["train_timesteps"], io["id_onehot"].argmax(-1))
    close(pred + io["train_template"][:, None], io["train_pred_vertices"])
    loss = position_velocity_loss(pred, offsets, torch.ones(2, 64, dtype=torch.bool))
    close(loss["position"], io["train_loss_vertice"])
    close(loss["velocity"], io["train_loss_velocity"])
    close(loss["total"], io["train_loss_total"])


def test_schedule_and_timesteps(fixture_a):
    _, io = fixture_a
    schedule = NoiseSchedule(preset("vocaset").diffusion)
    close(schedule.alphas_cumprod, io["alphas_cumprod"])
    assert schedule.timesteps(50) == io["sampler_timesteps"].tolist()



@pytest.mark.parametrize("path", [sample_reference, sample_fast], ids=["reference", "fast"])
def test_full_50_step_sampler(fixture_a, path):
    denoiser, io = fixture_a
    schedule = NoiseSchedule(preset("vocaset").diffusion)
    job = SamplingJob(
        memory=io["hidden_state"].unsqueeze(0),  # (G=1, B=2, T, d): two different clips
        style=io["id_onehot"].argmax(-1),
        init_noise=io["sampler_init_noise"],
        plan=schedule.plan(50, "official"),
    )
    out = path(denoiser, job)
    close(out, io["sampler_out_raw"])
    final = smooth_interior(out + io["sampler_template"][:, None])
    close(final, io["sampler_out_final"])


def test_sampler_trajectory(fixture_a):
    """The recorded intermediate steps: x0_hat and the next sample at iterations 0, 25, 49."""
    denoiser, io = fixture_a
    schedule = NoiseSchedule(preset("vocaset").diffusion)
    plan = schedule.plan(50, "official")
    style = io["id_onehot"].argmax(-1)
    x = io["sampler_init_noise"]
    recorded = {int(i): k for k, i in enumerate(io["sampler_traj_step_indices"])}
    with torch.no_grad():
        for i, step in enumerate(plan):
            x0 = denoiser(x, io["hidden_state"], torch.full((2,), step.timestep), style)
            x = step.a * x0
            if i in recorded:
                close(x0, io["sampler_traj_x0_pred"][recorded[i]])
                close(x, io["sampler_traj_prev_sample"][recorded[i]])


@pytest.fixture(scope="module")
def fixture_b(golden_dir):
    config = golden_b_config()
    overrides = config["denoiser_overrides"]
    cfg = preset(
        "vocaset",
        n_vertices=overrides["nfeats"] // 3,
        latent_dim=overrides["latent_dim"],
        ff_size=overrides["ff_size"],
        encoder=EncoderConfig(hf_config=config["w2v_tiny_config"]),
    )
    assert cfg.audio_dim == overrides["audio_encoded_dim"]
    model = DiffSpeaker(cfg)
    weights = torch.load(golden_dir / "B_tiny_pipeline_weights.pt", weights_only=True)["state_dict"]
    model.load_weights(weights, "fixture B")  # transformers-4.26 weight_g/weight_v names, mapped
    io = {k: torch.from_numpy(v) for k, v in np.load(golden_dir / "B_tiny_pipeline_io.npz").items()}
    return model.eval(), io


def test_waveform_normalisation(fixture_b):
    _, io = fixture_b
    close(normalize_waveform(io["raw_audio_16k"].numpy()), io["input_values"])


def test_speech_encoder_and_memory(fixture_b):
    model, io = fixture_b
    with torch.no_grad():
        close(model.audio_encoder(io["input_values"][None]), io["w2v_last_hidden_state"])
        assert model.num_frames(len(io["input_values"])) == int(io["num_frames"])
        close(model.audio_memory(io["input_values"][None], int(io["num_frames"])), io["hidden_state"])


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_end_to_end_prediction_from_waveform(fixture_b, fast):
    model, io = fixture_b
    result = generate(
        model, io["raw_audio_16k"].numpy(), sample_rate=16000, style=2,
        sampler=SamplerConfig(seed=int(io["sampler_seed"]), fast=fast), device="cpu",
    )
    assert result.offsets.shape == (1, 35, 20, 3)
    close(result.offsets.reshape(1, 35, 60) + io["template"].numpy(), io["predict_out"])


def test_seeded_noise_matches_official_draw(fixture_b):
    _, io = fixture_b
    generator = torch.Generator().manual_seed(int(io["sampler_seed"]))
    close(torch.randn((1, 35, 60), generator=generator), io["sampler_init_noise"])
