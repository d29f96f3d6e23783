"""Training: the official objective and optimiser, with the loss back-propagated explicitly.

    train(preset("vocaset"), vocaset_layout("data/vocaset"), TrainConfig(max_steps=100_000))
        -> runs/train/step-0100000.safetensors

The official trainer hands its loss to Lightning through `torchmetrics.Metric.update`,
which returns None from torchmetrics 0.8 on, so Lightning skips every batch and the
model never leaves its zero-initialised head (spec §7). Here each step is plainly
`loss.backward(); optimizer.step(); optimizer.zero_grad()`.

Multi-GPU: launched under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK set), every process
trains its shard of each epoch in a DistributedDataParallel wrapper; rank 0 logs and saves.

A checkpoint is our `.safetensors` bundle (loads with `checkpoint.load_bundle`) plus a
`.train-state.pt` beside it (optimizer moments, counters, RNG states; plain tensors, so
it loads with `torch.load(weights_only=True)`) from which `resume` continues exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from .checkpoint import ModelBundle, load_bundle, save_bundle
from .config import ModelConfig
from .data import DatasetError, DatasetLayout, MotionItem, SpeechMotionDataset, collate
from .fileio import atomic_output
from .model import DiffSpeaker, TrainingBatch, position_velocity_loss
from .phones import PHONES
from .pipeline import pick_device, smooth_interior
from .sampler import SamplingJob, sample_fast

__all__ = ["TrainConfig", "Trainer", "train", "config_for_data", "sample_offsets", "read_train_state", "saved_train_options", "STATE_SUFFIX"]

STATE_SUFFIX = ".train-state.pt"
_STATE_FORMAT = "diffspeaker-train-state"


@dataclass(frozen=True)
class TrainConfig:
    """How to train (never stored as the model's config; recorded in the checkpoint info)."""

    lr: float = 1e-4  # official AdamW settings, no schedule, no clipping, fp32
    # The last N steps lower the learning rate linearly to 0 (None: constant, as official).
    # Steps before the decay do not depend on N or on the run's length, so a run that is
    # resumed with a decay reaches what one started with it would have.
    lr_decay_steps: int | None = None
    weight_decay: float = 0.01
    batch_size: int = 32  # per process
    epochs: int | None = None  # stop after this many epochs and/or ...
    max_steps: int | None = None  # ... this many optimiser steps (whichever comes first)
    audio_drop_prob: float = 0.0  # silence this fraction of clips (guidance training); official 0
    freeze_feature_extractor: bool = True  # official: the wav2vec CNN stays frozen
    seed: int = 1234
    log_every: int = 50  # steps
    val_every: int | None = None  # steps; validation samples the val split in full
    val_steps: int = 50  # sampler steps for validation (official 50)
    val_method: str | None = None  # None: the model's own sampling update
    val_max_items: int | None = None  # None = the whole val split
    lip_indices: tuple[int, ...] | None = None  # vertex ids for the validation LVE
    # {region: weight}: squared errors of the region's vertices (the data's dataset.json
    # "regions") count weight times; a vertex in several takes the largest. None: official.
    region_weights: dict[str, float] | None = None
    # Weight of an auxiliary frame-wise phone classification loss on the speech encoder's
    # output (a linear head used only in training), from the data's segments/<stem>.json
    # timings. It makes the encoder mark where each phone is, e.g. the frames of a p/b/m,
    # which the diffusion loss alone does not teach it. 0: official (no phone labels needed).
    phone_loss_weight: float = 0.0
    # Weight of an absolute-error loss on the gap between the lips' centres (the data's
    # "upper_lip_seam" and "lower_lip_seam" regions), in offset units x motion_scale (mm for
    # the default head). The squared position loss settles on the mean of likely mouths, which
    # for a probable p/b/m is a mouth left a little open; this one pulls it to the median, the
    # closure. 0: official.
    lip_gap_loss_weight: float = 0.0
    checkpoint_every: int | None = 1000  # steps; a final checkpoint is always written
    out_dir: str = "runs/train"
    num_workers: int = 0
    device: str = "auto"

    def validate(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            raise ValueError("give epochs or max_steps: training needs an end")
        for name in ("batch_size", "epochs", "max_steps", "lr_decay_steps", "log_every", "val_every", "val_steps", "val_max_items", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.region_weights is not None and any(not float(w) > 0 for w in self.region_weights.values()):
            raise ValueError(f"region_weights must be positive, got {self.region_weights}")
        for name in ("phone_loss_weight", "lip_gap_loss_weight"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if not 0.0 <= self.audio_drop_prob <= 1.0:
            raise ValueError(f"audio_drop_prob must be in [0, 1], got {self.audio_drop_prob}")
        if self.lr <= 0 or self.weight_decay < 0 or self.num_workers < 0:
            raise ValueError("lr must be > 0, weight_decay and num_workers >= 0")
        if self.val_method not in (None, "official", "ddim"):
            raise ValueError(f"val_method must be 'official' or 'ddim', got {self.val_method!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        data = dict(data)
        if data.get("lip_indices") is not None:
            data["lip_indices"] = tuple(int(i) for i in data["lip_indices"])
        return cls(**data)


class _LossModule(nn.Module):
    """Routes the training loss through forward(), so DistributedDataParallel can wrap it.
    Holds the training-only phone head (not part of the model or its checkpoint)."""

    def __init__(self, model: DiffSpeaker, audio_drop_prob: float, weights: torch.Tensor | None,
                 phone_head: nn.Module | None, phone_weight: float,
                 lips: tuple[torch.Tensor, torch.Tensor] | None, lip_gap_weight: float):
        super().__init__()
        self.model, self.audio_drop_prob = model, audio_drop_prob
        self.phone_head, self.phone_weight = phone_head, phone_weight
        self.lips, self.lip_gap_weight = lips, lip_gap_weight
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, batch: TrainingBatch) -> dict[str, torch.Tensor]:
        losses = self.model.training_loss(batch, audio_drop_prob=self.audio_drop_prob, weights=self.weights,
                                          phone_head=self.phone_head, lips=self.lips)
        if self.phone_head is not None:
            losses["total"] = losses["total"] + self.phone_weight * losses["phone"]
        if self.lips is not None:
            losses["total"] = losses["total"] + self.lip_gap_weight * losses["lip_gap"]
        return losses


def _rng_state(device: torch.device) -> dict[str, Any]:
    _, keys, pos, has_gauss, gauss = np.random.get_state()  # the encoder's SpecAugment draws from numpy
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.zeros(0, dtype=torch.uint8),
        "numpy": torch.from_numpy(keys.astype(np.int64)),
        "numpy_rest": [int(pos), int(has_gauss), float(gauss)],
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"], device)
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate((3, tuple(state["python"].tolist()), None))


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@torch.no_grad()
def sample_offsets(model: DiffSpeaker, item: MotionItem, styles: list[int], steps: int = 50, method: str | None = None, seed: int = 0) -> torch.Tensor:
    """Fully sampled offsets (K, T, F) for one clip, one take per style, with T = the
    clip's ground-truth length (as the official validation does)."""
    device = next(model.parameters()).device
    num_frames, nfeats = item.offsets.shape
    memory = model.audio_memory(torch.from_numpy(item.audio).to(device)[None], num_frames)  # (1, T, d)
    noise = torch.randn(len(styles), num_frames, nfeats, generator=torch.Generator().manual_seed(seed))
    job = SamplingJob(
        memory=memory[None], style=torch.tensor(styles, device=device), init_noise=noise.to(device),
        plan=model.schedule.plan(steps, method or model.cfg.diffusion.sample_method),
    )
    out = sample_fast(model.denoiser, job) / model.cfg.motion_scale  # (K, T, F) offsets
    return smooth_interior(out) if model.cfg.smooth_output else out


class _EpochBatches:
    """Batch sampler: the rest of the trainer's current epoch. Each epoch has a fixed
    shuffle (seed, epoch), so a resumed run skips exactly the batches already done."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def __iter__(self):
        t = self.trainer
        t.sampler.set_epoch(t.epoch)
        indices = list(t.sampler)  # this process's share of the epoch
        batches = [indices[i : i + t.cfg.batch_size] for i in range(0, len(indices), t.cfg.batch_size)]
        return iter(batches[t.batch_in_epoch :])  # a list, fixed before any worker prefetches

    def __len__(self) -> int:
        return self.trainer.steps_per_epoch


class Trainer:
    """One training run: `Trainer(...).run()` trains and returns the last checkpoint."""

    def __init__(self, model: ModelConfig | ModelBundle | DiffSpeaker | None, layout: DatasetLayout, cfg: TrainConfig,
                 resume: str | Path | dict[str, Any] | None = None):
        """resume: a `.train-state.pt` path, or a state already read with `read_train_state`."""
        self.cfg, self.layout = cfg.validate(), layout
        self.rank, self.world, self.device = _distributed_env(cfg.device)
        self._owns_group = False
        state = read_train_state(resume) if isinstance(resume, (str, Path)) else resume
        if state is not None:
            if model is not None and not (isinstance(model, ModelConfig) and model == state["bundle"].cfg):
                raise ValueError("resume continues the checkpoint's own model; do not also give a model or a different config")
            model = state["bundle"]
        if model is None:
            raise ValueError("give a model config, a model to fine-tune, or a train state to resume")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        base = model if isinstance(model, ModelBundle) else None
        self.model = model.model if base else model if isinstance(model, DiffSpeaker) else DiffSpeaker(model)
        self.origin = "random initialisation"
        if state is not None:
            self.origin = base.info.get("origin", "unknown")
        elif base is not None:
            trained = f"a model trained {base.info['step']} steps on {base.info.get('data_root')}" if "step" in base.info else None
            self.origin = f"fine-tuned from {base.info.get('source') or trained or 'a given model'}"

        self.phone_head = nn.Linear(self.model.audio_encoder.feature_dim, len(PHONES)) if cfg.phone_loss_weight > 0 else None
        phone_fps = self.model.audio_encoder.feature_fps if self.phone_head is not None else None
        self.dataset = SpeechMotionDataset(layout, "train", phone_fps=phone_fps)
        self._check_fits()
        self.template_subject = layout.styles[0]
        self.template = self.dataset.templates[self.template_subject].reshape(-1, 3)
        freeze = getattr(self.model.audio_encoder, "freeze_feature_extractor", None)
        if cfg.freeze_feature_extractor and freeze is not None:
            freeze()
        elif cfg.freeze_feature_extractor:
            self.log("this speech encoder has no convolutional feature extractor to freeze")
        self.model.to(self.device, torch.float32).train()  # the official training is fp32 throughout
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if self.phone_head is not None:
            self.phone_head.to(self.device, torch.float32)
            trainable += list(self.phone_head.parameters())
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = DistributedSampler(self.dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=cfg.seed)
        self.steps_per_epoch = -(-len(self.sampler) // cfg.batch_size)
        limits = [cfg.max_steps] if cfg.max_steps else []
        limits += [cfg.epochs * self.steps_per_epoch] if cfg.epochs else []
        self.total_steps = min(limits)
        self.step = self.epoch = self.batch_in_epoch = 0
        _seed_everything(cfg.seed + self.rank)
        if state is not None:
            self._restore(state)
        self.out_dir = Path(cfg.out_dir)
        self._val_data: SpeechMotionDataset | None | bool = False  # False = not loaded yet
        net = _LossModule(self.model, cfg.audio_drop_prob, self._loss_weights(), self.phone_head, cfg.phone_loss_weight,
                          self._lip_seams(), cfg.lip_gap_loss_weight)
        if self.world > 1:  # last, so that nothing after starting the group can fail
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", rank=self.rank, world_size=self.world)
                self._owns_group = True
            # LayerDrop skips encoder layers at random, hence find_unused_parameters
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)
        self.net = net
        self.loader = DataLoader(  # one loader for the run, so worker processes are started once
            self.dataset, batch_sampler=_EpochBatches(self), collate_fn=collate, num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0, generator=torch.Generator(),  # leaves the global RNG alone
        )

    # ---- setup ------------------------------------------------------------------------------

    def _loss_weights(self) -> torch.Tensor | None:
        """(F,) per-coordinate weights from cfg.region_weights, or None."""
        if not self.cfg.region_weights:
            return None
        weights = torch.ones(self.model.cfg.n_vertices)
        for name, weight in self.cfg.region_weights.items():
            if name not in self.layout.regions:
                known = ", ".join(sorted(self.layout.regions)) or "none (add \"regions\" to dataset.json)"
                raise ValueError(f"region_weights names region {name!r}, which the data does not have; its regions: {known}")
            index = torch.tensor(self.layout.regions[name], dtype=torch.long)
            weights[index] = torch.maximum(weights[index], torch.tensor(float(weight)))
        return weights.repeat_interleave(3).to(self.device)  # x, y, z of each vertex

    def _lip_seams(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(upper, lower) vertex ids of the lips' meeting contour for the lip gap loss, or None."""
        if not self.cfg.lip_gap_loss_weight:
            return None
        names = ("upper_lip_seam", "lower_lip_seam")
        missing = [name for name in names if not self.layout.regions.get(name)]
        if missing:
            raise ValueError(f"lip_gap_loss_weight needs the regions {', '.join(names)} in the data's dataset.json "
                             f"(the vertices where the lips meet); it lacks {', '.join(missing)}. Add them, or set the weight to 0")
        return tuple(torch.tensor(self.layout.regions[name], dtype=torch.long, device=self.device) for name in names)

    def _check_fits(self) -> None:
        mcfg, layout = self.model.cfg, self.layout
        if mcfg.nfeats != self.dataset.nfeats:
            raise ValueError(f"the model animates {mcfg.n_vertices} vertices but the data in {layout.root} has {self.dataset.nfeats // 3}")
        if mcfg.fps != layout.motion_fps:
            raise ValueError(f"the model runs at {mcfg.fps} fps but the data gives {layout.motion_fps} fps ({layout.fps} stored / {layout.subsample})")
        if mcfg.num_styles != len(layout.styles):
            raise ValueError(f"the model has {mcfg.num_styles} styles but the data has {len(layout.styles)} training subjects {list(layout.styles)}")

    def _restore(self, state: dict[str, Any]) -> None:
        if (self.phone_head is None) != (state.get("phone_head") is None):
            raise ValueError("resume with the phone loss on exactly when the saved run had it (phone_loss_weight 0 or not)")
        if self.phone_head is not None:
            self.phone_head.load_state_dict(state["phone_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        if self.batch_in_epoch >= self.steps_per_epoch:  # fewer batches per epoch than before (batch size or processes)
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        if state["world_size"] == self.world:
            _set_rng_state(state["rng"][self.rank], self.device)
        else:  # a different process count cannot replay the same random numbers
            self.log(f"resuming with {self.world} process(es) instead of {state['world_size']}: random streams are re-seeded")
            _seed_everything(self.cfg.seed + self.rank + 7919 * self.step)
        self.log(f"resumed at step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})")

    # ---- the loop ---------------------------------------------------------------------------

    def learning_rate(self) -> float:
        """The rate of the step about to be taken (self.step counts those done)."""
        decay = self.cfg.lr_decay_steps
        if not decay:
            return self.cfg.lr
        return self.cfg.lr * min(1.0, (self.total_steps - self.step) / decay)

    def train_step(self, batch: TrainingBatch) -> dict[str, float]:
        batch = batch.to(self.device)
        for group in self.optimizer.param_groups:  # also replaces the rate a resumed state brought
            group["lr"] = self.learning_rate()
        losses = self.net(batch)
        losses["total"].backward()  # explicit: the official trainer silently never got here (spec §7)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {k: v.item() for k, v in losses.items()}

    def run(self) -> Path:
        cfg, last = self.cfg, None
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.log(
            f"training {trainable:,} parameters on {len(self.dataset)} clips ({self.layout.root}), {self.world} process(es) on {self.device}, "
            f"{self.steps_per_epoch} steps/epoch, until step {self.total_steps}"
        )
        window: list[dict[str, float]] = []
        started = time.perf_counter()
        try:
            while self.step < self.total_steps:
                for batch in self.loader:
                    window.append(self.train_step(batch))
                    self.step += 1
                    self.batch_in_epoch += 1
                    if self.batch_in_epoch == self.steps_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        self._log_window(window, time.perf_counter() - started)
                        window, started = [], time.perf_counter()
                    pause = time.perf_counter()
                    if cfg.val_every and self.step % cfg.val_every == 0:
                        self.validate()
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        last = self.save()
                    started += time.perf_counter() - pause  # steps/s counts training only
                    if self.step >= self.total_steps:
                        break
            if last is None or not last.name.startswith(f"step-{self.step:07d}."):
                last = self.save()
        finally:
            if self._owns_group:
                dist.destroy_process_group()
        return last

    # ---- logging, validation, checkpoints ----------------------------------------------------

    def log(self, message: str, record: dict[str, Any] | None = None) -> None:
        if self.rank != 0:
            return
        print(message, flush=True)
        Path(self.cfg.out_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(self.cfg.out_dir) / "train.log", "a") as f:
            f.write(message + "\n")
        if record is not None:
            with open(Path(self.cfg.out_dir) / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _log_window(self, window: list[dict[str, float]], seconds: float) -> None:
        keys = list(window[0])  # total, position, velocity[, phone][, lip_gap]
        mean = {k: float(np.mean([w[k] for w in window])) for k in keys}
        if self.world > 1:  # average over processes
            values = torch.tensor([mean[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(values)
            mean = dict(zip(keys, (values / self.world).tolist()))
        rate = len(window) / max(seconds, 1e-9)
        parts = ", ".join(f"{k} {mean[k]:.6g}" for k in keys if k != "total")
        self.log(
            f"step {self.step:>7d}/{self.total_steps}  epoch {self.epoch:>4d}  loss {mean['total']:.6g}  ({parts})  {rate:.2f} steps/s",
            {"step": self.step, "epoch": self.epoch, "loss": mean["total"], **{k: mean[k] for k in keys if k != "total"}, "steps_per_s": rate},
        )

    def validate(self) -> dict[str, float] | None:
        """Official validation: sample each val clip in full (every training style for an
        unseen subject, its own style otherwise) and score it with the training loss."""
        if self._val_data is False:
            try:
                self._val_data = SpeechMotionDataset(self.layout, "val")
            except DatasetError as exc:
                self._val_data = None
                self.log(f"no validation: {exc}")
        if self._val_data is None:
            return None
        count = len(self._val_data) if self.cfg.val_max_items is None else min(len(self._val_data), self.cfg.val_max_items)
        sums = torch.zeros(5, dtype=torch.float64)  # position, velocity, total, lve, clips
        lips = torch.tensor(self.cfg.lip_indices, device=self.device) if self.cfg.lip_indices else None
        self.model.eval()
        for index in range(self.rank, count, self.world):
            item = self._val_data[index]
            styles = [item.style] if item.style >= 0 else list(range(self.model.cfg.num_styles))
            pred = sample_offsets(self.model, item, styles, self.cfg.val_steps, self.cfg.val_method, seed=self.cfg.seed + index)
            target = torch.from_numpy(item.offsets).to(self.device).expand_as(pred)
            losses = position_velocity_loss(pred, target, torch.ones(pred.shape[:2], dtype=torch.bool, device=self.device))
            lve = 0.0
            if lips is not None:
                err = ((pred - target).view(*pred.shape[:2], -1, 3)[:, :, lips] ** 2).sum(-1)  # (K, T, lips)
                lve = err.max(-1).values.mean().item()
            sums += torch.tensor([losses["position"].item(), losses["velocity"].item(), losses["total"].item(), lve, 1.0], dtype=torch.float64)
        self.model.train()
        if self.world > 1:
            sums = sums.to(self.device)
            dist.all_reduce(sums)
        clips = int(sums[4].item())
        position, velocity, total, lve = (sums[:4] / max(clips, 1)).tolist()
        metrics = {"val_loss": total, "val_position": position, "val_velocity": velocity}
        if lips is not None:
            metrics["val_lve"] = lve
        self.log(f"validation at step {self.step}: " + ", ".join(f"{k} {v:.6g}" for k, v in metrics.items()) + f" ({clips} clips)", {"step": self.step, **metrics})
        return metrics

    def save(self) -> Path:
        """Weights bundle, then the train state that points at it; both atomic. Collective
        under DDP (every process hands over its random state); only rank 0 writes."""
        rng = _rng_state(self.device)
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            dist.all_gather_object(gathered, rng)
            rng = gathered
        else:
            rng = [rng]
        name = f"step-{self.step:07d}"
        weights = self.out_dir / f"{name}.safetensors"
        if self.rank != 0:
            return weights
        settings = self.cfg.to_dict()
        settings["lip_indices"] = len(self.cfg.lip_indices) if self.cfg.lip_indices else None
        info = {
            "origin": self.origin,
            "trained_by": "vendor_model.train",
            "step": self.step, "epoch": self.epoch, "world_size": self.world,
            "data_root": str(self.layout.root), "layout": self.layout.name,
            "template": f"{self.template_subject} (first training subject) from {self.layout.templates}",
            "train_config": settings,
        }
        save_bundle(ModelBundle(self.model, self.template, tuple(self.layout.styles), info), weights)
        state = {
            "format": _STATE_FORMAT, "version": 1, "weights": weights.name,
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "world_size": self.world,
            "optimizer": self.optimizer.state_dict(), "rng": rng,
            "phone_head": None if self.phone_head is None else self.phone_head.state_dict(),
        }
        with atomic_output(self.out_dir / f"{name}{STATE_SUFFIX}") as tmp:
            torch.save(state, tmp)
        self.log(f"saved {weights}")
        return weights


def read_train_state(path: str | Path) -> dict[str, Any]:
    """A `.train-state.pt` file, with the weights bundle it points at under "bundle"."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"train state not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise ValueError(f"{path} is not a train state written by vendor_model.train")
    state["bundle"] = load_bundle(path.parent / state["weights"])
    return state


def saved_train_options(state: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig options of the run that wrote `state` (from `read_train_state`; its
    checkpoint's info["train_config"]), so that a resumed run keeps its region weights,
    learning rate and the rest unless told otherwise. lip_indices is saved as a count only:
    left out."""
    options = dict(state["bundle"].info.get("train_config") or {})
    options.pop("lip_indices", None)
    return options


def _distributed_env(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun (RANK and WORLD_SIZE set) each process
    takes cuda:LOCAL_RANK, or the CPU when there is no GPU (then gloo instead of NCCL)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, pick_device(device_name)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def config_for_data(base: ModelConfig, layout: DatasetLayout) -> ModelConfig:
    """`base` (e.g. a preset) with the vertex count, frame rate and style count of the
    data; the period follows the frame rate, as in both official configurations."""
    from .data import load_templates

    template = load_templates(layout).get(layout.styles[0])
    if template is None:
        raise DatasetError(f"{layout.root / layout.templates} has no template for the first training subject {layout.styles[0]!r}")
    changes: dict[str, Any] = dict(n_vertices=template.size // 3, fps=layout.motion_fps, num_styles=len(layout.styles))
    if layout.motion_fps != base.fps:
        changes["period"] = layout.motion_fps
    return dataclasses.replace(base, **changes)


def train(model: ModelConfig | ModelBundle | DiffSpeaker | None, layout: DatasetLayout, cfg: TrainConfig,
          resume: str | Path | dict[str, Any] | None = None) -> Path:
    """Train (or fine-tune, or resume) and return the path of the last checkpoint."""
    return Trainer(model, layout, cfg, resume).run()
