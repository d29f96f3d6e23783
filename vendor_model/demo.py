"""The README's main job on built-in defaults, with no downloads.

Until the trained default model ships, this runs the complete pipeline (audio
file -> speech encoder -> 50-step diffusion sampler -> offsets file) on a small
model with RANDOM weights, clearly labelled as such: it proves the machinery
end to end, it does not lip-sync.
"""
from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelBundle, load_bundle, save_bundle
from .fileio import save_npz
from .config import SAMPLE_RATE, EncoderConfig, ModelConfig, SamplerConfig
from .model import DiffSpeaker
from .pipeline import generate

BANNER = "DEMO MODEL WITH RANDOM WEIGHTS: shows the pipeline end to end; it does not lip-sync."

_DEMO_ENCODER = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "conv_dim": [32] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False, "feat_extract_norm": "group", "do_stable_layer_norm": False,
    "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
}


def demo_speech(seconds: float = 3.0) -> np.ndarray:
    """A syllable-like buzz: a voiced harmonic source with a 4 Hz syllable envelope."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.5
    return (0.2 * envelope * source).astype(np.float32)


def demo_template(n_vertices: int = 400) -> np.ndarray:
    """Points on a unit-scale ellipsoid (a stand-in head, 10 cm wide)."""
    i = np.arange(n_vertices) + 0.5
    polar, azimuth = np.arccos(1 - 2 * i / n_vertices), np.pi * (1 + 5**0.5) * i
    unit = np.stack([np.cos(azimuth) * np.sin(polar), np.cos(polar), np.sin(azimuth) * np.sin(polar)], axis=1)
    return (unit * np.array([0.08, 0.11, 0.09])).astype(np.float32)


def demo_bundle(seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        n_vertices=400, fps=30, latent_dim=64, ff_size=128, num_heads=4, period=30, num_styles=2,
        smooth_output=True, encoder=EncoderConfig(hf_config=dict(_DEMO_ENCODER)),
    )
    model = DiffSpeaker(cfg)
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=1e-3)  # the official head starts at zero
    return ModelBundle(model.eval(), demo_template(), ("demo_a", "demo_b"), {"note": BANNER})


def _write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


def run_demo(output: Path) -> Path:
    print(BANNER)
    output.mkdir(parents=True, exist_ok=True)
    audio_path, model_path, result_path = output / "speech.wav", output / "demo_model.safetensors", output / "offsets.npz"
    _write_wav(audio_path, demo_speech())
    save_bundle(demo_bundle(), model_path)

    started = time.perf_counter()
    bundle = load_bundle(model_path)
    result = generate(bundle.model, audio_path, style=0, sampler=SamplerConfig(steps=50, seed=0, takes=2), template=bundle.template)
    elapsed = time.perf_counter() - started

    save_npz(result_path, offsets=result.offsets, template=bundle.template, fps=np.int64(result.fps), seeds=np.array(result.seeds))
    motion = np.linalg.norm(result.offsets, axis=-1)  # (takes, T, V)
    print(f"audio     {audio_path} ({result.duration_s:.2f} s)")
    print(f"model     {model_path}")
    print(f"offsets   {result_path}: shape {result.offsets.shape} (takes, frames, vertices, xyz) at {result.fps} fps")
    print(f"motion    mean |offset| {motion.mean() * 1000:.3f} mm, {len(result.seeds)} takes (seeds {list(result.seeds)})")
    print(f"time      {elapsed:.2f} s for load + 2 takes x 50 steps")
    return result_path
