"""DiffSpeaker: speech encoder + denoiser, with the official state_dict key names
(`audio_encoder.*` as in transformers' Wav2Vec2Model, `denoiser.*` as in the
official Adpt_Bias_Denoiser), and the training loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .denoiser import Denoiser
from .encoders import SpeechEncoder, build_encoder, resample_features
from .phones import IGNORE
from .schedule import NoiseSchedule


@dataclass
class TrainingBatch:
    audio: torch.Tensor  # (B, S) normalised 16 kHz waveform, zero-padded
    audio_mask: torch.Tensor  # (B, S) 1 = real sample
    offsets: torch.Tensor  # (B, T, F) ground-truth vertices minus template, zero-padded
    frame_mask: torch.Tensor  # (B, T) 1 = real frame
    style: torch.Tensor  # (B,) style index
    phones: torch.Tensor | None = None  # (B, Tp) phone labels at the encoder's rate, IGNORE = none

    def to(self, device: torch.device) -> TrainingBatch:
        return TrainingBatch(**{k: None if v is None else v.to(device) for k, v in vars(self).items()})


def position_velocity_loss(
    pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor, weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Official masked MSE of positions plus masked MSE of frame-to-frame velocities.
    Padded elements count in the denominator, as in the official losses. weights (F,)
    multiplies each coordinate's squared errors (None: all equal, as official)."""
    m = frame_mask.to(pred.dtype).unsqueeze(-1)  # (B, T, 1)
    pred, target = pred * m, target * m
    w = 1.0 if weights is None else weights.to(pred.dtype)
    position = (w * (pred - target) ** 2).mean()
    velocity = (w * ((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])) ** 2).mean()
    return {"position": position, "velocity": velocity, "total": position + velocity}


def lip_gap_loss(
    pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor,
) -> torch.Tensor:
    """Mean absolute error of the lip gap: the offset of the lower lip's centre from the upper
    lip's (x, y, z), per frame. pred, target (B, T, F); frame_mask (B, T); upper, lower: vertex ids.

    An absolute error is minimised by the median of what the model cannot tell apart, a squared
    one by the mean: where a closure is likely but not certain, the mean of "shut" and "a little
    open" is a mouth that never shuts, the median is a closure."""
    def gap(offsets: torch.Tensor) -> torch.Tensor:  # (B, T, F) -> (B, T, 3)
        vertices = offsets.view(*offsets.shape[:2], -1, 3)
        return vertices[:, :, lower].mean(2) - vertices[:, :, upper].mean(2)

    error = (gap(pred) - gap(target)).abs().sum(-1)  # (B, T)
    m = frame_mask.to(pred.dtype)
    return (error * m).sum() / m.sum().clamp(min=1.0)


class DiffSpeaker(nn.Module):
    def __init__(self, cfg: ModelConfig, encoder: SpeechEncoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = encoder if encoder is not None else build_encoder(cfg.encoder)
        self.denoiser = Denoiser(cfg)
        self.schedule = NoiseSchedule(cfg.diffusion)

    def num_frames(self, num_samples: int) -> int:
        """Motion frames for a clip, as the official demo computes them: int(Ta / 50 * fps)."""
        return int(self.audio_encoder.num_features(num_samples) / self.audio_encoder.feature_fps * self.cfg.fps)

    def audio_memory(self, waveform: torch.Tensor, num_frames: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) normalised waveform -> (B, T, d) cross-attention memory at the motion rate."""
        features = self.audio_encoder(waveform, attention_mask)  # (B, Ta, C)
        return self.denoiser.memory(resample_features(features, num_frames))

    # ---- weights under the official key names -------------------------------------------

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        inner = getattr(self.audio_encoder, "model", self.audio_encoder)
        out = {f"audio_encoder.{k}": v for k, v in inner.state_dict().items()}
        out.update({f"denoiser.{k}": v for k, v in self.denoiser.state_dict().items()})
        return out

    @classmethod
    def from_weights(cls, cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor], source: str) -> "DiffSpeaker":
        """Build a model straight from checkpoint weights. The modules are created on the
        meta device and take the checkpoint's tensors as they are, so no time is spent
        initialising ~100M random parameters that would be overwritten at once."""
        with torch.device("meta"):
            model = cls(cfg)
        model.load_weights(state_dict, source, assign=True)
        return model

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str, assign: bool = False) -> None:
        """Strict load of `audio_encoder.*` + `denoiser.*` weights; every key must be used."""
        encoder = {k[len("audio_encoder."):]: v for k, v in state_dict.items() if k.startswith("audio_encoder.")}
        denoiser = {k[len("denoiser."):]: v for k, v in state_dict.items() if k.startswith("denoiser.")}
        denoiser.pop("PPE.pe", None)  # deterministic buffer, rebuilt on the fly
        stray = sorted(k for k in state_dict if not k.startswith(("audio_encoder.", "denoiser.")))
        if stray:
            raise ValueError(f"{source}: unknown weights {stray[:5]}{' ...' if len(stray) > 5 else ''}")
        expected = self.denoiser.state_dict()
        missing = sorted(set(expected) - set(denoiser))
        unknown = sorted(set(denoiser) - set(expected))
        wrong_shape = sorted(k for k in set(expected) & set(denoiser) if expected[k].shape != denoiser[k].shape)
        if missing or unknown or wrong_shape:
            details = [f"missing denoiser.{k}" for k in missing[:5]] + [f"unknown denoiser.{k}" for k in unknown[:5]]
            details += [f"denoiser.{k} has shape {tuple(denoiser[k].shape)}, expected {tuple(expected[k].shape)}" for k in wrong_shape[:5]]
            raise ValueError(f"{source} does not fit the model configuration: " + "; ".join(details))
        self.denoiser.load_state_dict(denoiser, strict=True, assign=assign)
        self.audio_encoder.load_weights(encoder, source, assign=assign)

    # ---- training -------------------------------------------------------------------------

    def training_loss(
        self,
        batch: TrainingBatch,
        audio_drop_prob: float = 0.0,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,  # (F,) per-coordinate loss weights; None = official
        phone_head: nn.Module | None = None,  # encoder features (C) -> phone logits; None = official
        lips: tuple[torch.Tensor, torch.Tensor] | None = None,  # (upper, lower) lip vertex ids; None = official
    ) -> dict[str, torch.Tensor]:
        """One step of the official diffusion training objective (x0 prediction).

        audio_drop_prob zeroes the waveform of that fraction of samples, so the model
        also learns the audio-free prediction used by guidance. Offsets are diffused and the
        losses measured in units of offsets x cfg.motion_scale (metres when 1, as official).
        With a phone_head, "phone" is also returned: the cross-entropy of the phone labels
        (batch.phones) predicted frame by frame from the speech encoder's output, which asks
        the encoder to say where each phone is (not part of "total"; the caller weighs it).
        With lips, "lip_gap" is also returned (lip_gap_loss; likewise not in "total").
        """
        audio = batch.audio
        keep = torch.ones(audio.shape[0], device=audio.device, dtype=audio.dtype)
        if audio_drop_prob > 0:
            keep = (torch.rand(audio.shape[0], device=audio.device) >= audio_drop_prob).to(audio.dtype)
            audio = audio * keep.unsqueeze(1)
        num_frames = batch.offsets.shape[1]
        features = self.audio_encoder(audio, batch.audio_mask.long())  # (B, Ta, C)
        memory = self.denoiser.memory(resample_features(features, num_frames))  # (B, T, d)
        if noise is None:
            noise = torch.randn_like(batch.offsets)
        if timesteps is None:
            timesteps = torch.randint(0, self.cfg.diffusion.num_train_timesteps, (audio.shape[0],), device=audio.device)
        x_t = self.schedule.add_noise(batch.offsets * self.cfg.motion_scale, noise, timesteps)
        frame_mask = batch.frame_mask.bool()
        pred = self.denoiser(x_t, memory, timesteps, batch.style, frame_mask)
        target = batch.offsets * self.cfg.motion_scale
        losses = position_velocity_loss(pred, target, frame_mask, weights)
        if lips is not None:
            losses["lip_gap"] = lip_gap_loss(pred, target, frame_mask, *lips)
        if phone_head is not None:
            losses["phone"] = phone_loss(phone_head(features), batch.phones, keep.bool())
        return losses


def phone_loss(logits: torch.Tensor, phones: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled frames. logits (B, Ta, P); phones (B, Tp) labels,
    cut or IGNORE-padded to Ta; keep (B,) False for clips whose audio was dropped (silent
    input: their labels would be wrong)."""
    if phones is None:
        raise ValueError("the phone loss needs phone labels: build the dataset with phone_fps")
    labels = torch.full(logits.shape[:2], IGNORE, dtype=torch.long, device=logits.device)
    width = min(labels.shape[1], phones.shape[1])
    labels[:, :width] = phones[:, :width]
    labels[~keep] = IGNORE
    # The mean over labelled frames, written without a data-dependent branch (no device sync);
    # a batch whose clips were all dropped gives 0 and keeps the graph.
    total = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)
