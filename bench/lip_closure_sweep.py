"""The lip closure step's settings against lip-sync: how its defaults were chosen.

    .venv/bin/python bench/lip_closure_sweep.py MODEL --heldout data/synth600 --split val    # chose the settings
    .venv/bin/python bench/lip_closure_sweep.py MODEL --heldout data/synth600 --split test
    .venv/bin/python bench/lip_closure_sweep.py MODEL --seeds 0 1 2 3 4 5                    # the real clips

Each clip is generated once per seed (50 steps, the model's own guidance) and then closed
with every setting of the grid, so the settings compete on the same takes. Prints closure,
opening, rest, lag and jitter pooled over clips and seeds as bench/eval_lipsync.py does,
first for the model alone. The shipped defaults (vendor_model/lip_closure.py) were chosen
on the synthetic splits only, then measured once on the real clips.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_lipsync import DEFAULT_ALIGNMENTS, clip_segments, heldout_clips, pooled, score_motion  # noqa: E402
from bench.real_speech_clips import list_clips  # noqa: E402
from vendor_model.audio import normalize_waveform  # noqa: E402
from vendor_model.config import SAMPLE_RATE, SamplerConfig  # noqa: E402

GRID = [dict(search_s=s, kernel=k) for s in (0.067, 0.1)
        for k in ((1.0,), (1.0, 0.5), (1.0, 0.75), (1.0, 0.9), (1.0, 0.75, 0.25))]


def clips_to_score(args, bundle) -> list[tuple[str, np.ndarray, list, int]]:
    """(name, audio (S,), phone segments, style) of the real clips or of a synthetic split."""
    if args.heldout is None:
        cached = json.loads(DEFAULT_ALIGNMENTS.read_text())["clips"] if DEFAULT_ALIGNMENTS.is_file() else {}
        return [(c.name, c.audio(), clip_segments(c, cached), 0) for c in list_clips()]
    return [(c.name, c.audio(), c.segments(), bundle.style_index(c.style)) for c in heldout_clips(args.heldout, args.split)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--heldout", type=Path, help="a synthetic set: score its --split instead of the real clips")
    parser.add_argument("--split", default="test", help="with --heldout: val (training voices) or test (held-out voices)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    import torch

    from vendor_model.checkpoint import load_any
    from vendor_model.pipeline import generate

    bundle = load_any(args.model)
    closure = bundle.lip_closure()
    if closure is None:
        raise SystemExit("this model has no lip closure step (it needs the hama front-end, a template and lip rows)")
    template = closure.template
    upper, lower = np.asarray(closure.upper), np.asarray(closure.lower)
    takes = []  # (offsets (T, V, 3), p/b/m probability (Ta,), audio, segments)
    for name, audio, segments, style in clips_to_score(args, bundle):
        heard = bundle.model.audio_encoder.bilabial_probability(torch.from_numpy(normalize_waveform(audio))[None])
        for seed in args.seeds:
            result = generate(bundle.model, audio, sample_rate=SAMPLE_RATE, style=style, device="cpu",
                              sampler=SamplerConfig(steps=args.steps, seed=seed))
            takes.append((result.offsets[0], heard, audio, segments))
        print(f"generated {name}", file=sys.stderr, flush=True)

    fps = bundle.cfg.fps
    print(f"{'setting':44s} closure   open   rest  lag ms  jitter")
    for setting in [None] + GRID:
        step = dataclasses.replace(closure, **setting) if setting else None
        rows = [score_motion(step.apply(offsets, heard, bundle.model.audio_encoder.feature_fps, fps)[0] if step else offsets,
                             fps, audio, segments, template, upper, lower)
                for offsets, heard, audio, segments in takes]
        s = pooled(rows)
        label = "model alone" if setting is None else f"search {setting['search_s']:.3f} s, kernel {setting['kernel']}"
        print(f"{label:44s} {s['closure_rate']:7.3f} {s['opening_rate']:6.3f} {s['rest_in_silence']:6.3f} "
              f"{1000 * s['lag_s']:7.0f} {s['jitter_mm_per_frame2']:7.3f}")


if __name__ == "__main__":
    main()
