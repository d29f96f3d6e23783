"""Speech encoders: waveform (16 kHz, normalised) -> feature frames.

The denoiser only sees `SpeechEncoder.forward`'s output resampled to the motion
rate, so another front-end (log-mel, phoneme posteriors) plugs in by subclassing
`SpeechEncoder` and registering its `kind` in `build_encoder`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import AUDIO_FEATURE_FPS, EncoderConfig


class SpeechEncoder(nn.Module):
    """Interface every speech front-end implements."""

    feature_fps: float = AUDIO_FEATURE_FPS
    feature_dim: int

    def num_features(self, num_samples: int) -> int:
        """Feature frames produced for `num_samples` input samples."""
        raise NotImplementedError

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) normalised waveform -> (B, Ta, C) features."""
        raise NotImplementedError


# Weight-norm parameter names of the positional convolution: transformers 4.26 with
# nn.utils.weight_norm (official checkpoints) vs newer transformers with parametrizations.
_WEIGHT_NORM_NAMES = {
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}
# Keys of hub checkpoints that belong to task heads, not to the bare encoder.
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "dropout_features.")


class Wav2Vec2Encoder(SpeechEncoder):
    """wav2vec 2.0 or HuBERT (base models are computationally identical and share
    parameter names), run through transformers' Wav2Vec2Model as the official code does."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        from transformers import Wav2Vec2Config, Wav2Vec2Model

        self.cfg = cfg
        self.feature_dim = cfg.feature_dim
        self.model = Wav2Vec2Model(Wav2Vec2Config(**cfg.hf_config))

    def num_features(self, num_samples: int) -> int:
        length = num_samples
        for kernel, stride in zip(self.cfg.hf_config["conv_kernel"], self.cfg.hf_config["conv_stride"]):
            length = (length - kernel) // stride + 1
        return max(length, 0)

    def forward(self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(waveform, dtype=torch.long)
        return self.model(waveform, attention_mask=attention_mask).last_hidden_state  # (B, Ta, C)

    def freeze_feature_extractor(self) -> None:
        """The official training keeps the convolutional front-end frozen."""
        self.model.feature_extractor._freeze_parameters()

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str, assign: bool = False) -> None:
        """Strictly load encoder weights named as in Wav2Vec2Model, from either
        transformers generation; raise a clear error naming missing/unknown keys."""
        expected = self.model.state_dict()
        old_names = {v: k for k, v in _WEIGHT_NORM_NAMES.items()}
        mapped = {}
        for key, value in state_dict.items():
            if key.startswith(_HEAD_PREFIXES):
                continue
            new_key = _WEIGHT_NORM_NAMES.get(key, key)
            if new_key not in expected:  # the reverse direction: parametrizations -> weight_g/v
                new_key = old_names.get(key, key)
            if new_key in mapped:
                raise ValueError(f"speech encoder weights in {source} hold {key} under both its old and new name")
            mapped[new_key] = value
        missing, unknown = sorted(set(expected) - set(mapped)), sorted(set(mapped) - set(expected))
        wrong = [f"{k} {tuple(mapped[k].shape)} (expected {tuple(expected[k].shape)})"
                 for k in sorted(set(expected) & set(mapped)) if mapped[k].shape != expected[k].shape]
        if missing or unknown or wrong:
            raise ValueError(
                f"speech encoder weights in {source} do not fit the configured architecture: "
                f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
                f"unknown {unknown[:5]}{' ...' if len(unknown) > 5 else ''}, "
                f"wrong shape {wrong[:5]}{' ...' if len(wrong) > 5 else ''}"
            )
        self.model.load_state_dict(mapped, strict=True, assign=assign)


def build_encoder(cfg: EncoderConfig) -> SpeechEncoder:
    if cfg.kind in ("wav2vec2", "hubert"):
        return Wav2Vec2Encoder(cfg)
    if cfg.kind == "logmel":
        from .frontends import LogMelEncoder

        return LogMelEncoder(cfg)
    if cfg.kind == "hama":
        from .frontends import PhonemePosteriorEncoder

        return PhonemePosteriorEncoder(cfg)
    raise ValueError(f"unknown speech encoder kind {cfg.kind!r}; expected wav2vec2, hubert, logmel or hama")


_CONFIG_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "do_stable_layer_norm",
    "num_conv_pos_embeddings", "num_conv_pos_embedding_groups", "layer_norm_eps", "mask_time_prob",
    "mask_time_length", "layerdrop", "hidden_dropout", "attention_dropout", "activation_dropout", "feat_proj_dropout",
)


def encoder_config_from_hf(hf_config: Mapping) -> EncoderConfig:
    """EncoderConfig from a transformers config.json dict (wav2vec2 or hubert)."""
    kind = hf_config.get("model_type", "wav2vec2")
    if kind not in ("wav2vec2", "hubert"):
        raise ValueError(f"unsupported speech model type {kind!r}; expected wav2vec2 or hubert")
    return EncoderConfig(kind=kind, hf_config={k: hf_config[k] for k in _CONFIG_FIELDS if k in hf_config})


def load_encoder_dir(path: str | Path) -> Wav2Vec2Encoder:
    """Build an encoder from a local transformers model directory (config.json plus
    model.safetensors or pytorch_model.bin), without any network access."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in speech model directory {path}")
    cfg = encoder_config_from_hf(json.loads(config_file.read_text()))
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        weights = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        weights = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path}")
    # ForCTC / pretraining checkpoints nest the encoder under the model-type prefix.
    prefix = f"{cfg.kind}."
    weights = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in weights.items()}
    encoder = Wav2Vec2Encoder(cfg)
    encoder.load_weights(weights, str(path))
    return encoder.eval()


def resample_features(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, Ta, C) at the encoder rate -> (B, T, C) at the motion rate: linear
    interpolation with align_corners=True, as the official code does."""
    return F.interpolate(features.transpose(1, 2), size=num_frames, mode="linear", align_corners=True).transpose(1, 2)
