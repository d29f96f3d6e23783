"""Attention biases and the periodic positional encoding of the official denoiser.

All tables are cheap to build, so they are made on demand for the T frames at
hand rather than precomputed for `max_len` and sliced (the values are identical).
"""
from __future__ import annotations

import math

import torch


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi head slopes: geometric for a power of two, the usual interleave otherwise."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def period_bias(num_frames: int, num_heads: int, period: int) -> torch.Tensor:
    """Self-attention bias S, shape (H, T, T), without the condition-token columns.

    Past keys (j <= i) step down every `period` frames counted from the query;
    future keys step down one frame later: floor((j - i - 1) / p). That asymmetry
    is the official behaviour and the released weights depend on it.
    """
    i = torch.arange(num_frames).unsqueeze(1)  # (T, 1) query frame
    j = torch.arange(num_frames).unsqueeze(0)  # (1, T) key frame
    distance = torch.where(j <= i, torch.div(i - j, period, rounding_mode="floor"), torch.div(j - i - 1, period, rounding_mode="floor"))
    return -alibi_slopes(num_heads).view(-1, 1, 1) * distance.to(torch.float32)  # (H, T, T)


def alignment_mask(num_frames: int) -> torch.Tensor:
    """Cross-attention mask without the condition columns: True = blocked.
    Motion frame i sees only audio frame i."""
    return ~torch.eye(num_frames, dtype=torch.bool)  # (T, T)


def periodic_encoding(num_frames: int, dim: int, period: int) -> torch.Tensor:
    """Sinusoidal encoding of (frame mod period), shape (T, dim)."""
    position = torch.arange(period, dtype=torch.float32).unsqueeze(1)  # (p, 1)
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(period, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table[torch.arange(num_frames) % period]  # (T, dim)


def timestep_features(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal diffusion-step features, cos half first (diffusers flip_sin_to_cos,
    downscale_freq_shift=0). timesteps (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    angles = timesteps.to(torch.float32).unsqueeze(1) * freqs.unsqueeze(0)  # (N, half)
    features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        features = torch.nn.functional.pad(features, (0, 1))
    return features
