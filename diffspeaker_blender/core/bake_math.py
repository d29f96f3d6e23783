"""Turning per-frame vertex offsets (T, V, 3) into shape keys and keyframes.

Two modes:

* compact: a few shape keys (a truncated SVD basis) whose animated values reproduce
  the motion to within a stated per-vertex error; small files, smooth curves.
* exact: one shape key per model frame, switched on one at a time (CONSTANT keys).

Key names carry ownership: the add-on only ever replaces keys for which
``is_tool_key`` is True, so an artist's own keys ("Basis", "jawOpen", ...) are never touched.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .timing import resampled_length

KEY_PREFIX = "DS_"
_COMPACT_KIND = "basis"
_EXACT_KIND = "frame"
# [0-9], not \d: \d also matches non-ASCII digits, which int() would accept.
_TOOL_KEY = re.compile(rf"{KEY_PREFIX}({_COMPACT_KIND}|{_EXACT_KIND})_([0-9]+)")

# Frame-rate ratios are floats (23.976 = 24000/1001); nudge before floor/round so an
# exact tie or integer is not lost to the last bit.
_ROUND_EPS = 1e-9


# --------------------------------------------------------------------------------------
# Key names
# --------------------------------------------------------------------------------------


def _check_index(i: int) -> int:
    if isinstance(i, bool) or int(i) != i or i < 0:
        raise ValueError(f"key index must be a non-negative integer, got {i!r}")
    return int(i)


def compact_key_name(i: int) -> str:
    """Name of compact basis key i: "DS_basis_000"."""
    return f"{KEY_PREFIX}{_COMPACT_KIND}_{_check_index(i):03d}"


def exact_key_name(i: int) -> str:
    """Name of the exact-mode key for model frame i: "DS_frame_0000"."""
    return f"{KEY_PREFIX}{_EXACT_KIND}_{_check_index(i):04d}"


def parse_tool_key(name: str) -> tuple[str, int] | None:
    """("basis" | "frame", index) for a name this tool makes, else None.

    Only canonical names count ("DS_basis_007", not "DS_basis_7" or "ds_basis_007"),
    so a look-alike key made by hand is never mistaken for ours and replaced.
    """
    if not isinstance(name, str):
        return None
    match = _TOOL_KEY.fullmatch(name)
    if match is None:
        return None
    kind, index = match.group(1), int(match.group(2))
    canonical = compact_key_name(index) if kind == _COMPACT_KIND else exact_key_name(index)
    return (kind, index) if canonical == name else None


def is_tool_key(name: str) -> bool:
    """True only for names made by compact_key_name / exact_key_name."""
    return parse_tool_key(name) is not None


# --------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------


def _check_offsets(offsets: np.ndarray) -> np.ndarray:
    arr = np.asarray(offsets)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"offsets must be shaped (frames, vertices, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"offsets must have at least one frame and one vertex, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"offsets must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("offsets contain NaN or infinite values")
    return arr


def _max_vertex_error(residual: np.ndarray) -> float:
    """Largest per-vertex Euclidean norm of residual (T, 3n); 0.0 when empty."""
    if residual.size == 0:
        return 0.0
    sq = residual.reshape(residual.shape[0], -1, 3)
    return float(np.sqrt(np.einsum("tvc,tvc->tv", sq, sq).max()))


# --------------------------------------------------------------------------------------
# Compact mode
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays, compare by identity
class CompactBake:
    """Shape-key basis and per-frame values; offsets ≈ weights @ basis."""

    basis: np.ndarray  # (K, V, 3) float32 shape-key deltas in metres (key K = template + basis[K])
    weights: np.ndarray  # (T, K) float32 key values per model frame; max |w| per column is 1
    slider_range: np.ndarray  # (K, 2) float32 [slider_min, slider_max]; contains 0 and every weight
    max_error_m: float  # achieved max per-vertex error over all frames, of the float32 arrays above
    target_error_m: float  # the bound that was asked for
    rank: int  # K
    capped: bool  # True when the bound was not met: max_keys (or float precision) stopped the search

    def __post_init__(self) -> None:
        # Basis and weights must agree on K; a mismatch would only surface inside Blender.
        if self.basis.shape[0] != self.rank or self.weights.shape[1] != self.rank:
            raise ValueError(f"inconsistent bake: rank {self.rank}, basis {self.basis.shape}, "
                             f"weights {self.weights.shape}")


def _principal_components(x: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Leading left singular vectors of x (n, m) and the matching projections.

    Returns u (n, r) with orthonormal columns, in decreasing singular value order, and
    b = u.T @ x (r, m), r <= limit; numerically zero components are dropped. The Gram
    matrix of the smaller side is eigendecomposed, which for 300 frames x 15k
    coordinates is several times faster than a thin SVD and accurate to singular values
    ~1e-7 of the largest (the bound check below uses x itself, so this never hides error).
    """
    n, m = x.shape
    tiny = max(n, m) * np.finfo(np.float64).eps  # as numpy's matrix_rank, on eigenvalues
    if n <= m:
        eigval, eigvec = np.linalg.eigh(x @ x.T)  # (n,), (n, n) ascending
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = eigval[order], eigvec[:, order]
        keep = int(np.count_nonzero(eigval > eigval[0] * tiny)) if eigval[0] > 0 else 0
        u = eigvec[:, : min(keep, limit)]
    else:
        # Long clips on small meshes: the (m, m) Gram is the small one. x @ v spans the
        # same leading left subspaces; QR keeps every prefix span (so rank-K truncations
        # stay exact) while restoring orthonormality lost to small singular values.
        eigval, eigvec = np.linalg.eigh(x.T @ x)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = eigval[order], eigvec[:, order]
        keep = int(np.count_nonzero(eigval > eigval[0] * tiny)) if eigval[0] > 0 else 0
        u, _ = np.linalg.qr(x @ eigvec[:, : min(keep, limit)])
    return u, u.T @ x


def _smallest_rank(x: np.ndarray, u: np.ndarray, b: np.ndarray, bound: float, first: int) -> int:
    """Smallest K >= first whose rank-K projection u[:, :K] @ b[:K] of x (n, 3V) has every
    vertex within bound; u.shape[1] if none does.

    The max error is not guaranteed monotone in K, so candidates are checked in order;
    per-vertex energies make it cheap. Over time the residual of vertex v has energy
    E_v(K) = |x_v|^2 - sum_{k<K} |b_kv|^2 (u is orthonormal), and
        sqrt(E_v / n) <= max_t |residual_tv| <= sqrt(E_v),
    so ranks whose lower bound fails are skipped unchecked, and only vertices whose
    upper bound fails need the explicit residual.
    """
    n = x.shape[0]
    r = u.shape[1]
    if n == 0:
        return 0  # nothing moves: the template is exact
    total = np.einsum("tvc,tvc->v", x.reshape(n, -1, 3), x.reshape(n, -1, 3))  # (V,)
    per_component = np.einsum("kvc,kvc->kv", b.reshape(r, -1, 3), b.reshape(r, -1, 3))  # (r, V)
    energy = total - np.concatenate([np.zeros((1, total.size)), np.cumsum(per_component, axis=0)])
    energy = np.maximum(energy, 0.0)  # (r + 1, V) residual energy after K components
    slack = 64 * np.finfo(np.float64).eps * total  # (V,) rounding in that subtraction
    limit_sq = bound * bound
    for k in range(first, r + 1):
        if np.max(energy[k] - slack, initial=0.0) / n > limit_sq:
            continue  # even the RMS over frames exceeds the bound somewhere
        suspect = np.flatnonzero(energy[k] + slack > limit_sq)  # (S,) vertices that could fail
        if suspect.size == 0:
            return k
        cols = (suspect[:, None] * 3 + np.arange(3)).ravel()  # (3S,)
        residual = x[:, cols] - u[:, :k] @ b[:k, cols]  # (n, 3S)
        if _max_vertex_error(residual) <= bound:
            return k
    return r


def compact_basis(offsets: np.ndarray, max_error_m: float = 1e-4, max_keys: int = 64) -> CompactBake:
    """The fewest shape keys (at most max_keys) reproducing offsets (T, V, 3) to within
    max_error_m per vertex on every frame, from a truncated SVD of the (T, 3V) matrix.

    No mean is subtracted: a mean-centred basis would need a constant "mean" key, and
    weight 0 would no longer mean the rest pose. Uncentred, all weights 0 is exactly the
    template, and frames that are exactly the rest pose (silence) get weights of exactly 0.
    Each key is scaled so its largest |weight| is 1, at a positive weight.
    """
    arr = _check_offsets(offsets)
    bound = float(max_error_m)
    if not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"max_error_m must be a positive distance in metres, got {max_error_m!r}")
    if isinstance(max_keys, bool) or int(max_keys) != max_keys or max_keys < 1:
        raise ValueError(f"max_keys must be a positive integer, got {max_keys!r}")
    n_frames, n_verts, _ = arr.shape
    x_all = arr.reshape(n_frames, 3 * n_verts).astype(np.float64)  # (T, 3V)
    # Rest-pose frames are left out of the decomposition and keep weight 0 exactly
    # by construction, rather than trusting the eigensolver to return exact zeros there.
    moving = np.flatnonzero(np.any(x_all != 0, axis=1))  # (Tm,)
    x = x_all if moving.size == n_frames else x_all[moving]  # (Tm, 3V); no 36 MB copy when all move

    if moving.size:
        u, b = _principal_components(x, int(max_keys))  # (Tm, r), (r, 3V)
    else:
        u, b = np.zeros((0, 0)), np.zeros((0, 3 * n_verts))
    r = u.shape[1]

    first = 0
    while True:
        k = _smallest_rank(x, u, b, bound, first)
        # Scale each key so its weight column peaks at +1: a friendly slider range, and
        # the key's shape is the extreme pose it reaches. Sign is free in an SVD.
        uk = u[:, :k]  # (Tm, K)
        peak = uk[np.argmax(np.abs(uk), axis=0), np.arange(k)] if k else np.ones(0)  # (K,) signed, non-zero
        weights = np.zeros((n_frames, k), dtype=np.float32)
        weights[moving] = (uk / peak).astype(np.float32)
        basis = (b[:k] * peak[:, None]).astype(np.float32)  # (K, 3V)
        # The achieved error is measured on what Blender will get: the float32 arrays.
        error = _max_vertex_error(x - weights[moving].astype(np.float64) @ basis.astype(np.float64))
        if error <= bound or k >= r:
            break
        first = k + 1  # float32 rounding tipped a borderline rank over the bound

    # Include 0 in the range: Blender clamps key values to [slider_min, slider_max], and
    # 0 (rest) must stay reachable even for a key whose weights never go negative.
    if k:
        slider = np.stack([np.minimum(weights.min(axis=0), 0), np.maximum(weights.max(axis=0), 0)], axis=1)
    else:
        slider = np.zeros((0, 2), dtype=np.float32)
    return CompactBake(
        basis=basis.reshape(k, n_verts, 3),
        weights=weights,
        slider_range=slider.astype(np.float32),
        max_error_m=error,
        target_error_m=bound,
        rank=k,
        capped=bool(error > bound),
    )


def reconstruct(bake: CompactBake) -> np.ndarray:
    """Offsets (T, V, 3) float32 that the compact keys produce: weights @ basis."""
    k, n_verts, _ = bake.basis.shape
    flat = bake.weights.astype(np.float64) @ bake.basis.reshape(k, 3 * n_verts).astype(np.float64)
    return flat.reshape(-1, n_verts, 3).astype(np.float32)


# --------------------------------------------------------------------------------------
# Exact mode
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ExactBake:
    """One shape key per model frame: key i's delta is offsets[i]."""

    shapes: np.ndarray  # (T, V, 3) float32 deltas in metres

    @property
    def n_keys(self) -> int:
        return int(self.shapes.shape[0])


def exact_keys(offsets: np.ndarray) -> ExactBake:
    """Exact-mode shapes (T, V, 3) float32, a copy of offsets."""
    return ExactBake(shapes=np.array(_check_offsets(offsets), dtype=np.float32, copy=True))


@dataclass(frozen=True, eq=False)
class KeySchedule:
    """Keyframes for exact mode; use CONSTANT interpolation on every point."""

    frames: tuple  # per key i: (N_i,) float64 scene frames of its keyframes (N_i = 3, or 0 if never shown)
    values: tuple  # per key i: (N_i,) float32 values at those frames: 0, 1, 0
    shown_key: np.ndarray  # (n_scene,) int64: the key at 1.0 on scene frame scene_start_frame + j
    scene_start_frame: float


def exact_key_schedule(n_frames: int, scene_start_frame: float, src_fps: float, dst_fps: float) -> KeySchedule:
    """Keyframes so that exactly one key is at 1.0 on each scene frame of the clip.

    Scene frame j (at scene_start_frame + j, audio time j / dst_fps) shows the nearest
    model frame, round(j * src_fps / dst_fps), ties to the later one. When the scene is
    faster than the model a key stays on for several frames; when it is slower some
    keys are never shown and get no keyframes (leave them at 0). Each shown key gets
    0 on the frame before its first frame, 1 on its first frame and 0 on the frame
    after its last, so before and after the clip every key is 0 (the rest pose).
    The scene frames are those resample_motion gives (resampled_length), so both bake
    modes end on the same frame; the last model frame can therefore go unshown.
    Pass an integral scene_start_frame to have the switches land on whole frames.
    """
    n_scene = resampled_length(n_frames, src_fps, dst_fps)  # validates the arguments
    start = float(scene_start_frame)
    if not math.isfinite(start):
        raise ValueError(f"scene_start_frame must be finite, got {scene_start_frame!r}")
    j = np.arange(n_scene, dtype=np.int64)
    if float(src_fps) == float(dst_fps):
        shown = j
    else:
        ratio = float(src_fps) / float(dst_fps)
        shown = np.minimum(np.floor(j * ratio + 0.5 + _ROUND_EPS).astype(np.int64), int(n_frames) - 1)

    # shown is non-decreasing, so each key's scene frames form one run [first, last].
    keys, first = np.unique(shown, return_index=True)
    last = np.append(first[1:], n_scene) - 1
    frames: list = [np.zeros(0, dtype=np.float64)] * int(n_frames)
    values: list = [np.zeros(0, dtype=np.float32)] * int(n_frames)
    pulse = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    for key, lo, hi in zip(keys.tolist(), first.tolist(), last.tolist(), strict=True):
        frames[key] = np.array([start + lo - 1, start + lo, start + hi + 1], dtype=np.float64)
        values[key] = pulse.copy()
    return KeySchedule(frames=tuple(frames), values=tuple(values), shown_key=shown, scene_start_frame=start)


# --------------------------------------------------------------------------------------
# Bulk keyframe writing
# --------------------------------------------------------------------------------------


def fcurve_points(frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Interleave frames (N,) and values (N,) into (2N,) float32 [f0, v0, f1, v1, ...],
    the layout of ``fcurve.keyframe_points.foreach_set("co", ...)``."""
    f = np.asarray(frames, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if f.ndim != 1 or v.ndim != 1 or f.shape != v.shape:
        raise ValueError(f"frames and values must be 1-D and the same length, got {f.shape} and {v.shape}")
    if not (np.isfinite(f).all() and np.isfinite(v).all()):
        raise ValueError("frames and values must be finite")
    out = np.empty(2 * f.size, dtype=np.float32)
    out[0::2] = f
    out[1::2] = v
    return out
