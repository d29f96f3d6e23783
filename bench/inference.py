"""Inference speed and memory at the official sizes, with random weights.

    .venv/bin/python bench/inference.py                 # VOCASET + BIWI, 10 s and 60 s clips
    .venv/bin/python bench/inference.py --presets vocaset --seconds 10 --repeats 5

Every (preset, clip, sampler path) case runs in its own subprocess with 2 threads,
so its peak memory (max RSS) is its own. Stages are timed inside one `generate()`
call: encoding = start until the sampler's first progress tick (audio prep, speech
encoder, resampling, memory projection), sampling = first to last tick, total =
the whole call. The straightforward path evaluates the wide nfeats<->width
projections at every step, as the official code does; the fast path folds them.
Both outputs are compared in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_checkpoint(preset_name: str, path: Path) -> None:
    import torch

    from vendor_model.checkpoint import ModelBundle, save_bundle
    from vendor_model.config import OFFICIAL_STYLE_NAMES, preset
    from vendor_model.model import DiffSpeaker

    torch.manual_seed(0)
    model = DiffSpeaker(preset(preset_name))  # wav2vec2-base architecture, randomly initialised
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.02)  # official head is all zeros
    save_bundle(ModelBundle(model, None, OFFICIAL_STYLE_NAMES[preset_name]), path)


def speech_like(seconds: float):
    import numpy as np

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    voiced = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 560, 1120), start=1))
    return (0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2) * voiced + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def worker(args) -> None:
    import resource

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from vendor_model.checkpoint import load_bundle
    from vendor_model.config import SamplerConfig
    from vendor_model.pipeline import generate

    started = time.perf_counter()
    bundle = load_bundle(args.checkpoint)
    load_s = time.perf_counter() - started
    sampler = SamplerConfig(steps=50, seed=0, fast=args.path == "fast")
    generate(bundle.model, speech_like(1.0), sample_rate=16000, sampler=SamplerConfig(steps=2, fast=sampler.fast))  # warm-up

    audio = speech_like(args.seconds)
    rows = []
    for _ in range(args.repeats):
        ticks = []
        t0 = time.perf_counter()
        result = generate(bundle.model, audio, sample_rate=16000, sampler=sampler, device="cpu",
                          progress=lambda done, total: ticks.append(time.perf_counter()))
        t3 = time.perf_counter()
        rows.append({"encode": ticks[0] - t0, "sampling": ticks[-1] - ticks[0], "total": t3 - t0})
    np.save(args.output, result.offsets)
    summary = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    summary.update(load=load_s, peak_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                   frames=result.num_frames, repeats=args.repeats)
    print(json.dumps(summary))


def run_case(checkpoint: Path, seconds: float, path: str, repeats: int, threads: int, output: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", "--checkpoint", str(checkpoint), "--seconds", str(seconds),
           "--path", path, "--repeats", str(repeats), "--threads", str(threads), "--output", str(output)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"benchmark worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["vocaset", "biwi"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-repeats-long", type=int, default=1, help="repeats of the slow path on clips over 30 s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.seconds = args.seconds[0]
        return worker(args)

    import numpy as np

    print(f"threads {args.threads}, 50 official sampler steps, batch 1, random weights at full size; medians of repeats")
    header = f"{'model':8s} {'clip':>5s} {'path':9s} {'load':>6s} {'encode':>7s} {'sampling':>9s} {'total':>7s} {'RTF':>6s} {'peak':>7s}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lines, ratios = [], []
        for name in args.presets:
            checkpoint = tmp / f"{name}.safetensors"
            make_checkpoint(name, checkpoint)
            for seconds in args.seconds:
                cases = {}
                for path in ("fast", "reference"):
                    repeats = args.reference_repeats_long if path == "reference" and seconds > 30 else args.repeats
                    out = tmp / f"{name}_{seconds}_{path}.npy"
                    cases[path] = r = run_case(checkpoint, seconds, path, repeats, args.threads, out)
                    lines.append(
                        f"{name:8s} {seconds:4.0f}s {path:9s} {r['load']:5.2f}s {r['encode']:6.2f}s {r['sampling']:8.2f}s "
                        f"{r['total']:6.2f}s {r['total'] / seconds:6.3f} {r['peak_gb']:5.2f}GB"
                    )
                    print(lines[-1], flush=True)
                fast = np.load(tmp / f"{name}_{seconds}_fast.npy")
                reference = np.load(tmp / f"{name}_{seconds}_reference.npy")
                rel = float(np.abs(fast - reference).max() / np.abs(reference).max())
                ratios.append(
                    f"{name:8s} {seconds:4.0f}s  sampling x{cases['reference']['sampling'] / cases['fast']['sampling']:.2f}, "
                    f"total x{cases['reference']['total'] / cases['fast']['total']:.2f}, "
                    f"max |fast - reference| / max |reference| = {rel:.1e}"
                )
                print(ratios[-1], flush=True)
                for f in tmp.glob(f"{name}_{seconds}_*.npy"):
                    f.unlink()
    print()
    print(header)
    print("\n".join(lines))
    print("\nfast path vs straightforward path, same run:")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
