"""Checkpoints: our safetensors format round-trips exactly; official Lightning
checkpoints import strictly, with clear errors for anything that does not fit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vendor_model.checkpoint import (
    ModelBundle, import_official, infer_encoder_config, load_any, load_bundle, save_bundle,
)
from vendor_model.config import SamplerConfig
from vendor_model.pipeline import generate

from .conftest import TINY_ENCODER, speech_like, tiny_model


def lightning_checkpoint(model, path, **extra):
    """A file shaped like a PyTorch-Lightning 1.9 checkpoint of the official model."""
    state = model.export_state_dict()
    state["denoiser.PPE.pe"] = torch.zeros(1, 30, model.cfg.latent_dim)  # official buffer, ignored
    # Official checkpoints come from transformers 4.26: weight-norm keys named weight_g / weight_v.
    for new, old in (("parametrizations.weight.original0", "weight_g"), ("parametrizations.weight.original1", "weight_v")):
        state[f"audio_encoder.encoder.pos_conv_embed.conv.{old}"] = state.pop(f"audio_encoder.encoder.pos_conv_embed.conv.{new}")
    torch.save({"epoch": 8999, "global_step": 10, "pytorch-lightning_version": "1.9.0", "state_dict": state, **extra}, path)
    return state


def test_bundle_round_trip_is_exact(tmp_path):
    model = tiny_model()
    template = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    bundle = ModelBundle(model, template, ("calm", "lively", "wide"), {"licence": "CC0"})
    path = save_bundle(bundle, tmp_path / "m.safetensors")
    loaded = load_bundle(path)
    assert loaded.cfg == model.cfg
    assert loaded.style_names == ("calm", "lively", "wide")
    assert loaded.info == {"licence": "CC0"}
    np.testing.assert_array_equal(loaded.template, template)
    for key, value in model.export_state_dict().items():
        assert torch.equal(loaded.model.export_state_dict()[key], value), key
    audio = speech_like(1.0)
    a = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=5, seed=3))
    b = generate(loaded.model, audio, sample_rate=16000, sampler=SamplerConfig(steps=5, seed=3))
    # Weights are bit-identical (above); BLAS may pick other kernels for differently aligned memory.
    np.testing.assert_allclose(a.offsets, b.offsets, atol=1e-6)


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_text("previous contents")
    save_bundle(ModelBundle(tiny_model(), None, ("a", "b", "c")), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    assert load_bundle(path).template is None


def test_style_lookup_by_name_and_index(tmp_path):
    bundle = ModelBundle(tiny_model(), None, ("calm", "lively", "wide"))
    assert bundle.style_index("lively") == 1 and bundle.style_index(2) == 2 and bundle.style_index("0") == 0
    with pytest.raises(ValueError, match="available: calm, lively, wide"):
        bundle.style_index("angry")
    with pytest.raises(ValueError, match="does not exist"):
        bundle.style_index(7)


def test_non_model_files_are_refused_with_a_reason(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        load_bundle(text)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a DiffSpeaker model"):
        load_bundle(other)
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing.safetensors")


def test_official_checkpoint_imports_with_old_weight_norm_names(tmp_path):
    model = tiny_model(n_vertices=5023)  # VOCASET topology selects the vocaset preset
    ckpt = tmp_path / "diffspeaker_wav2vec2_vocaset.ckpt"
    lightning_checkpoint(model, ckpt, optimizer_states=[{"state": {0: {"exp_avg": torch.ones(3)}}}])
    bundle = import_official(ckpt, encoder_hf_config={"num_attention_heads": 4})
    assert bundle.cfg.n_vertices == 5023 and bundle.cfg.fps == 30 and bundle.cfg.smooth_output
    assert bundle.cfg.latent_dim == 32 and bundle.cfg.num_styles == 3
    for key, value in model.export_state_dict().items():
        assert torch.equal(bundle.model.export_state_dict()[key], value), key
    audio = speech_like(0.8)
    a = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=3))
    b = generate(bundle.model, audio, sample_rate=16000, sampler=SamplerConfig(steps=3))
    np.testing.assert_allclose(a.offsets, b.offsets, atol=1e-6)


def test_encoder_architecture_is_read_from_the_weights():
    state = tiny_model().export_state_dict()
    hf = infer_encoder_config(state, {"num_attention_heads": 4}).hf_config
    for key in ("hidden_size", "num_hidden_layers", "intermediate_size", "conv_dim", "conv_kernel",
                "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "conv_bias", "feat_extract_norm"):
        assert hf[key] == TINY_ENCODER[key], key


def test_unknown_or_missing_keys_are_named(tmp_path):
    model = tiny_model(n_vertices=5023)
    ckpt = tmp_path / "extra.ckpt"
    state = lightning_checkpoint(model, ckpt)
    state["denoiser.surprise.weight"] = torch.zeros(2)
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(ValueError, match="unknown denoiser.surprise.weight"):
        import_official(ckpt, encoder_hf_config={"num_attention_heads": 4})
    del state["denoiser.surprise.weight"]
    del state["denoiser.obj_vector.weight"]
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises((ValueError, KeyError), match="obj_vector"):
        import_official(ckpt, encoder_hf_config={"num_attention_heads": 4})


def test_custom_topology_needs_its_preset(tmp_path):
    ckpt = tmp_path / "custom.ckpt"
    lightning_checkpoint(tiny_model(n_vertices=20), ckpt)
    with pytest.raises(ValueError, match="neither VOCASET"):
        import_official(ckpt, encoder_hf_config={"num_attention_heads": 4})
    bundle = import_official(ckpt, preset_name="biwi", encoder_hf_config={"num_attention_heads": 4})
    assert bundle.cfg.fps == 25 and bundle.cfg.n_vertices == 20


def test_a_file_without_denoiser_weights_is_not_a_diffspeaker_checkpoint(tmp_path):
    ckpt = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(2)}}, ckpt)
    with pytest.raises(ValueError, match="not a DiffSpeaker checkpoint"):
        load_any(ckpt)


def test_golden_official_weights_import_through_the_same_path(golden_dir, tmp_path):
    """Fixture B's weights, saved the way Lightning saves them, import and reproduce its output."""
    config = json.loads((golden_dir / "B_tiny_pipeline_config.json").read_text())
    state = torch.load(golden_dir / "B_tiny_pipeline_weights.pt", weights_only=True)["state_dict"]
    ckpt = tmp_path / "b.ckpt"
    torch.save({"state_dict": state, "epoch": 1}, ckpt)
    bundle = import_official(ckpt, preset_name="vocaset", encoder_hf_config={"num_attention_heads": 4})
    assert bundle.cfg.encoder.hf_config["hidden_size"] == config["w2v_tiny_config"]["hidden_size"]
    io = np.load(golden_dir / "B_tiny_pipeline_io.npz")
    result = generate(bundle.model, io["raw_audio_16k"], sample_rate=16000, style=2, sampler=SamplerConfig(seed=777))
    np.testing.assert_allclose(result.offsets.reshape(1, 35, 60) + io["template"], io["predict_out"], atol=1e-5, rtol=1e-5)


def test_half_precision_files_are_half_the_size_and_load_as_float32(tmp_path):
    model = tiny_model()
    full = save_bundle(ModelBundle(model, None, ("a", "b", "c")), tmp_path / "full.safetensors")
    half = save_bundle(ModelBundle(model, None, ("a", "b", "c")), tmp_path / "half.safetensors", torch.float16)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded = load_bundle(half).model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    for key, value in model.export_state_dict().items():
        torch.testing.assert_close(loaded.export_state_dict()[key], value.half().float(), rtol=0, atol=0)
