"""Cost of the p/b/m lip closure step (vendor_model/lip_closure.py) on the built-in head.

    .venv/bin/python bench/lip_closure.py                      # 10 s, 60 s and 10 min clips
    .venv/bin/python bench/lip_closure.py --seconds 60 --repeats 9

The step runs after sampling, on one take at a time. Its input here is a jaw-like motion on
the project's head (9,277 vertices, 30 fps) with a heard p/b/m every 0.3 s, so that most of
the clip's closures are placed; the hama posteriors themselves are not timed (the model has
already computed them and they come from its cache). Prints the median time and the peak of
memory the step allocates on top of its input (tracemalloc, which numpy reports to), next to
the size of the take itself.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synth.head import build_head  # noqa: E402
from vendor_model.lip_closure import LipClosure  # noqa: E402

FPS, EVIDENCE_FPS = 30, 50.0


def jaw_take(head, num_frames: int, seed: int = 0) -> np.ndarray:
    """(T, V, 3) float32: jaw, chin and lower lip drop with a 0-8 mm syllable rhythm."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames) / FPS
    opening = 0.004 * (1 - np.cos(2 * np.pi * 4.0 * t)) + 0.0005 * rng.standard_normal(num_frames)  # (T,) metres
    moving = np.unique(np.concatenate([head.regions[name] for name in ("jaw", "chin", "lower_lip", "lower_lip_seam")]))
    offsets = np.zeros((num_frames, len(head.vertices), 3), dtype=np.float32)
    offsets[:, moving, 2] = -opening[:, None]  # the head is z-up
    return offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", nargs="+", type=float, default=[10.0, 60.0, 600.0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    head = build_head()
    lips = LipClosure(head.vertices.astype(np.float64), tuple(head.regions["upper_lip_seam"].tolist()),
                      tuple(head.regions["lower_lip_seam"].tolist()))
    print(f"{'clip':>6s} {'frames':>7s} {'take':>8s} {'median':>8s} {'peak extra':>11s} {'closures':>9s}")
    for seconds in args.seconds:
        take = jaw_take(head, int(seconds * FPS))
        heard = np.zeros(int(seconds * EVIDENCE_FPS) + 1)
        heard[:: int(0.3 * EVIDENCE_FPS)] = 1.0
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            _, placed = lips.apply(take, heard, EVIDENCE_FPS, FPS)
            times.append(time.perf_counter() - started)
        tracemalloc.start()
        closed, _ = lips.apply(take, heard, EVIDENCE_FPS, FPS)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del closed
        print(f"{seconds:5.0f}s {len(take):7d} {take.nbytes / 2**20:6.0f}MB {statistics.median(times):7.3f}s "
              f"{peak / 2**20:9.0f}MB {placed:9d}")


if __name__ == "__main__":
    main()
