"""Baking speed: compact and exact mode on a FLAME-sized mesh.

    .venv/bin/python bench/bake.py                  # 5023 vertices, 300 frames (10 s at 30 fps)
    .venv/bin/python bench/bake.py --frames 900 --scene-fps 24 --repeats 3
    .venv/bin/python bench/bake.py --rank 48        # many keys: the bpy write side

The mesh is a flat grid with 5023 vertices; the motion is 300 frames of a rank-6
signal (about 1 cm peak) plus 2 um Gaussian noise per coordinate, the shape of what
the model produces (--rank changes the rank). Each timed run starts from a mesh with no tool keys (the previous
run is removed, untimed), so it measures a first bake; re-bake and removal are timed
separately. Reported: medians over the repeats of the whole bake_offsets call, of the
maths inside it (compact: the SVD-based basis search; exact: the key shapes and
schedule), and of the rest, which is the bpy write time (shape keys, F-curves, actions,
plus input checks and resampling).
Target: compact mode under 0.5 s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="ds-blender-user-"))

import bpy  # noqa: E402

from diffspeaker_blender import bake  # noqa: E402
from diffspeaker_blender.core import bake_math, timing  # noqa: E402

N_VERTS = 5023
MODEL_FPS = 30
COMPACT_TARGET_S = 0.5


def grid_mesh(n_verts: int) -> bpy.types.Object:
    """A flat grid of exactly n_verts vertices (the last row partial), quads where complete."""
    cols = int(np.ceil(np.sqrt(n_verts)))
    index = np.arange(n_verts)
    co = np.zeros((n_verts, 3), dtype=np.float32)
    co[:, 0] = (index % cols) * (0.2 / cols) - 0.1
    co[:, 2] = (index // cols) * (0.2 / cols) - 0.1
    c = index % cols
    ok = (c < cols - 1) & (index + cols + 1 < n_verts)
    a = index[ok]
    quads = np.stack([a, a + 1, a + cols + 1, a + cols], axis=1).astype(np.int32)  # (F, 4)
    mesh = bpy.data.meshes.new("Face")
    mesh.vertices.add(n_verts)
    mesh.vertices.foreach_set("co", co.ravel())
    mesh.loops.add(quads.size)
    mesh.loops.foreach_set("vertex_index", quads.ravel())
    mesh.polygons.add(len(quads))
    mesh.polygons.foreach_set("loop_start", np.arange(0, quads.size, 4, dtype=np.int32))
    mesh.update()
    mesh.validate()
    obj = bpy.data.objects.new("Face", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def synthetic_offsets(n_frames: int, n_verts: int, rank: int = 6, noise_m: float = 2e-6, seed: int = 0):
    """(1, T, V, 3) float32: rank-`rank` smooth motion peaking near 1 cm, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames) / MODEL_FPS
    curves = np.stack([np.sin(2 * np.pi * (0.5 + 0.7 * k) * t + k) for k in range(rank)], axis=1)  # (T, r)
    shapes = rng.standard_normal((rank, n_verts * 3)) * (0.01 / np.sqrt(rank))  # (r, 3V)
    flat = curves @ shapes + noise_m * rng.standard_normal((n_frames, n_verts * 3))
    return flat.reshape(1, n_frames, n_verts, 3).astype(np.float32)


def median_time(fn, repeats: int, before=None):
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


class MathsTimer:
    """Times the bake_math calls bake_offsets makes, inside the same run (patched in place)."""

    def __init__(self, *names: str):
        self.names, self.spent, self.runs = names, 0.0, []

    def __enter__(self):
        self.originals = {name: getattr(bake_math, name) for name in self.names}
        for name, original in self.originals.items():
            setattr(bake_math, name, self._timed(original))
        return self

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(bake_math, name, original)

    def _timed(self, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start
        return wrapper

    def timed_run(self, fn):
        """Run fn; record (total, maths) seconds; returns fn's result."""
        self.spent = 0.0
        start = time.perf_counter()
        result = fn()
        self.runs.append((time.perf_counter() - start, self.spent))
        return result

    def medians(self):
        totals, maths = zip(*self.runs)
        return statistics.median(totals), statistics.median(maths), statistics.median(t - m for t, m in self.runs)


def evaluated_error_mm(obj, offsets: np.ndarray, scene_fps: float, frames) -> float:
    """Max per-vertex distance (mm) between the evaluated mesh and basis + offsets."""
    expected = timing.resample_motion(offsets[0], MODEL_FPS, scene_fps)
    basis = np.empty(3 * len(obj.data.vertices), dtype=np.float32)
    obj.data.shape_keys.reference_key.points.foreach_get("co", basis)
    worst = 0.0
    for j in frames:
        bpy.context.scene.frame_set(1 + j)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated.to_mesh()
        co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        diff = (co - basis).reshape(-1, 3).astype(np.float64) - expected[j]
        worst = max(worst, float(np.linalg.norm(diff, axis=1).max()))
    return worst * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--vertices", type=int, default=N_VERTS)
    parser.add_argument("--scene-fps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-error-mm", type=float, default=0.1)
    parser.add_argument("--rank", type=int, default=6, help="rank of the synthetic motion (about the key count)")
    args = parser.parse_args()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = args.scene_fps, 1.0
    obj = grid_mesh(args.vertices)
    offsets = synthetic_offsets(args.frames, args.vertices, rank=args.rank)
    bound = args.max_error_mm / 1e3
    print(f"bpy {bpy.app.version_string}, numpy {np.__version__}; {args.vertices} vertices, {args.frames} frames "
          f"at {MODEL_FPS} fps onto a {args.scene_fps} fps scene; median of {args.repeats}")

    def clean():
        bake.remove_baked(obj)

    def run(mode):
        return bake.bake_offsets(obj, offsets, model_fps=MODEL_FPS, scene=scene, start_frame=1, mode=mode,
                                 max_error_m=bound)

    # Compact.
    with MathsTimer("compact_basis") as timer:
        for _ in range(args.repeats):
            clean()
            result = timer.timed_run(lambda: run("COMPACT"))
    total_s, svd_s, write_s = timer.medians()
    rebake_s, _ = median_time(lambda: run("COMPACT"), args.repeats)
    remove_s, _ = median_time(lambda: bake.remove_baked(obj), 1)
    run("COMPACT")
    probe = sorted({0, args.frames // 3, (2 * args.frames) // 3, result.last_frame - result.first_frame})
    measured = evaluated_error_mm(obj, offsets, args.scene_fps, [int(j) for j in probe])
    verdict = "OK" if total_s < COMPACT_TARGET_S else "OVER TARGET"
    print(f"COMPACT  {result.keys:4d} keys  total {total_s:.3f} s  (SVD/basis {svd_s:.3f} s, bpy write "
          f"{write_s:.3f} s)  re-bake {rebake_s:.3f} s  remove {remove_s:.3f} s  "
          f"max error {result.max_error_mm:.4f} mm (target {args.max_error_mm} mm; evaluated mesh "
          f"{measured:.4f} mm)  [{verdict}: target < {COMPACT_TARGET_S} s]")
    print(f"         summary: {result.summary()}")

    # Exact.
    with MathsTimer("exact_keys", "exact_key_schedule") as timer:
        for _ in range(args.repeats):
            clean()
            result = timer.timed_run(lambda: run("EXACT"))
    total_s, math_s, write_s = timer.medians()
    remove_s, _ = median_time(lambda: bake.remove_baked(obj), 1)
    run("EXACT")
    shown = bake_math.exact_key_schedule(args.frames, 1, MODEL_FPS, args.scene_fps).shown_key
    exact_err = 0.0
    for j in probe:
        bpy.context.scene.frame_set(1 + int(j))
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        mesh = evaluated.to_mesh()
        co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        basis = np.empty_like(co)
        obj.data.shape_keys.reference_key.points.foreach_get("co", basis)
        diff = (co - basis).reshape(-1, 3) - offsets[0, shown[int(j)]]
        exact_err = max(exact_err, float(np.linalg.norm(diff, axis=1).max()) * 1e3)
    print(f"EXACT    {result.keys:4d} keys  total {total_s:.3f} s  (maths {math_s:.3f} s, bpy write "
          f"{write_s:.3f} s)  remove {remove_s:.3f} s  evaluated mesh vs nearest model frame "
          f"{exact_err:.5f} mm")
    print(f"         summary: {result.summary()}")


if __name__ == "__main__":
    main()
