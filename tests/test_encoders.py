"""Speech encoders: local transformers directories load without the hub and reproduce
the original model; both weight-norm naming generations load; the feature count and
the feature -> motion-rate resampling are exact; and any `SpeechEncoder` plugs in."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vendor_model.config import EncoderConfig, SamplerConfig
from vendor_model.encoders import SpeechEncoder, Wav2Vec2Encoder, load_encoder_dir, resample_features
from vendor_model.model import DiffSpeaker
from vendor_model.pipeline import generate

from .conftest import TINY_ENCODER, speech_like, tiny_config, tiny_model

OLD_G = "encoder.pos_conv_embed.conv.weight_g"
OLD_V = "encoder.pos_conv_embed.conv.weight_v"
NEW_G = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
NEW_V = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"


@pytest.fixture(scope="module")
def waveform() -> torch.Tensor:
    return torch.from_numpy(speech_like(0.5, seed=1)).unsqueeze(0)  # (1, 8000)


def _hidden(model, waveform):
    with torch.no_grad():
        return model(waveform).last_hidden_state


def _encode(encoder, waveform):
    with torch.no_grad():
        return encoder.eval()(waveform)


def _fresh_encoder(seed: int) -> Wav2Vec2Encoder:
    torch.manual_seed(seed)
    return Wav2Vec2Encoder(EncoderConfig(hf_config=dict(TINY_ENCODER))).eval()


# ---- load_encoder_dir ------------------------------------------------------------------------


def test_a_saved_wav2vec2_directory_loads_and_reproduces_the_model(tmp_path, waveform):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    original = Wav2Vec2Model(Wav2Vec2Config(**TINY_ENCODER)).eval()
    original.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    encoder = load_encoder_dir(tmp_path)
    assert isinstance(encoder, Wav2Vec2Encoder)
    assert encoder.cfg.kind == "wav2vec2" and encoder.feature_dim == TINY_ENCODER["hidden_size"]
    torch.testing.assert_close(_encode(encoder, waveform), _hidden(original, waveform), atol=1e-5, rtol=0)


def test_a_ctc_checkpoint_loads_without_its_prefix_and_head(tmp_path, waveform):
    from safetensors.torch import load_file
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    torch.manual_seed(1)
    ctc = Wav2Vec2ForCTC(Wav2Vec2Config(**TINY_ENCODER, vocab_size=12)).eval()
    ctc.save_pretrained(tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert {"lm_head.weight", "lm_head.bias"} <= keys
    assert all(k.startswith(("wav2vec2.", "lm_head.")) for k in keys)  # the shape this test is about

    encoder = load_encoder_dir(tmp_path)
    torch.testing.assert_close(_encode(encoder, waveform), _hidden(ctc.wav2vec2, waveform), atol=1e-5, rtol=0)


def test_a_saved_hubert_directory_loads_and_reproduces_the_model(tmp_path, waveform):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(2)
    original = HubertModel(HubertConfig(**TINY_ENCODER)).eval()
    original.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hubert"

    encoder = load_encoder_dir(tmp_path)
    assert encoder.cfg.kind == "hubert"
    torch.testing.assert_close(_encode(encoder, waveform), _hidden(original, waveform), atol=1e-5, rtol=0)


def test_pytorch_model_bin_is_used_when_there_is_no_safetensors_file(tmp_path, waveform):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(3)
    original = Wav2Vec2Model(Wav2Vec2Config(**TINY_ENCODER)).eval()
    original.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(original.state_dict(), tmp_path / "pytorch_model.bin")

    encoder = load_encoder_dir(tmp_path)
    torch.testing.assert_close(_encode(encoder, waveform), _hidden(original, waveform), atol=1e-5, rtol=0)


def test_safetensors_is_preferred_over_pytorch_model_bin(tmp_path, waveform):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(4)
    original = Wav2Vec2Model(Wav2Vec2Config(**TINY_ENCODER)).eval()
    original.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a checkpoint")  # would fail if it were read

    encoder = load_encoder_dir(tmp_path)
    torch.testing.assert_close(_encode(encoder, waveform), _hidden(original, waveform), atol=1e-5, rtol=0)


def test_a_directory_without_config_json_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _fresh_encoder(0).model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_encoder_dir(tmp_path)


def test_a_directory_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2", **TINY_ENCODER}))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        load_encoder_dir(tmp_path)


def test_an_unsupported_model_type_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper", **TINY_ENCODER}))
    with pytest.raises(ValueError, match="whisper"):
        load_encoder_dir(tmp_path)


# ---- Wav2Vec2Encoder.load_weights ------------------------------------------------------------


def test_old_and_new_weight_norm_names_load_to_the_same_encoder(waveform):
    source = _fresh_encoder(0)
    new_names = dict(source.model.state_dict())
    assert NEW_G in new_names and NEW_V in new_names
    old_names = dict(new_names)
    old_names[OLD_G], old_names[OLD_V] = old_names.pop(NEW_G), old_names.pop(NEW_V)

    from_new, from_old = _fresh_encoder(1), _fresh_encoder(2)
    assert not torch.allclose(_encode(from_new, waveform), _encode(source, waveform))  # the load must matter
    from_new.load_weights(new_names, "new.safetensors")
    from_old.load_weights(old_names, "old.ckpt")

    expected = _encode(source, waveform)
    assert torch.equal(_encode(from_new, waveform), expected)
    assert torch.equal(_encode(from_old, waveform), expected)


def test_task_head_weights_are_ignored():
    state = dict(_fresh_encoder(0).model.state_dict())
    state["lm_head.weight"] = torch.zeros(12, TINY_ENCODER["hidden_size"])
    state["quantizer.codevectors"] = torch.zeros(1, 4, 8)
    _fresh_encoder(1).load_weights(state, "pretraining.bin")  # no error


def test_a_missing_key_is_named():
    state = dict(_fresh_encoder(0).model.state_dict())
    del state["encoder.layers.1.attention.k_proj.weight"]
    with pytest.raises(ValueError, match=r"missing \['encoder\.layers\.1\.attention\.k_proj\.weight'\]"):
        _fresh_encoder(1).load_weights(state, "broken.safetensors")


def test_an_unknown_key_is_named_with_the_source():
    state = dict(_fresh_encoder(0).model.state_dict())
    state["encoder.layers.7.surprise.weight"] = torch.zeros(2)
    with pytest.raises(ValueError, match=r"broken\.safetensors.*unknown \['encoder\.layers\.7\.surprise\.weight'\]"):
        _fresh_encoder(1).load_weights(state, "broken.safetensors")


def test_a_missing_old_style_weight_norm_key_is_reported():
    state = dict(_fresh_encoder(0).model.state_dict())
    state[OLD_V] = state.pop(NEW_V)
    del state[NEW_G]  # weight_g absent
    with pytest.raises(ValueError, match=r"missing \['encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0'\]"):
        _fresh_encoder(1).load_weights(state, "old.ckpt")


def test_a_weight_of_the_wrong_shape_is_a_value_error_naming_it():
    state = dict(_fresh_encoder(0).model.state_dict())
    state["encoder.layers.0.feed_forward.intermediate_dense.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="intermediate_dense"):
        _fresh_encoder(1).load_weights(state, "other_size.safetensors")


# ---- feature counts and resampling -----------------------------------------------------------


def test_num_features_matches_the_encoder_output():
    encoder = _fresh_encoder(0)
    audio = torch.from_numpy(speech_like(1.25))
    for num_samples in (400, 719, 720, 1000, 16000, 19200):
        produced = _encode(encoder, audio[:num_samples].unsqueeze(0)).shape[1]
        assert produced == encoder.num_features(num_samples), num_samples


def test_num_features_at_known_lengths():
    encoder = _fresh_encoder(0)
    assert [encoder.num_features(n) for n in (0, 399, 400, 16000, 19200)] == [0, 0, 1, 49, 59]


def test_motion_frames_follow_the_official_formula():
    model = tiny_model()  # 30 fps
    assert model.num_frames(19200) == 35  # 59 features -> int(59 / 50 * 30) = int(35.4)
    assert model.num_frames(16000) == 29  # 49 -> int(29.4)
    assert model.num_frames(1000) == 1  # 2 -> int(1.2)
    assert model.num_frames(400) == 0  # 1 -> int(0.6)
    for n in (1000, 8000, 16000, 19200, 48000):
        assert model.num_frames(n) == int(model.audio_encoder.num_features(n) / 50 * 30)
    assert tiny_model(fps=25, period=25).num_frames(19200) == int(59 / 50 * 25)


def test_resample_features_maps_endpoints_exactly_and_is_linear_between():
    ta, t, c = 59, 35, 5
    features = torch.randn(2, ta, c, generator=torch.Generator().manual_seed(0))
    out = resample_features(features, t)
    assert out.shape == (2, t, c)
    assert torch.equal(out[:, 0], features[:, 0]) and torch.equal(out[:, -1], features[:, -1])
    positions = np.arange(t) * (ta - 1) / (t - 1)  # align_corners: output i sits at i (Ta-1)/(T-1)
    for b in range(2):
        for ch in range(c):
            expected = np.interp(positions, np.arange(ta), features[b, :, ch].double().numpy())
            np.testing.assert_allclose(out[b, :, ch].numpy(), expected, atol=1e-5)


def test_resample_features_reproduces_a_linear_ramp_and_upsamples():
    ramp = torch.linspace(-1.0, 3.0, 10).view(1, 10, 1).repeat(1, 1, 3)
    for frames in (4, 10, 25):
        out = resample_features(ramp, frames)
        torch.testing.assert_close(out[0, :, 0], torch.linspace(-1.0, 3.0, frames), atol=1e-6, rtol=0)
    assert torch.equal(resample_features(ramp, 10), ramp)  # same length: identity


# ---- the plug-in seam ------------------------------------------------------------------------


class FrameEncoder(SpeechEncoder):
    """A toy front-end: non-overlapping frames of `hop` samples, log-energy compressed
    and projected to `dim` features."""

    def __init__(self, dim: int = 16, hop: int = 320, fps: float = 50.0, seed: int = 0):
        super().__init__()
        self.feature_dim, self.hop, self.feature_fps = dim, hop, fps
        torch.manual_seed(seed)
        self.proj = nn.Linear(hop, dim)
        self.calls = 0

    def num_features(self, num_samples: int) -> int:
        return num_samples // self.hop

    def forward(self, waveform, attention_mask=None):
        self.calls += 1
        n = self.num_features(waveform.shape[1])
        frames = waveform[:, : n * self.hop].reshape(waveform.shape[0], n, self.hop)
        return torch.log1p(self.proj(frames).abs())


def _toy_model(encoder: FrameEncoder) -> DiffSpeaker:
    cfg = tiny_config(encoder=EncoderConfig(hf_config={**TINY_ENCODER, "hidden_size": encoder.feature_dim}))
    torch.manual_seed(0)
    model = DiffSpeaker(cfg, encoder=encoder).eval()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.05)
    return model


def test_a_custom_speech_encoder_drives_generation():
    toy = FrameEncoder()
    model = _toy_model(toy)
    assert model.audio_encoder is toy
    assert not any("Wav2Vec2" in type(m).__name__ for m in model.modules())
    audio = speech_like(1.0)
    result = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=3), device="cpu")
    frames = int((16000 // 320) / 50 * 30)
    assert frames == 30 and model.num_frames(16000) == frames
    assert result.offsets.shape == (1, frames, 20, 3) and np.isfinite(result.offsets).all()
    assert toy.calls == 1

    other = _toy_model(FrameEncoder(seed=1))  # same denoiser, different front-end weights
    changed = generate(other, audio, sample_rate=16000, sampler=SamplerConfig(steps=3), device="cpu")
    assert not np.allclose(changed.offsets, result.offsets, atol=1e-4)


def test_a_custom_encoder_rate_sets_the_motion_length():
    toy = FrameEncoder(hop=160, fps=100.0)
    model = _toy_model(toy)
    audio = speech_like(1.1)
    result = generate(model, audio, sample_rate=16000, sampler=SamplerConfig(steps=2, guidance=0.5), device="cpu")
    assert result.num_frames == int((len(audio) // 160) / 100 * 30) == 33
    assert toy.calls == 2  # guidance also encodes the audio-free (silent) clip
