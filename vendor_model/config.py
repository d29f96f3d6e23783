"""Configuration dataclasses: what the network is, and how to sample from it.

`ModelConfig` describes the architecture and is stored inside every checkpoint.
`SamplerConfig` mirrors the options an artist sees (steps, guidance, seed, takes)
and is validated once, up front, by `SamplerConfig.validate`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

SAMPLE_RATE = 16_000  # Hz; every speech encoder here expects 16 kHz mono
AUDIO_FEATURE_FPS = 50  # wav2vec 2.0 / HuBERT emit one feature frame per 20 ms


def wav2vec2_base_config() -> dict[str, Any]:
    """Architecture of facebook/wav2vec2-base-960h and hubert-base-ls960 (identical
    for inference), written out so an official checkpoint loads with no hub access."""
    return {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "conv_dim": [512] * 7,
        "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
        "conv_stride": [5, 2, 2, 2, 2, 2, 2],
        "conv_bias": False,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "layer_norm_eps": 1e-5,
        "mask_time_prob": 0.05,
        "mask_time_length": 10,
        "layerdrop": 0.1,
        "hidden_dropout": 0.1,
        "attention_dropout": 0.1,
        "activation_dropout": 0.1,
        "feat_proj_dropout": 0.1,
    }


@dataclass(frozen=True)
class EncoderConfig:
    """The speech front-end. `kind` names the implementation in `encoders.py`;
    `hf_config` holds the transformers `Wav2Vec2Config` keyword arguments."""

    kind: Literal["wav2vec2", "hubert", "logmel", "hama"] = "wav2vec2"
    hf_config: dict[str, Any] = field(default_factory=wav2vec2_base_config)

    @property
    def feature_dim(self) -> int:
        return int(self.hf_config["hidden_size"])


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule shared by training and sampling (official values)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    steps_offset: int = 1  # diffusers `steps_offset`: timesteps are 981, 961, ..., 1 for 50 steps
    # Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed": the
    # official schedule keeps sqrt(abar) = 0.068 at t = 999, so training inputs still carry
    # 7 % of the motion where sampling starts from pure noise. On millimetre-scale lips the
    # model learns to read that residue instead of the audio, and from pure noise it makes a
    # compressed mouth. Rescaling to zero terminal SNR removes the residue; "trailing" spacing
    # then starts sampling at t = 999 (999, 979, ..., 19), the step trained on pure noise.
    rescale_betas_zero_snr: bool = False
    timestep_spacing: Literal["leading", "trailing"] = "leading"
    # The update this model is sampled with unless the caller picks one. The official one
    # feeds the model (sqrt(abar) + sqrt(1 - abar)) x0_hat instead of a noisy sample: harmless
    # in metres, where that input is ~0 next to unit noise, but with motion_scale 1000 it is a
    # feedback loop that diverges over 50 steps. Such models sample with textbook DDIM.
    sample_method: Literal["official", "ddim"] = "official"
    # The audio-free guidance scale this model is sampled with unless the caller picks one
    # (official name and default: 0, off). Only for models trained with the audio dropped.
    guidance_scale: float = 0.0

    def __post_init__(self) -> None:
        if self.timestep_spacing not in ("leading", "trailing"):
            raise ValueError(f"unknown timestep_spacing {self.timestep_spacing!r}; use 'leading' or 'trailing'")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the DiffSpeaker denoiser plus the facts needed to use it."""

    n_vertices: int
    fps: int  # motion frame rate of the training data (30 VOCASET, 25 BIWI)
    latent_dim: int = 512
    ff_size: int = 1024
    num_heads: int = 4
    num_layers: int = 1
    dropout: float = 0.1
    period: int = 30  # period of the positional encoding and the self-attention bias
    num_styles: int = 8
    max_len: int = 3000  # frames covered by the official bias tables
    smooth_output: bool = False  # 3-tap temporal smoothing of interior frames (VOCASET)
    # The denoiser works on offsets x motion_scale. 1 is official (metres). Millimetres (1000)
    # put the data at the noise's unit scale, so diffusion has signal to denoise and Adam's
    # steps (lr, eps) are not measured against millimetre-sized targets in metres.
    motion_scale: float = 1.0
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)

    @property
    def nfeats(self) -> int:
        return 3 * self.n_vertices

    @property
    def audio_dim(self) -> int:
        return self.encoder.feature_dim

    def __post_init__(self) -> None:
        if self.latent_dim % self.num_heads:
            raise ValueError(f"latent_dim {self.latent_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("n_vertices", "fps", "latent_dim", "ff_size", "num_heads", "num_layers", "period", "num_styles", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not (self.motion_scale > 0 and math.isfinite(self.motion_scale)):
            raise ValueError(f"motion_scale must be a positive number, got {self.motion_scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        encoder = EncoderConfig(**data.pop("encoder", {}))
        diffusion = DiffusionConfig(**data.pop("diffusion", {}))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(encoder=encoder, diffusion=diffusion, **data)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """The official configurations: `vocaset` (FLAME, 30 fps) and `biwi` (25 fps)."""
    presets = {
        "vocaset": dict(n_vertices=5023, fps=30, latent_dim=512, ff_size=1024, period=30, num_styles=8, smooth_output=True),
        "biwi": dict(n_vertices=23370, fps=25, latent_dim=1024, ff_size=2048, period=25, num_styles=6, smooth_output=False),
    }
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return ModelConfig(**{**presets[name], **overrides})


# Official training-subject order: the index is the one-hot style position.
OFFICIAL_STYLE_NAMES = {
    "vocaset": (
        "FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
        "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
        "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA",
    ),
    "biwi": ("F2", "F3", "F4", "M3", "M4", "M5"),
}


@dataclass(frozen=True)
class SamplerConfig:
    """How to draw samples: the options behind the artist's quality/seed/takes controls."""

    steps: int = 50
    method: Literal["official", "ddim"] | None = None  # None = the model's own (DiffusionConfig.sample_method)
    eta: float = 0.0  # DDIM stochasticity; 0 = deterministic given the initial noise
    # audio-free guidance scale s: x0 = x0_cond + s (x0_cond - x0_uncond); None = the model's
    # own (DiffusionConfig.guidance_scale)
    guidance: float | None = None
    # False: guidance fades to 0 in the clip's pauses (vendor_model.activity), where it would
    # push the lips past rest; True: every frame is guided, as the official code does.
    guide_pauses: bool = False
    seed: int | None = 0
    takes: int = 1  # several seeds (seed, seed+1, ...) sampled in one batch
    window_frames: int | None = None  # longest single window; None = the model's max_len
    overlap_frames: int | None = None  # cross-fade length between windows; None = one second
    fast: bool = True  # folded-projection sampler; False = straightforward reference path

    def validate(self, num_train_timesteps: int = 1000) -> "SamplerConfig":
        if not 1 <= self.steps <= num_train_timesteps:
            raise ValueError(f"steps must be between 1 and {num_train_timesteps}, got {self.steps}")
        if self.method not in (None, "official", "ddim"):
            raise ValueError(f"method must be 'official' or 'ddim', got {self.method!r}")
        if not (0.0 <= self.eta <= 1.0) or math.isnan(self.eta):
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.guidance is not None and (self.guidance < 0 or math.isnan(self.guidance)):
            raise ValueError(f"guidance must be >= 0, got {self.guidance}")
        if self.takes < 1:
            raise ValueError(f"takes must be at least 1, got {self.takes}")
        if self.window_frames is not None and self.window_frames < 2:
            raise ValueError(f"window_frames must be at least 2, got {self.window_frames}")
        if self.overlap_frames is not None and self.overlap_frames < 0:
            raise ValueError(f"overlap_frames must be >= 0, got {self.overlap_frames}")
        return self
