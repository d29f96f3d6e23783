"""One inference call: speech in, per-frame vertex offsets out.

    generate(model, "line.wav", style=2, sampler=SamplerConfig(steps=50, seed=7, takes=3))
        -> Generation(offsets (takes, T, V, 3) float32 at model fps, ...)

No global state: the random numbers come from one torch.Generator per take
(seed, seed + 1, ...), so take k is the same whether 1 or 5 takes are asked for,
and on every device (noise is drawn on the CPU).
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .activity import speech_activity
from .audio import AudioError, load_audio, normalize_waveform
from .config import SAMPLE_RATE, SamplerConfig
from .lip_closure import LipClosure
from .model import DiffSpeaker
from .sampler import CancelFn, GenerationCancelled, ProgressFn, SamplingJob, sample_fast, sample_reference
from .windowing import join_windows, plan_windows

__all__ = ["Generation", "GenerationCancelled", "generate", "pick_device", "smooth_interior"]


@dataclass(frozen=True)
class Generation:
    offsets: np.ndarray  # (takes, T, V, 3) float32, vertex offsets from the template
    fps: int  # frame rate of `offsets`
    seeds: tuple[int, ...]  # seed of each take
    style: int
    windows: tuple[tuple[int, int], ...]  # frame ranges generated separately (one unless the clip is long)
    lip_closures: tuple[int, ...] = ()  # p/b/m closures placed in each take (empty: lip closure was off)

    @property
    def num_frames(self) -> int:
        return self.offsets.shape[1]

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def pick_device(name: str = "auto") -> torch.device:
    """'auto' prefers CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(name)


def smooth_interior(offsets: torch.Tensor) -> torch.Tensor:
    """Official VOCASET post-processing: 3-tap moving average along time on frames
    1..T-2; the first and last frames keep their values. (K, T, F), in place."""
    if offsets.shape[1] >= 3:
        offsets[:, 1:-1] = (offsets[:, :-2] + offsets[:, 1:-1] + offsets[:, 2:]) / 3
    return offsets


class _TakeNoise:
    """Draws (K, T, F) noise with one CPU generator per take."""

    def __init__(self, seeds: list[int], num_frames: int, nfeats: int, device: torch.device):
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.shape = (1, num_frames, nfeats)
        self.device = device

    def resize(self, num_frames: int) -> None:
        self.shape = (1, num_frames, self.shape[2])

    def __call__(self) -> torch.Tensor:
        return torch.cat([torch.randn(self.shape, generator=g) for g in self.generators]).to(self.device)


def generate(
    model: DiffSpeaker,
    audio: str | Path | np.ndarray,
    *,
    style: int = 0,
    sampler: SamplerConfig = SamplerConfig(),
    sample_rate: int | None = None,
    template: np.ndarray | None = None,
    device: str | torch.device | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    init_noise: torch.Tensor | None = None,
    lip_closure: LipClosure | None = None,
) -> Generation:
    """Generate facial motion for a speech clip.

    audio: a file path or an array (then give `sample_rate`); any rate, mono or multichannel.
    template: optional (V, 3) mesh, only checked against the model's vertex count.
    init_noise: (takes, T, F) initial sample instead of seeded noise (for reproducing
        another implementation's run).
    lip_closure: shut the lips where the speech front-end hears p, b or m (see
        vendor_model.lip_closure; ModelBundle.lip_closure() gives the model's own). Needs a
        front-end that recognises phonemes (hama).
    progress(done, total) is called after every sampling step; cancel() returning True
    stops generation with GenerationCancelled.
    """
    cfg = model.cfg
    sampler = sampler.validate(cfg.diffusion.num_train_timesteps)
    if not 0 <= style < cfg.num_styles:
        raise ValueError(f"style {style} does not exist: this model has styles 0..{cfg.num_styles - 1}")
    if template is not None and np.shape(template) not in ((cfg.n_vertices, 3), (cfg.nfeats,)):
        raise ValueError(
            f"the template has shape {np.shape(template)} but the model animates {cfg.n_vertices} vertices "
            f"(expected ({cfg.n_vertices}, 3)); use a mesh with the model's topology (or retarget)"
        )
    bilabial_probability = getattr(model.audio_encoder, "bilabial_probability", None)
    if lip_closure is not None and bilabial_probability is None:
        raise ValueError(
            "lip closure needs a speech front-end that recognises phonemes (hama); this model listens through "
            f"{type(model.audio_encoder).__name__}. Generate with lip closure off."
        )
    device = pick_device(device or "auto") if not isinstance(device, torch.device) else device
    model = model.to(device).eval()

    waveform = normalize_waveform(load_audio(audio, sample_rate))
    num_frames = model.num_frames(len(waveform))
    if num_frames < 1:
        raise AudioError(f"the clip ({len(waveform) / SAMPLE_RATE:.2f} s) is too short to produce one frame of motion")

    window = sampler.window_frames or cfg.max_len
    overlap = sampler.overlap_frames if sampler.overlap_frames is not None else cfg.fps
    windows = plan_windows(num_frames, min(window, cfg.max_len), overlap)
    if init_noise is not None and len(windows) > 1:
        raise ValueError("init_noise can only be given for clips that fit in one window")

    base_seed = sampler.seed if sampler.seed is not None else secrets.randbelow(2**31)  # leaves torch RNG alone
    seeds = [base_seed + k for k in range(sampler.takes)]
    noise = _TakeNoise(seeds, num_frames, cfg.nfeats, device)
    style_ids = torch.full((sampler.takes,), style, dtype=torch.long, device=device)
    plan = model.schedule.plan(sampler.steps, sampler.method or cfg.diffusion.sample_method, sampler.eta)
    guidance = cfg.diffusion.guidance_scale if sampler.guidance is None else sampler.guidance
    run = sample_fast if sampler.fast else sample_reference
    frame_guidance = torch.full((num_frames,), float(guidance))  # (T,)
    if guidance > 0 and not sampler.guide_pauses:
        frame_guidance *= torch.from_numpy(speech_activity(waveform, cfg.fps, num_frames)).float()

    evidence_fps = getattr(model.audio_encoder, "feature_fps", cfg.fps)
    bilabial = np.zeros(round(len(waveform) * evidence_fps / SAMPLE_RATE) + 1)  # (Ta,) p/b/m probability, whole clip

    def window_outputs():  # generated one window at a time, so only one is held in memory
        for index, (start, end) in enumerate(windows):
            first = round(start * SAMPLE_RATE / cfg.fps)
            last = len(waveform) if end == num_frames else round(end * SAMPLE_RATE / cfg.fps)
            clip = torch.from_numpy(waveform[first:last]).to(device).unsqueeze(0)  # (1, S)
            if lip_closure is not None:  # per window, like the model's own hearing (hama caches it)
                heard = bilabial_probability(clip.cpu())
                offset = round(first * evidence_fps / SAMPLE_RATE)
                span = bilabial[offset : offset + len(heard)]
                np.maximum(span, heard[: len(span)], out=span)
            memory = model.audio_memory(clip, end - start)  # (1, n, d)
            if guidance > 0:
                memory = torch.stack([memory, model.audio_memory(torch.zeros_like(clip), end - start)])  # (2, 1, n, d)
            else:
                memory = memory.unsqueeze(0)  # (1, 1, n, d)
            noise.resize(end - start)
            job = SamplingJob(
                memory=memory,
                style=style_ids,
                init_noise=init_noise.to(device) if init_noise is not None else noise(),
                plan=plan,
                guidance=frame_guidance[start:end].to(device),
                noise=noise,
                progress=progress,
                cancel=cancel,
                progress_offset=index * len(plan),
                progress_total=len(windows) * len(plan),
            )
            yield (run(model.denoiser, job) / cfg.motion_scale).float().cpu().numpy()  # (K, n, F) offsets

    with torch.no_grad():
        offsets = torch.from_numpy(join_windows(window_outputs(), windows, num_frames))  # (K, T, F)
    if cfg.smooth_output:
        offsets = smooth_interior(offsets)
    offsets = offsets.reshape(sampler.takes, num_frames, cfg.n_vertices, 3).numpy()
    closures = []
    if lip_closure is not None:
        for k in range(len(offsets)):  # one take at a time: a long clip is not held twice over
            offsets[k], placed = lip_closure.apply(offsets[k], bilabial, evidence_fps, cfg.fps)
            closures.append(placed)
    return Generation(
        offsets=offsets,
        fps=cfg.fps,
        seeds=tuple(seeds),
        style=style,
        windows=tuple(windows),
        lip_closures=tuple(closures),
    )
