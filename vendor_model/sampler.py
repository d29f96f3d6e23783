"""Sampling loops: the straightforward reference path and the folded fast path.

Both run the same `NoiseSchedule.plan`; they differ only in where the state lives.

reference: x lives in the wide offset space (N, T, F). Every step projects F -> d,
    runs the transformer and projects d -> F, as the official code does.
fast: every step is linear in (x0_hat, x_t, noise) and x0_hat = W_out h + b_out is
    linear in the transformer's output h, so the next input W_in x_prev + b_in can be
    computed in the width-d latent with A = W_in W_out (d, d). Only the initial noise
    and the final output touch the wide space. Constant keys/values (style token,
    audio memory) are computed once, and since each frame's cross-attention sees only
    three keys (style, step, its own audio frame), the cross-attention is evaluated
    per frame with the query/output projections folded into precomputed vectors.

The batch is organised as G condition groups (1, or 2 with audio-free guidance:
conditional then unconditional) times K takes. The audio memory is (G, B, T, d) with
B = K (one clip per batch row) or B = 1 (all takes share one clip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .denoiser import Denoiser, attention_biases
from .schedule import StepPlan

ProgressFn = Callable[[int, int], None]  # (steps done, steps total)
CancelFn = Callable[[], bool]  # True = stop as soon as possible
NoiseFn = Callable[[], torch.Tensor]  # fresh (K, T, F) noise for eta > 0


class GenerationCancelled(Exception):
    """Raised inside the sampling loop when the cancel callback returns True."""


@dataclass
class SamplingJob:
    """Everything one sampling run needs besides the network."""

    memory: torch.Tensor  # (G, B, T, d) conditional [+ unconditional] audio memory, B in {1, K}
    style: torch.Tensor  # (K,) style index per take
    init_noise: torch.Tensor  # (K, T, F)
    plan: list[StepPlan]
    guidance: float | torch.Tensor = 0.0  # one scale, or (T,) one per frame
    noise: NoiseFn | None = None  # needed when any step has std > 0
    progress: ProgressFn | None = None
    cancel: CancelFn | None = None
    progress_offset: int = 0  # steps already done by earlier windows
    progress_total: int | None = None

    @property
    def groups(self) -> int:
        return self.memory.shape[0]

    def guide(self, pred: torch.Tensor) -> torch.Tensor:
        """Combine group predictions (G*K, T, ...) -> (K, T, ...): x0 = x0_c + s (x0_c - x0_u),
        s per frame when guidance is a (T,) tensor (a per-frame scale commutes with the
        per-frame linear head, so the fast path may guide in the latent)."""
        if self.groups == 1:
            return pred
        cond, uncond = pred.chunk(2, dim=0)
        scale = self.guidance
        if isinstance(scale, torch.Tensor):
            scale = scale.to(cond).view(1, -1, *([1] * (cond.dim() - 2)))  # (1, T, 1...)
        return cond + scale * (cond - uncond)

    def fresh_noise(self, plan: StepPlan) -> torch.Tensor | None:
        if plan.std == 0.0:
            return None
        if self.noise is None:
            raise ValueError("this sampler plan adds noise (eta > 0) but no noise source was given")
        return self.noise()

    def tick(self, done: int) -> None:
        if self.cancel is not None and self.cancel():
            raise GenerationCancelled("generation was cancelled")
        if self.progress is not None:
            total = self.progress_total or len(self.plan)
            self.progress(self.progress_offset + done, total)


def _batched(job: SamplingJob) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory and style expanded to the full G*K batch."""
    groups, _, t, d = job.memory.shape
    memory = job.memory.expand(groups, job.style.shape[0], t, d).reshape(-1, t, d)  # (G*K, T, d)
    return memory, job.style.repeat(job.groups)


@torch.no_grad()
def sample_reference(denoiser: Denoiser, job: SamplingJob) -> torch.Tensor:
    """Straightforward loop in the wide space. Returns offsets (K, T, F)."""
    memory, style = _batched(job)
    x = job.init_noise
    job.tick(0)
    for i, step in enumerate(job.plan):
        timesteps = torch.full((style.shape[0],), step.timestep, dtype=torch.long, device=x.device)
        x0 = job.guide(denoiser(x.repeat(job.groups, 1, 1), memory, timesteps, style))
        noise = job.fresh_noise(step)
        x = step.a * x0 + step.b * x if step.b else step.a * x0
        if noise is not None:
            x = x + step.std * noise
        job.tick(i + 1)
    return x


class _FoldedCrossAttention:
    """One layer's cross-attention with everything constant over the loop precomputed.

    For key j and head h the score of frame query y (after norm2) is
    y . (Wq_h^T k_jh) * scale + bq_h . k_jh * scale, and the output is
    sum_h sum_j w_hj (O_h v_jh) + b_o; so each key is stored as a score vector
    (H, d), a score offset (H,) and an output vector (H, d).
    """

    def __init__(self, layer, memory: torch.Tensor, style_tokens: torch.Tensor):
        attn = layer.multihead_attn
        self.norm = layer.norm2
        self.heads = attn.num_heads
        d = attn.out_proj.in_features
        self.head_dim = d // self.heads
        self.scale = self.head_dim**-0.5
        (self.wq, self.bq), (self.wk, self.bk), (self.wv, self.bv) = (attn.projection(i) for i in range(3))
        self.out_weight = attn.out_proj.weight  # (d, d)
        self.out_bias = attn.out_proj.bias
        self.audio = self.fold(memory)  # each (G, B, T, H, ...)
        self.style = self.fold(style_tokens)  # each (K, H, ...)

    def fold(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # tokens (..., d) -> score vectors (..., H, d), score offsets (..., H), output vectors (..., H, d)
        shape = tokens.shape[:-1]
        keys = F.linear(tokens, self.wk, self.bk).view(*shape, self.heads, self.head_dim)
        values = F.linear(tokens, self.wv, self.bv).view(*shape, self.heads, self.head_dim)
        wq = self.wq.view(self.heads, self.head_dim, -1)  # (H, hd, d)
        score_vec = torch.einsum("...he,hed->...hd", keys, wq) * self.scale
        score_off = (keys * self.bq.view(self.heads, self.head_dim)).sum(-1) * self.scale
        out_vec = torch.einsum("...he,dhe->...hd", values, self.out_weight.view(-1, self.heads, self.head_dim))
        return score_vec, score_off, out_vec

    def __call__(self, x: torch.Tensor, time_token: torch.Tensor) -> torch.Tensor:
        # x (G, K, T, d); time_token (d,) shared by the whole batch
        y = self.norm(x)
        a_vec, a_off, a_out = self.audio  # (G, B, T, H, d), (G, B, T, H), (G, B, T, H, d)
        s_vec, s_off, s_out = self.style  # (K, H, d), (K, H), (K, H, d)
        t_vec, t_off, t_out = self.fold(time_token)  # (H, d), (H,), (H, d)
        audio_scores = (y.unsqueeze(-2) @ a_vec.transpose(-1, -2)).squeeze(-2) + a_off  # (G, K, T, H)
        scores = torch.stack(
            [
                torch.einsum("gktd,khd->gkth", y, s_vec) + s_off[:, None],
                torch.einsum("gktd,hd->gkth", y, t_vec) + t_off,
                audio_scores,
            ],
            dim=-1,
        )  # (G, K, T, H, 3)
        w = scores.softmax(dim=-1)
        out = (
            torch.einsum("gkth,khd->gktd", w[..., 0], s_out)
            + torch.einsum("gkth,hd->gktd", w[..., 1], t_out)
            + (w[..., 2].unsqueeze(-2) @ a_out).squeeze(-2)
        )
        return x + out + self.out_bias


@torch.no_grad()
def sample_fast(denoiser: Denoiser, job: SamplingJob) -> torch.Tensor:
    """Folded loop in the width-d latent. Same result as `sample_reference` up to
    float rounding. Returns offsets (K, T, F)."""
    cfg = denoiser.cfg
    groups, takes = job.groups, job.style.shape[0]
    num_frames, d = job.memory.shape[2], cfg.latent_dim
    w_in, b_in = denoiser.vertice_map.weight, denoiser.vertice_map.bias  # (d, F), (d,)
    w_out, b_out = denoiser.motion_decoder.weight, denoiser.motion_decoder.bias  # (F, d), (F,)
    head = w_in @ w_out  # (d, d): the wide head seen from the next step's input
    head_bias = w_in @ b_out  # (d,)

    layers = denoiser.transformer_decoder.layers
    style_tokens = denoiser.obj_vector(job.style).split(d, dim=-1)  # L x (K, d)
    cross = [_FoldedCrossAttention(layer, job.memory, s) for layer, s in zip(layers, style_tokens)]
    self_bias, _ = attention_biases(num_frames, cfg.num_heads, cfg.period, device=job.memory.device)
    pe = denoiser.positional(num_frames)

    z = F.linear(job.init_noise, w_in, b_in)  # (K, T, d) latent of the current sample
    # The current sample in the wide space is x = beta * x_init + g W_out^T + gamma * b_out + extra_noise.
    beta, gamma = 1.0, 0.0
    g = torch.zeros_like(z)
    extra_noise = None
    job.tick(0)
    for i, step in enumerate(job.plan):
        timesteps = torch.full((1,), step.timestep, dtype=torch.long, device=z.device)
        time_tokens = denoiser.time_embedding(
            denoiser.time_proj_features(timesteps)
        ).split(d, dim=-1)  # L x (1, d)
        x = (z + pe).repeat(groups, 1, 1)  # (G*K, T, d)
        for layer, cross_l, style_l, time_l in zip(layers, cross, style_tokens, time_tokens):
            cond = torch.stack([style_l, time_l.expand(takes, -1)], dim=1).repeat(groups, 1, 1)  # (G*K, 2, d)
            x = layer.self_attention_block(x, cond, self_bias)
            x = cross_l(x.view(groups, takes, num_frames, d), time_l[0]).view(groups * takes, num_frames, d)
            x = layer.feed_forward_block(x)
        h = job.guide(x)  # (K, T, d); x0_hat = h W_out^T + b_out
        noise = job.fresh_noise(step)
        z = step.a * (F.linear(h, head) + head_bias) + step.b * (z - b_in) + b_in
        beta, gamma = step.b * beta, step.a + step.b * gamma
        g = step.a * h + step.b * g
        if extra_noise is not None:
            extra_noise = step.b * extra_noise
        if noise is not None:
            z = z + step.std * F.linear(noise, w_in)
            extra_noise = step.std * noise if extra_noise is None else extra_noise + step.std * noise
        job.tick(i + 1)

    out = F.linear(g, w_out) + gamma * b_out  # (K, T, F)
    if beta != 0.0:
        out = out + beta * job.init_noise
    if extra_noise is not None:
        out = out + extra_noise
    return out
