"""Long audio: time, peak memory and continuity across window joins.

    .venv/bin/python bench/long_audio.py                    # 10 min clip, VOCASET size
    .venv/bin/python bench/long_audio.py --minutes 3 --window 600 --overlap 30

Random weights at full size (as in bench/inference.py). Continuity: the per-frame
speed |x[t+1] - x[t]| (mean over vertices, mm per frame) in the frames where two
windows are cross-faded, against the frames that belong to one window only.
Note: with random weights the motion is not speech-like; the ratio shows the
joining works, not how a trained model's joins look.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.inference import speech_like  # noqa: E402
from vendor_model.config import SamplerConfig, preset  # noqa: E402
from vendor_model.model import DiffSpeaker  # noqa: E402
from vendor_model.pipeline import generate  # noqa: E402


def speeds_mm(offsets: np.ndarray) -> np.ndarray:
    """(T, V, 3) -> (T-1,) mean vertex speed in mm per frame."""
    return np.linalg.norm(np.diff(offsets, axis=0), axis=-1).mean(axis=-1) * 1000


def join_frames(windows, num_frames: int) -> np.ndarray:
    """Velocity indices touching a cross-faded region (frames covered by two windows)."""
    covered = np.zeros(num_frames, dtype=int)
    for start, end in windows:
        covered[start:end] += 1
    shared = covered > 1
    return np.flatnonzero(shared[:-1] | shared[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--preset", default="vocaset")
    parser.add_argument("--window", type=int, default=None, help="frames per window (default: the model's 3000)")
    parser.add_argument("--overlap", type=int, default=None, help="cross-fade frames (default: one second)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = DiffSpeaker(preset(args.preset)).eval()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.02)
    audio = speech_like(args.minutes * 60)
    sampler = SamplerConfig(seed=0, window_frames=args.window, overlap_frames=args.overlap)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    started = time.perf_counter()
    result = generate(model, audio, sample_rate=16000, sampler=sampler, device="cpu")
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    offsets = result.offsets[0]
    speed = speeds_mm(offsets)
    joins = join_frames(result.windows, result.num_frames)
    inside = np.setdiff1d(np.arange(len(speed)), joins)

    print(f"clip {args.minutes:.1f} min -> {result.num_frames} frames in {len(result.windows)} windows "
          f"(window {result.windows[0][1] - result.windows[0][0]} frames)")
    print(f"time {elapsed:.1f} s (RTF {elapsed / (args.minutes * 60):.3f}), peak RSS {peak:.2f} GB (model loaded: {base_rss:.2f} GB)")
    print(f"speed inside windows: median {np.median(speed[inside]):.4f}, p99 {np.percentile(speed[inside], 99):.4f}, max {speed[inside].max():.4f} mm/frame")
    print(f"speed in cross-fades: median {np.median(speed[joins]):.4f}, max {speed[joins].max():.4f} mm/frame "
          f"(max ratio to inside p99: {speed[joins].max() / np.percentile(speed[inside], 99):.2f})")


if __name__ == "__main__":
    main()
