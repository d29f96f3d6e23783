"""Where a model's lip-sync comes from: the audio, or the noisy motion it is given.

    .venv/bin/python bench/denoiser_probe.py MODEL --data data/synth600              # held-out voices
    .venv/bin/python bench/denoiser_probe.py MODEL --data data/synth600 --split train --limit 12

For every clip of a synthetic set the clip's own rig motion is noised to timestep t, exactly
as in training, and the denoiser predicts the clean motion once (no sampling loop). Each
prediction is scored like a generated take (bench/eval_lipsync.py: closure on p/b/m, opening
on open vowels, median lowest opening in a p/b/m and highest in an open vowel). Two more
rows: "pure noise", the first sampling step's input (what every take starts from), and the
rig's own motion.

Read it top down: a model that scores well on teacher-forced rows at high t but not on
"pure noise" takes its answer from the motion left in x_t, which sampling never has (the
official schedule keeps 6.8 % of x0 at t = 999; see DiffusionConfig.rescale_betas_zero_snr).
The row at t = 999 of a zero-terminal-SNR model is what it knows from the audio alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_lipsync import RATES, heldout_clips, lip_regions, pooled, score_motion  # noqa: E402
from vendor_model.audio import normalize_waveform  # noqa: E402
from vendor_model.checkpoint import load_any  # noqa: E402


def probe(bundle, data: Path, split: str = "test", timesteps=(999, 800, 600, 400, 200), limit: int | None = None,
          seed: int = 0) -> dict[str, dict]:
    """{row label: pooled eval_lipsync summary} for teacher-forced predictions at each t,
    pure noise at the first sampling step, and the rig's motion."""
    spec = json.loads((data / "dataset.json").read_text())
    info = dict(bundle.info)
    info.setdefault("regions", spec.get("regions", {}))
    model, cfg = bundle.model.eval(), bundle.cfg
    upper, lower = lip_regions(info, None, None, cfg.n_vertices)
    templates = {k: v.reshape(-1, 3) for k, v in np.load(data / "templates.npz").items()}
    first_step = model.schedule.timesteps(50)[0]
    labels = [f"t={t}" for t in timesteps] + [f"pure noise (t={first_step})", "rig motion"]
    rows: dict[str, list[dict]] = {label: [] for label in labels}
    clips = heldout_clips(data, split)[:limit]
    if not clips:
        raise SystemExit(f"no clips in the {split!r} split of {data}")
    generator = torch.Generator().manual_seed(seed)
    for clip in clips:
        audio = clip.audio()  # (S,) 16 kHz
        template = templates[clip.style]
        truth = clip.rig_offsets(template)
        waveform = torch.from_numpy(normalize_waveform(audio)).unsqueeze(0)  # (1, S)
        frames = min(len(truth), model.num_frames(waveform.shape[1]))
        truth = truth[:frames]  # (T, V, 3) metres
        x0 = torch.from_numpy(truth.reshape(1, frames, -1)).float() * cfg.motion_scale  # (1, T, 3V)
        noise = torch.randn(x0.shape, generator=generator)
        inputs = [(t, model.schedule.add_noise(x0, noise, torch.tensor([t]))) for t in timesteps] + [(first_step, noise)]
        with torch.no_grad():
            memory = model.audio_memory(waveform, frames)  # (1, T, d)
            style = torch.tensor([bundle.style_index(clip.style)])
            mask = torch.ones(1, frames, dtype=torch.bool)
            predictions = [model.denoiser(x_t, memory, torch.tensor([t]), style, mask)[0] / cfg.motion_scale for t, x_t in inputs]
        segments = clip.segments()
        for label, motion in zip(labels, [p.numpy().reshape(truth.shape) for p in predictions] + [truth]):
            rows[label].append(score_motion(motion, cfg.fps, audio, segments, template, upper, lower))
    return {label: pooled(scored) for label, scored in rows.items()}


def print_probe(summaries: dict[str, dict]) -> None:
    print(f"{'input':26s} {'closure':>8s} {'open':>6s} {'p/b/m lowest mm':>16s} {'vowel highest mm':>17s}")
    for label, s in summaries.items():
        print(f"{label:26s} {s['closure_rate']:8.2f} {s['opening_rate']:6.2f} "
              f"{s['bilabial_min_mm_median']:16.2f} {s['open_vowel_max_mm_median']:17.2f}")
    counts = next(iter(summaries.values()))
    print(f"({counts['clips']} clips, {counts[RATES[0][1]]} p/b/m, {counts[RATES[1][1]]} open vowels; medians over segments)")


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="our .safetensors model file (or an official .ckpt)")
    parser.add_argument("--data", type=Path, required=True, help="a synthetic set (synth.make_dataset)")
    parser.add_argument("--split", default="test", help="test (held-out voices, default), val or train")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[999, 800, 600, 400, 200])
    parser.add_argument("--limit", type=int, help="only the first N clips")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    summaries = probe(load_any(args.model), args.data, args.split, tuple(args.timesteps), args.limit, args.seed)
    print_probe(summaries)
    return summaries


if __name__ == "__main__":
    main()
