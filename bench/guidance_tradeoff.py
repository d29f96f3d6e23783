"""The paper's guidance trade-off for one model: lip-sync against variety between seeds.

    .venv/bin/python bench/guidance_tradeoff.py diffspeaker_blender/models/default.safetensors
    .venv/bin/python bench/guidance_tradeoff.py MODEL --scales 0 1 2 --takes 4 --clips cards-001

For each audio-free guidance scale s, every real-speech clip of bench/real_speech_clips.py is
generated with `--takes` seeds in one batch. Reported per scale, pooled over clips and takes:

    closure, open   lip-sync rates as in bench/eval_lipsync.py (against forced alignments)
    lag             median audio-loudness -> mouth-opening lag over clips and takes, ms
    variety         mean over frames and lip vertices of the standard deviation across seeds
                    of the lip offsets, mm (0: every seed gives the same face)
    opening sd      the same spread for the mouth opening alone, mm

Guidance needs a model trained with the audio condition dropped on some clips (`train
--audio-drop`); without that the audio-free branch is untrained and higher scales are noise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.eval_lipsync import DEFAULT_ALIGNMENTS, clip_segments, lip_regions, pooled, score_motion  # noqa: E402
from bench.real_speech_clips import list_clips  # noqa: E402
from vendor_model import metrics  # noqa: E402
from vendor_model.config import SAMPLE_RATE, SamplerConfig  # noqa: E402


def score_scale(bundle, clips, cached, upper, lower, scale: float, takes: int, steps: int, style: int) -> dict:
    from vendor_model.pipeline import generate

    lips = np.union1d(upper, lower)
    rows, variety, opening_sd = [], [], []
    for clip in clips:
        audio, segments = clip.audio(), clip_segments(clip, cached)
        sampler = SamplerConfig(steps=steps, guidance=scale, seed=0, takes=takes)
        result = generate(bundle.model, audio, sample_rate=SAMPLE_RATE, style=style, sampler=sampler,
                          template=bundle.template)
        offsets = result.offsets  # (takes, T, V, 3)
        rows += [score_motion(take, result.fps, audio, segments, bundle.template, upper, lower) for take in offsets]
        openings = [metrics.mouth_opening(take, np.asarray(bundle.template).reshape(-1, 3), upper, lower) for take in offsets]
        variety.append(float(offsets[:, :, lips].std(axis=0).mean() * 1000))
        opening_sd.append(float(np.std(openings, axis=0).mean() * 1000))
    summary = pooled(rows)
    return {
        "guidance": scale,
        "closure_rate": summary["closure_rate"],
        "opening_rate": summary["opening_rate"],
        "lag_ms": float(np.median([r["lag_s"] for r in rows]) * 1000),
        "variety_mm": float(np.mean(variety)),
        "opening_sd_mm": float(np.mean(opening_sd)),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    parser.add_argument("--takes", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--style", default="0")
    parser.add_argument("--clips", nargs="+", help="clip names (default: all)")
    parser.add_argument("--output", type=Path, help="JSON report (default: out/guidance/<model>.json)")
    args = parser.parse_args(argv)

    from vendor_model.checkpoint import load_any

    bundle = load_any(args.model)
    upper, lower = lip_regions(dict(bundle.info), None, None, bundle.cfg.n_vertices)
    clips = [c for c in list_clips() if not args.clips or c.name in args.clips]
    if not clips:
        parser.error("no clips (is Debian's pocketsphinx-testdata installed?)")
    cached = json.loads(DEFAULT_ALIGNMENTS.read_text())["clips"] if DEFAULT_ALIGNMENTS.is_file() else {}
    rows = [score_scale(bundle, clips, cached, upper, lower, s, args.takes, args.steps, bundle.style_index(args.style))
            for s in args.scales]
    print(f"{'guidance':>8} {'closure':>8} {'open':>6} {'lag ms':>7} {'variety mm':>11} {'opening sd mm':>14}")
    for r in rows:
        print(f"{r['guidance']:8.2f} {r['closure_rate']:8.2f} {r['opening_rate']:6.2f} {r['lag_ms']:7.0f} "
              f"{r['variety_mm']:11.3f} {r['opening_sd_mm']:14.3f}")
    output = args.output or ROOT / "out" / "guidance" / f"{args.model.stem}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"model": str(args.model), "takes": args.takes, "steps": args.steps, "rows": rows}, indent=1))
    print(f"wrote {output}")
    return rows


if __name__ == "__main__":
    main()
