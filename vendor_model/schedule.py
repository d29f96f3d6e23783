"""Noise schedule and the DDIM step, written as a linear map of (x0, x_t, noise).

Every sampler step here has the form  x_prev = a * x0_hat + b * x_t + std * noise,
with scalars (a, b, std) that depend only on the step. Keeping it in that form lets
the fast sampler fold the network's wide input/output projections into the latent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import DiffusionConfig


@dataclass(frozen=True)
class StepPlan:
    timestep: int
    a: float  # coefficient of the predicted clean sample x0_hat
    b: float  # coefficient of the current sample x_t
    std: float  # standard deviation of the fresh noise (0 when eta = 0)


class NoiseSchedule:
    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        n = cfg.num_train_timesteps
        cpu = dict(dtype=torch.float32, device="cpu")  # plain numbers, even when built under a meta/cuda device context
        if cfg.beta_schedule == "scaled_linear":
            betas = torch.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, n, **cpu) ** 2
        elif cfg.beta_schedule == "linear":
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, n, **cpu)
        else:
            raise ValueError(f"unknown beta_schedule {cfg.beta_schedule!r}")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # (1000,) float32, as diffusers computes it
        if cfg.rescale_betas_zero_snr:  # shift and stretch sqrt(abar) so it runs from its first value to exactly 0
            root = alphas_cumprod.sqrt()
            first, last = root[0], root[-1]
            alphas_cumprod = ((root - last) * first / (first - last)) ** 2
        self.alphas_cumprod = alphas_cumprod

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0) for per-sample timesteps (N,); x0, noise (N, ...)."""
        abar = self.alphas_cumprod.to(x0.device)[timesteps].view(-1, *[1] * (x0.dim() - 1))
        return abar**0.5 * x0 + (1.0 - abar) ** 0.5 * noise

    def timesteps(self, steps: int) -> list[int]:
        """leading (diffusers-0.11 DDIM): 981, 961, ..., 1 for 50 steps;
        trailing: 999, 979, ..., 19, so the first step is the one trained on pure noise."""
        n = self.cfg.num_train_timesteps
        if self.cfg.timestep_spacing == "trailing":
            return [int(t) - 1 for t in np.round(np.arange(n, 0, -n / steps))]
        ratio = n // steps
        return [int(t) + self.cfg.steps_offset for t in (np.arange(steps) * ratio).round()[::-1]]

    def plan(self, steps: int, method: str = "official", eta: float = 0.0) -> list[StepPlan]:
        """Coefficients of every step of the sampling loop.

        official: the diffusers <= 0.14 update with prediction_type="sample", whose
            "direction" term multiplies x0_hat where textbook DDIM uses the implied noise.
            The released checkpoints were tuned with it.
        ddim: textbook DDIM (Song et al.), eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t).
        """
        acp = self.alphas_cumprod
        timesteps = self.timesteps(steps)
        plans = []
        for t, t_prev in zip(timesteps, timesteps[1:] + [-1]):
            abar_t = acp[t]
            abar_prev = acp[t_prev] if t_prev >= 0 else acp[0]  # set_alpha_to_one=False
            variance = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
            std = eta * variance**0.5
            direction = (1 - abar_prev - std**2).clamp(min=0) ** 0.5  # exactly 0 at eta = 1 from abar_t = 0; rounding must not make it NaN
            if method == "official":
                a, b = abar_prev**0.5 + direction, torch.tensor(0.0)
            elif method == "ddim":
                a = abar_prev**0.5 - direction * abar_t**0.5 / (1 - abar_t) ** 0.5
                b = direction / (1 - abar_t) ** 0.5
            else:
                raise ValueError(f"unknown sampling method {method!r}; use 'official' or 'ddim'")
            plans.append(StepPlan(t, float(a), float(b), float(std)))
        return plans
