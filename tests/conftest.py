"""Shared test fixtures. Everything is CPU-only and made by the tests, except the
official golden tensors and research meshes, which are read in place from ../shared
and skipped (with the reason) when that folder is absent."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "fixtures" / "official_golden"
TOPOLOGIES = SHARED / "fixtures" / "topologies"

torch.set_num_threads(2)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture not available: {path}")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN)


@pytest.fixture(scope="session")
def topologies_dir() -> Path:
    return _require(TOPOLOGIES)


TINY_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "mask_time_prob": 0.05,
    "layerdrop": 0.1,
}


def tiny_config(**overrides):
    """A few-thousand-parameter model with the official structure (4 heads, period 30)."""
    from vendor_model.config import EncoderConfig, ModelConfig

    base = dict(
        n_vertices=20, fps=30, latent_dim=32, ff_size=64, num_heads=4, num_layers=1, period=30,
        num_styles=3, smooth_output=True, encoder=EncoderConfig(hf_config=dict(TINY_ENCODER)),
    )
    return ModelConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides):
    """Tiny model with random weights, including a non-zero output head."""
    from vendor_model.model import DiffSpeaker

    torch.manual_seed(seed)
    model = DiffSpeaker(tiny_config(**overrides)).eval()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.05)
    torch.nn.init.normal_(model.denoiser.motion_decoder.bias, std=0.05)
    return model


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """An amplitude-modulated harmonic tone with a little noise: enough to drive the encoder."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((180, 360, 720), start=1))
    return (0.3 * envelope * tone + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def golden_b_config() -> dict:
    return json.loads((GOLDEN / "B_tiny_pipeline_config.json").read_text())


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """16-bit mono WAV written with the standard library (bpy 4.2 has no audaspace)."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return Path(path)


def tone(seconds: float, frequency: float = 220.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
