"""Non-destructive cleanup of a compact bake: regions, smoothing, intensity, time offset
and keyframe decimation, derived from the raw key values every time (numpy only).

A compact bake is split into face regions ("lips", "jaw", "upper_face", "other"; or one
"face" region on a mesh whose regions are unknown), each with its own shape keys, so a
key belongs to exactly one region and scaling or smoothing its values touches only that
region's vertices. The add-on keeps the raw values (K, n) on the scene's frame grid and
re-derives the keyframes from them and a ``CleanupSettings`` on every change:

    raw (K, n) --smooth (per region)--> --x intensity (per region)--> cleaned (K, n)
    cleaned --decimate (max error)--> keyframes --shift (time offset)--> F-curves

so the order in which an artist applies the operations never matters, and applying one
twice is the same as applying it once.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from . import bake_math  # by module: bench/bake.py times bake_math.compact_basis in place

# Disjoint by priority: a vertex in several regions belongs to the first one listed.
# Lips first: they are what lip-sync is judged by, and the jaw region overlaps them.
PRIORITY = ("lips", "jaw", "upper_face")
OTHER = "other"  # vertices in no named region
FACE = "face"  # the single region of a mesh whose regions are unknown
ARTIST_REGIONS = ("jaw", "lips", "upper_face", OTHER, FACE)  # what the settings may name
MAX_SIGMA = 30.0  # frames; wider smoothing erases speech altogether
MAX_INTENSITY = 3.0  # Blender's shape-key sliders stop at 10; raw values peak at 1
MAX_OFFSET = 1000.0  # frames
# len(synth.head.build_head().vertices), so other meshes never pay for building the head
# (tests/test_cleanup.py keeps it true).
DEFAULT_HEAD_VERTICES = 9277


# --------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------


def head_cleanup_regions(head_regions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The project head's regions (``synth.head``: upper_lip, jaw, chin, cheeks, ...) mapped
    onto cleanup regions (index arrays, may overlap; ``disjoint_regions`` resolves that).

    The cheeks and the inside of the mouth go with the jaw: opening the mouth is what
    moves them most, so a quieter jaw should quieten them too.
    """
    def union(*names: str) -> np.ndarray:
        parts = [np.asarray(head_regions[name]).ravel() for name in names if name in head_regions]
        return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    return {
        "lips": union("lips", "upper_lip", "lower_lip"),
        "jaw": union("jaw", "chin", "cheeks", "mouth_interior", "lower_teeth", "tongue"),
        "upper_face": union("upper_face", "eyes"),
    }


def cleanup_regions_for(n_vertices: int) -> dict[str, np.ndarray] | None:
    """The cleanup regions of the project's head when n_vertices is its vertex count,
    else None (an unknown template: one "face" region)."""
    if int(n_vertices) != DEFAULT_HEAD_VERTICES:
        return None
    head = _default_head()
    if head is None or len(head.vertices) != int(n_vertices):
        return None
    return head_cleanup_regions(head.regions)


def _default_head():
    from ..vendor import bundled_module  # bpy-free; the head ships with the add-on

    try:
        return bundled_module("synth", "head").build_head()  # cached by synth.head
    except ModuleNotFoundError:
        return None


def disjoint_regions(regions: Mapping[str, np.ndarray] | None, n_vertices: int) -> tuple:
    """((name, sorted vertex indices (M,) int64), ...): disjoint, non-empty, covering every
    vertex. Named regions are taken in PRIORITY order, then any others in the given order;
    vertices left over form OTHER. None (or no vertices in any region) gives one FACE region.

    A region is a bool mask (V,) or an index array."""
    n = int(n_vertices)
    if not regions:
        return ((FACE, np.arange(n, dtype=np.int64)),)
    names = [name for name in PRIORITY if name in regions]
    names += [name for name in regions if name not in names and name != OTHER]
    names += [OTHER] if OTHER in regions else []
    taken = np.zeros(n, dtype=bool)
    out = []
    for name in names:
        mask = _as_mask(regions[name], n, name) & ~taken
        taken |= mask
        if mask.any():
            out.append((name, np.flatnonzero(mask)))
    if not out:
        return ((FACE, np.arange(n, dtype=np.int64)),)
    if not taken.all():
        rest = np.flatnonzero(~taken)
        if out[-1][0] == OTHER:
            out[-1] = (OTHER, np.union1d(out[-1][1], rest))
        else:
            out.append((OTHER, rest))
    return tuple(out)


def _as_mask(region, n: int, name: str) -> np.ndarray:
    arr = np.asarray(region)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"region '{name}' is a mask of {arr.size} vertices; the mesh has {n}")
        return arr.copy()
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"region '{name}' must list vertex indices from 0 to {n - 1}")
    mask = np.zeros(n, dtype=bool)
    mask[arr.ravel().astype(np.int64)] = True
    return mask


# --------------------------------------------------------------------------------------
# Per-region compact bake
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RegionalBake:
    """A compact bake whose keys each belong to one region (keys sorted by region)."""

    compact: bake_math.CompactBake  # basis (K, V, 3) zero outside each key's region, weights (T, K)
    key_regions: tuple  # (K,) region name of each key


def regional_compact_basis(offsets: np.ndarray, regions: tuple, max_error_m: float = 1e-4,
                           max_keys: int = 64) -> RegionalBake:
    """compact_basis per region of ``disjoint_regions`` on offsets (T, V, 3): each region
    gets the fewest keys (at most max_keys each) that keep its vertices within max_error_m;
    the regions are disjoint, so the bound holds for every vertex."""
    arr = np.asarray(offsets)
    if len(regions) == 1 and regions[0][1].size == arr.shape[1]:
        compact = bake_math.compact_basis(arr, max_error_m, max_keys)  # no copy for the common case
        return RegionalBake(compact, (regions[0][0],) * compact.rank)
    parts = [(name, index, bake_math.compact_basis(arr[:, index], max_error_m, max_keys)) for name, index in regions]
    k = sum(part.rank for _, _, part in parts)
    basis = np.zeros((k, arr.shape[1], 3), dtype=np.float32)  # (K, V, 3)
    weights, sliders, key_regions = [], [], []
    first = 0
    for name, index, part in parts:
        basis[first:first + part.rank, index] = part.basis
        weights.append(part.weights)
        sliders.append(part.slider_range)
        key_regions += [name] * part.rank
        first += part.rank
    compact = bake_math.CompactBake(
        basis=basis,
        weights=np.concatenate(weights, axis=1),  # (T, K)
        slider_range=np.concatenate(sliders, axis=0),  # (K, 2)
        max_error_m=max(part.max_error_m for _, _, part in parts),
        target_error_m=parts[0][2].target_error_m,
        rank=k,
        capped=any(part.capped for _, _, part in parts),
    )
    return RegionalBake(compact, tuple(key_regions))


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupSettings:
    """What the artist asked for. Defaults reproduce the raw bake exactly."""

    smoothing: Mapping[str, float] = field(default_factory=dict)  # region -> Gaussian sigma, scene frames
    intensity: Mapping[str, float] = field(default_factory=dict)  # region -> gain; 1 = as generated
    time_offset: float = 0.0  # scene frames, may be fractional; positive plays later
    decimate_max_error_mm: float | None = None  # None: a keyframe on every frame

    def __post_init__(self) -> None:
        smoothing = _checked_map(self.smoothing, "smoothing", 0.0, MAX_SIGMA)
        intensity = _checked_map(self.intensity, "intensity", 0.0, MAX_INTENSITY)
        offset = float(self.time_offset)
        if not math.isfinite(offset) or abs(offset) > MAX_OFFSET:
            raise ValueError(f"time offset must be within ±{MAX_OFFSET:g} frames, got {self.time_offset!r}")
        error = self.decimate_max_error_mm
        if error is not None and (not math.isfinite(float(error)) or float(error) <= 0):
            raise ValueError(f"the decimation max error must be a positive distance in mm, got {error!r}")
        # Read-only copies: a frozen settings object must not change under its owner.
        object.__setattr__(self, "smoothing", MappingProxyType(smoothing))
        object.__setattr__(self, "intensity", MappingProxyType(intensity))
        object.__setattr__(self, "time_offset", offset)
        object.__setattr__(self, "decimate_max_error_mm", None if error is None else float(error))

    def sigma(self, region: str) -> float:
        return self.smoothing.get(region, 0.0)

    def gain(self, region: str) -> float:
        return self.intensity.get(region, 1.0)

    def to_dict(self) -> dict:
        """Plain floats and dicts, for an ID property."""
        return {
            "smoothing": dict(self.smoothing), "intensity": dict(self.intensity), "time_offset": self.time_offset,
            "decimated": self.decimate_max_error_mm is not None,
            "decimate_max_error_mm": self.decimate_max_error_mm or 0.0,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> CleanupSettings:
        decimated = bool(data.get("decimated", False))
        return cls(
            smoothing={str(k): float(v) for k, v in dict(data.get("smoothing", {})).items()},
            intensity={str(k): float(v) for k, v in dict(data.get("intensity", {})).items()},
            time_offset=float(data.get("time_offset", 0.0)),
            decimate_max_error_mm=float(data.get("decimate_max_error_mm", 0.0)) if decimated else None,
        )


def _checked_map(values: Mapping[str, float], what: str, low: float, high: float) -> dict:
    out = {}
    for region, value in dict(values).items():
        value = float(value)
        if not isinstance(region, str) or not (low <= value <= high):
            raise ValueError(f"{what} for region {region!r} must be from {low:g} to {high:g}, got {value!r}")
        out[region] = value
    return out


# --------------------------------------------------------------------------------------
# Deriving keyframes
# --------------------------------------------------------------------------------------


def apply_cleanup(raw_values: np.ndarray, key_regions: Sequence[str], key_shapes: np.ndarray | None,
                  settings: CleanupSettings, start_frame: float = 0.0) -> list:
    """Keyframes per key, [(frames (N_k,) float64, values (N_k,) float32), ...], from the raw
    values (K, n) on the scene frame grid start_frame + j.

    key_shapes (K, V, 3) metres (the keys' offsets from the Basis) are needed only to
    decimate; the decimated curves, linearly interpolated, stay within the max error of
    the undecimated cleaned motion on every vertex, at every time (see ``decimate``).
    """
    raw = np.asarray(raw_values, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] == 0:
        raise ValueError(f"raw values must be shaped (keys, frames), got {raw.shape}")
    regions = np.asarray(list(key_regions), dtype=object)
    if regions.shape != (raw.shape[0],):
        raise ValueError(f"{raw.shape[0]} keys but {regions.size} key regions")
    cleaned = cleaned_values(raw, regions, settings)  # (K, n) float32
    n = raw.shape[1]
    frames = float(start_frame) + np.arange(n, dtype=np.float64) + settings.time_offset  # (n,)
    if settings.decimate_max_error_mm is None:
        return [(frames.copy(), cleaned[k].copy()) for k in range(raw.shape[0])]
    if key_shapes is None:
        raise ValueError("decimating needs the key shapes")
    kept = decimate(cleaned, regions, np.asarray(key_shapes), settings.decimate_max_error_mm * 1e-3)
    return [(frames[kept[k]], cleaned[k, kept[k]]) for k in range(raw.shape[0])]


def cleaned_values(raw: np.ndarray, key_regions: np.ndarray, settings: CleanupSettings) -> np.ndarray:
    """(K, n) float32: each region's values smoothed, then scaled by its intensity.
    float32 because that is what an F-curve stores: decimation compares against it."""
    out = np.asarray(raw, dtype=np.float64).copy()
    for region in dict.fromkeys(key_regions.tolist()):
        rows = np.flatnonzero(key_regions == region)
        out[rows] = smooth(out[rows], settings.sigma(region)) * settings.gain(region)
    return out.astype(np.float32)


def smooth(values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of values (K, n) along time, sigma in frames (0: unchanged).

    Edges repeat the first and last value: Blender holds a curve's end values before and
    after its keys, so the motion is smoothed as it plays. Constants stay constant.
    """
    values = np.asarray(values, dtype=np.float64)
    if sigma <= 0 or values.shape[-1] < 2:
        return values.copy()
    radius = max(1, math.ceil(4.0 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()  # (2r + 1,)
    padded = np.pad(values, ((0, 0), (radius, radius)), mode="edge")  # (K, n + 2r)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1, axis=1)  # (K, n, 2r + 1)
    return windows @ kernel


# --------------------------------------------------------------------------------------
# Decimation
# --------------------------------------------------------------------------------------


def decimate(values: np.ndarray, key_regions: np.ndarray, key_shapes: np.ndarray, max_error_m: float) -> list:
    """Frame indices to keep per key (each curve its own): linear interpolation between
    kept frames reproduces sum_k values[k, t] * key_shapes[k] (values (K, n), key_shapes
    (K, V, 3)) on every vertex within max_error_m, at every frame t.

    Between grid frames both the cleaned and the decimated curves are linear, so their
    per-vertex difference is linear there and its length peaks at a grid frame: the bound
    holds at every time, fractional frames included. Regions are decimated apart when no
    vertex moves with keys of two regions (always so after a regional bake); otherwise
    they are decimated together, so the errors of two regions can never add up.
    """
    values = np.asarray(values, dtype=np.float64)
    k = values.shape[0]
    shapes = np.asarray(key_shapes, dtype=np.float64).reshape(k, -1, 3)  # (K, V, 3)
    kept: list = [None] * k
    for rows in _decimation_groups(key_regions, shapes):
        moving = np.flatnonzero(np.any(shapes[rows] != 0, axis=(0, 2)))  # (Vg,) vertices these keys move
        group = _GroupDecimator(values[rows], shapes[rows][:, moving], float(max_error_m))
        for row, frames in zip(rows, group.run(), strict=True):
            kept[row] = frames
    return kept


def _decimation_groups(key_regions: np.ndarray, shapes: np.ndarray) -> list:
    """Key index arrays, one per group of regions whose moving vertices overlap."""
    names = list(dict.fromkeys(key_regions.tolist()))
    rows = {name: np.flatnonzero(key_regions == name) for name in names}
    support = {name: np.any(shapes[rows[name]] != 0, axis=(0, 2)) for name in names}  # (V,) each
    groups: list = []  # [(names, support)]
    for name in names:
        merged, mask = [name], support[name].copy()
        for group in [g for g in groups if (g[1] & mask).any()]:
            groups.remove(group)
            merged, mask = group[0] + merged, group[1] | mask
        groups.append((merged, mask))
    return [np.sort(np.concatenate([rows[name] for name in group])) for group, _ in groups]


class _GroupDecimator:
    """Greedy per-curve decimation of one group's keys under an exact per-vertex bound.

    Curves go one at a time, the one that moves vertices furthest first (it gets the
    whole budget; small keys then fit in what is left, and most of their keys go).
    Along a curve each keyframe is dropped if the line over the widened gap keeps the
    group's error, with every curve's current deviation (dev: line - value) included,
    within the bound on every vertex. Cheap sufficient bounds settle most frames; the
    rest are measured exactly.
    """

    def __init__(self, values: np.ndarray, shapes: np.ndarray, bound: float):
        kg, n = values.shape
        self.values, self.bound = values, bound  # (Kg, n)
        self.shapes = shapes.reshape(kg, -1)  # (Kg, 3Vg)
        per_vertex = shapes.transpose(1, 2, 0)  # (Vg, 3, Kg): vertex v's block S_v
        # |S_v^T d| <= ||S_v||_2 ||d||: one constant bounds every vertex's error by ||d||.
        gram = per_vertex @ per_vertex.transpose(0, 2, 1)  # (Vg, 3, 3)
        self.lipschitz = float(np.sqrt(np.linalg.eigvalsh(gram)[:, -1].max(initial=0.0)))
        self.reach = np.sqrt(np.einsum("kvc,kvc->kv", shapes, shapes)).max(axis=1, initial=0.0)  # (Kg,) max_v |s_k(v)|
        self.dev = np.zeros((kg, n))  # (Kg, n) current deviation of each curve
        self.error = np.zeros(n)  # (n,) upper bound on the group's current error per frame

    def run(self) -> list:
        kg, n = self.values.shape
        kept: list = [None] * kg
        order = np.argsort(-(np.abs(self.values).max(axis=1, initial=0.0) * self.reach), kind="stable")
        for k in order.tolist():
            kept[k] = self._curve(k) if n > 2 else np.arange(n)
        return kept

    def _curve(self, k: int) -> np.ndarray:
        n = self.values.shape[1]
        keep, p = [0], 0
        for t in range(1, n - 1):
            if not self._try(k, p, t + 1):  # drop t: a line from p to t + 1
                keep.append(t)
                p = t
        keep.append(n - 1)
        return np.asarray(keep, dtype=np.int64)

    def _try(self, k: int, p: int, c: int) -> bool:
        """Replace curve k between p and c by a straight line if the bound allows."""
        seg = slice(p + 1, c)
        alpha = (np.arange(p + 1, c) - p) / (c - p)  # (L,)
        row = self.values[k]
        new = row[p] * (1.0 - alpha) + row[c] * alpha - row[seg]  # (L,) curve k's new deviation
        trial = self.dev[:, seg].copy()  # (Kg, L)
        change = np.abs(new - trial[k])
        trial[k] = new
        # Two sufficient bounds per frame: the spectral one, and the current error plus
        # what this change can add at worst.
        bound = np.minimum(self.lipschitz * np.sqrt(np.einsum("kl,kl->l", trial, trial)),
                           self.error[seg] + change * self.reach[k])  # (L,)
        suspect = np.flatnonzero(bound > self.bound)
        if suspect.size:
            residual = (trial[:, suspect].T @ self.shapes).reshape(suspect.size, -1, 3)  # (S, Vg, 3)
            exact = np.sqrt(np.einsum("svc,svc->sv", residual, residual).max(axis=1))  # (S,)
            if exact.max() > self.bound:
                return False
            bound[suspect] = exact
        self.dev[k, seg] = new
        self.error[seg] = bound
        return True


def reconstruct(curves: list, key_shapes: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Offsets (F, V, 3) float64 that keyframes [(frames, values), ...] produce at frames (F,),
    with linear interpolation and the end values held: what Blender plays."""
    shapes = np.asarray(key_shapes, dtype=np.float64)
    frames = np.asarray(frames, dtype=np.float64)
    weights = np.stack([np.interp(frames, f, v) for f, v in curves], axis=1)  # (F, K)
    return np.einsum("fk,kvc->fvc", weights, shapes)
