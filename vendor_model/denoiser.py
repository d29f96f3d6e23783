"""The DiffSpeaker denoiser: a pre-norm transformer decoder with biased conditional attention.

Parameter names follow the official `Adpt_Bias_Denoiser`, so an official state_dict
loads 1:1 (under the `denoiser.` prefix). Notation: N batch, T frames, F = 3V features,
d width, H heads, L layers. The style and diffusion-step tokens are prepended to the
keys/values of both attentions (never to the queries), with zero bias, never masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .masks import alignment_mask, period_bias, periodic_encoding, timestep_features


class PackedAttention(nn.Module):
    """Multi-head attention with `nn.MultiheadAttention`'s parameter layout
    (packed q/k/v rows in `in_proj_weight`), so official weights load directly."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def projection(self, which: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the q (0), k (1) or v (2) projection."""
        d = self.out_proj.in_features
        return self.in_proj_weight[which * d : (which + 1) * d], self.in_proj_bias[which * d : (which + 1) * d]

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (N, H, t, d/H)

    def forward(self, query: torch.Tensor, key_value: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # query (N, Tq, d); key_value (N, Tk, d); bias broadcastable to (N, H, Tq, Tk), -inf = blocked
        q = self.split_heads(F.linear(query, *self.projection(0)))
        k = self.split_heads(F.linear(key_value, *self.projection(1)))
        v = self.split_heads(F.linear(key_value, *self.projection(2)))
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)  # (N, H, Tq, d/H)
        n, _, tq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(n, tq, -1))


class DecoderLayer(nn.Module):
    """Pre-LN layer: biased self-attention, aligned cross-attention, GELU feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        d = cfg.latent_dim
        self.self_attn = PackedAttention(d, cfg.num_heads, cfg.dropout)
        self.multihead_attn = PackedAttention(d, cfg.num_heads, cfg.dropout)
        self.linear1 = nn.Linear(d, cfg.ff_size)
        self.linear2 = nn.Linear(cfg.ff_size, d)
        self.norm1 = nn.LayerNorm(d, eps=1e-5)
        self.norm2 = nn.LayerNorm(d, eps=1e-5)
        self.norm3 = nn.LayerNorm(d, eps=1e-5)
        self.dropout = nn.Dropout(cfg.dropout)

    def self_attention_block(self, x: torch.Tensor, cond: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # x (N, T, d); cond (N, 2, d); bias (N or 1, H, T, T+2)
        normed = self.norm1(x)
        return x + self.dropout(self.self_attn(normed, torch.cat([cond, normed], dim=1), bias))

    def cross_attention_block(self, x: torch.Tensor, cond: torch.Tensor, memory: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # memory (N, T, d); bias (N or 1, 1, T, T+2)
        return x + self.dropout(self.multihead_attn(self.norm2(x), torch.cat([cond, memory], dim=1), bias))

    def feed_forward_block(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.gelu(self.linear1(self.norm3(x))))
        return x + self.dropout(self.linear2(hidden))


class TransformerDecoder(nn.Module):
    """Holds the layers under the official name `transformer_decoder.layers.<i>`; no final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))


class TimestepEmbedding(nn.Module):
    """diffusers' TimestepEmbedding: Linear, SiLU, Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


def attention_biases(num_frames: int, num_heads: int, period: int, frame_mask: torch.Tensor | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive biases for self- and cross-attention, condition columns first, on `device`.

    frame_mask (N, T) bool, True = real frame; None = no padding.
    Returns self_bias (N|1, H, T, T+2) and cross_bias (N|1, 1, T, T+2).
    """
    blocked = float("-inf")
    self_bias = F.pad(period_bias(num_frames, num_heads, period), (2, 0)).unsqueeze(0).to(device)  # (1, H, T, T+2)
    blocked_audio = F.pad(alignment_mask(num_frames), (2, 0), value=False).to(device)  # (T, T+2)
    cross_bias = torch.zeros(blocked_audio.shape, device=device).masked_fill(blocked_audio, blocked)[None, None]  # (1, 1, T, T+2)
    if frame_mask is not None:
        padded_keys = F.pad(~frame_mask, (2, 0), value=False)[:, None, None, :]  # (N, 1, 1, T+2)
        self_bias = self_bias.masked_fill(padded_keys, blocked)
        cross_bias = cross_bias.masked_fill(padded_keys, blocked)
    return self_bias, cross_bias


class Denoiser(nn.Module):
    """Predicts clean offsets x0 from noisy offsets x_t, the audio memory, the step and the style."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, layers = cfg.latent_dim, cfg.num_layers
        self.audio_feature_map = nn.Linear(cfg.audio_dim, d)
        self.vertice_map = nn.Linear(cfg.nfeats, d)
        self.transformer_decoder = TransformerDecoder(cfg)
        self.time_embedding = TimestepEmbedding(cfg.audio_dim, d * layers)
        self.motion_decoder = nn.Linear(d, cfg.nfeats)
        self.obj_vector = nn.Embedding(cfg.num_styles, d * layers)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        # Official initialisation: the head starts at zero, so an untrained model outputs the template.
        nn.init.zeros_(self.motion_decoder.weight)
        nn.init.zeros_(self.motion_decoder.bias)

    def memory(self, audio_features: torch.Tensor) -> torch.Tensor:
        """Cross-attention memory: (N, T, C) audio features at the motion rate -> (N, T, d)."""
        return self.audio_feature_map(audio_features)

    def time_proj_features(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sinusoidal step features; official width is the audio feature width, not d."""
        return timestep_features(timesteps, self.cfg.audio_dim)  # (N, C)

    def condition_tokens(self, timesteps: torch.Tensor, style: torch.Tensor) -> list[torch.Tensor]:
        """[style, step] token pair for each layer: L tensors of shape (N, 2, d)."""
        time_token = self.time_embedding(self.time_proj_features(timesteps))  # (N, d*L)
        style_token = self.obj_vector(style)  # (N, d*L)
        tokens = torch.stack([style_token, time_token], dim=1)  # (N, 2, d*L)
        return list(tokens.split(self.cfg.latent_dim, dim=-1))

    def positional(self, num_frames: int) -> torch.Tensor:
        """(T, d) on the denoiser's device."""
        return periodic_encoding(num_frames, self.cfg.latent_dim, self.cfg.period).to(self.vertice_map.weight.device)

    def forward(
        self,
        x_t: torch.Tensor,  # (N, T, F) noisy offsets
        memory: torch.Tensor,  # (N, T, d) from `memory()`
        timesteps: torch.Tensor,  # (N,) int
        style: torch.Tensor,  # (N,) int style index
        frame_mask: torch.Tensor | None = None,  # (N, T) bool, True = real frame
    ) -> torch.Tensor:  # (N, T, F) predicted clean offsets
        num_frames = x_t.shape[1]
        x = self.embed_dropout(self.vertice_map(x_t) + self.positional(num_frames))
        self_bias, cross_bias = attention_biases(num_frames, self.cfg.num_heads, self.cfg.period, frame_mask, x_t.device)
        for layer, cond in zip(self.transformer_decoder.layers, self.condition_tokens(timesteps, style)):
            x = layer.self_attention_block(x, cond, self_bias)
            x = layer.cross_attention_block(x, cond, memory, cross_bias)
            x = layer.feed_forward_block(x)
        return self.motion_decoder(x)
