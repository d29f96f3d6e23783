"""Nearest neighbours and closest points on triangles, in numpy only (no scipy in Blender).

    idx, dist = knn(points, queries, k=8)                  # (Q, k) each, -1 / inf when none
    hit = TriangleIndex(vertices, triangles).closest(queries, max_distance=0.02)
    hit = closest_on_triangles(p, a, b, c)                  # per pair: point, barycentric, distance

Both searches hash into a uniform grid and look in the 3 x 3 x 3 cells round each query.
An answer is certain once it is no further than one cell size (everything that near lies
in those 27 cells); queries that are not certain yet are looked up again with cells twice
as big, so dense and sparse parts of a mesh both cost little. Work is done in chunks of
queries so memory stays bounded. `PointIndex` / `TriangleIndex` keep their grids for reuse.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_OFFSETS = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)  # (27, 3)
_BLOCK = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)  # (8, 3)
_CHUNK = 8192  # queries per batch: bounds the candidate arrays to a few tens of MB


def knn(points: np.ndarray, queries: np.ndarray, k: int, max_distance: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest points to each query: (indices (Q, k) int64, distances (Q, k) float64),
    nearest first. Neighbours further than max_distance are not searched for and are
    reported as index -1, distance inf (as are missing ones when len(points) < k)."""
    return PointIndex(points).query(queries, k, max_distance)


class PointIndex:
    """A point set prepared for repeated `query` calls (the grids are built once per cell size)."""

    def __init__(self, points: np.ndarray):
        self.points = np.asarray(points, np.float64).reshape(-1, 3)
        if len(self.points):
            self.extent = float(np.max(self.points.max(0) - self.points.min(0))) or 1.0
        self._grids: dict[int, _Grid] = {}

    def _grid(self, level: int, k: int) -> _Grid:
        if level not in self._grids:
            # Points on a surface: about sqrt(N) across the extent; a level-0 cell holds ~k of them.
            base = self.extent * np.sqrt(max(k, 2) / len(self.points))
            self._grids[level] = _Grid(self.points, base * 2.0 ** level)
        return self._grids[level]

    def query(self, queries: np.ndarray, k: int, max_distance: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, np.float64).reshape(-1, 3)
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        index = np.full((len(queries), k), -1, np.int64)
        dist = np.full((len(queries), k), np.inf)
        if len(self.points) == 0 or len(queries) == 0:
            return index, dist
        pending, level = np.arange(len(queries)), 0
        while len(pending):
            grid = self._grid(level, k)
            done = np.zeros(len(pending), bool)
            for start in range(0, len(pending), _CHUNK):
                rows = pending[start:start + _CHUNK]
                idx, d = grid.query(queries[rows], k)
                # Certain: all points within one cell size are in the 27 cells; or nothing
                # further is wanted; or the cells already cover every point.
                sure = (d[:, -1] <= grid.cell) | (grid.cell >= max_distance) | (grid.cell > 2 * self.extent)
                keep = d <= max_distance
                index[rows] = np.where(keep, idx, -1)
                dist[rows] = np.where(keep, d, np.inf)
                done[start:start + len(rows)] = sure
            pending, level = pending[~done], level + 1
        return index, dist


class _Grid:
    """Points sorted by grid cell, with each occupied cell's start and count."""

    def __init__(self, points: np.ndarray, cell: float):
        self.points, self.cell = points, cell
        self.origin = points.min(0) - cell
        coords = self._coords(points)
        self.dims = coords.max(0) + 2
        keys = self._key(coords)
        self.order = np.argsort(keys, kind="stable")
        self.keys, self.starts, self.counts = np.unique(keys[self.order], return_index=True, return_counts=True)

    def _coords(self, p: np.ndarray) -> np.ndarray:
        return np.floor((p - self.origin) / self.cell).astype(np.int64)

    def _key(self, coords: np.ndarray) -> np.ndarray:
        return (coords[..., 0] * self.dims[1] + coords[..., 1]) * self.dims[2] + coords[..., 2]

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        cells = self._coords(queries)[:, None, :] + _OFFSETS                # (Q, 27, 3)
        inside = np.all((cells >= 0) & (cells < self.dims), axis=-1)         # (Q, 27)
        keys = self._key(np.where(inside[..., None], cells, 0))
        slot = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = inside & (self.keys[slot] == keys)
        counts = np.where(found, self.counts[slot], 0).ravel()               # (Q * 27,)
        starts = self.starts[slot].ravel()
        owner = np.repeat(np.repeat(np.arange(len(queries)), 27), counts)    # (P,) query of each pair
        begin = np.repeat(starts - np.cumsum(counts) + counts, counts)
        member = self.order[begin + np.arange(counts.sum())]                 # (P,) point of each pair
        d2 = np.einsum("ij,ij->i", queries[owner] - self.points[member], queries[owner] - self.points[member])
        return _k_smallest(owner, member, d2, len(queries), k)


def _k_smallest(owner: np.ndarray, member: np.ndarray, d2: np.ndarray, n: int, k: int):
    """Per owner, the k pairs with the smallest d2: (members (n, k), distances (n, k))."""
    # One float sort key instead of a (slower) lexsort: the owner, plus d2 scaled into [0, 1).
    order = np.argsort(owner + d2 / (1.001 * d2.max(initial=0.0) + 1e-300))
    owner, member, d2 = owner[order], member[order], d2[order]
    first = np.searchsorted(owner, np.arange(n))                             # (n,) start of each group
    rank = np.arange(len(owner)) - first[owner]
    take = rank < k
    index = np.full((n, k), -1, np.int64)
    dist = np.full((n, k), np.inf)
    index[owner[take], rank[take]] = member[take]
    dist[owner[take], rank[take]] = np.sqrt(d2[take])
    return index, dist


# ------------------------------------------------------------------ triangles


@dataclass(frozen=True)
class TriangleHit:
    point: np.ndarray        # (N, 3) closest point on the triangle
    barycentric: np.ndarray  # (N, 3) its weights on the corners a, b, c (sum 1, all >= 0)
    distance: np.ndarray     # (N,) |p - point|


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> TriangleHit:
    """Closest point to p[i] on triangle (a[i], b[i], c[i]); all (N, 3).

    The projection onto the plane when it falls inside the triangle, else the closest of
    the three edges' clamped projections (also the answer for a degenerate triangle)."""
    p, a, b, c = (np.asarray(x, np.float64) for x in (p, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d00, d01, d11 = _dot(ab, ab), _dot(ab, ac), _dot(ac, ac)
    d20, d21 = _dot(ap, ab), _dot(ap, ac)
    det = d00 * d11 - d01 * d01
    ok = det > 1e-14 * np.maximum(d00 * d11, 1e-300)                        # not degenerate
    safe = np.where(ok, det, 1.0)
    v = (d11 * d20 - d01 * d21) / safe
    w = (d00 * d21 - d01 * d20) / safe
    bary = np.stack([1.0 - v - w, v, w], -1)
    inside = ok & np.all(bary >= 0.0, axis=-1)
    best_bary = np.where(inside[:, None], bary, 0.0)
    best_d2 = np.where(inside, _dot(p - _mix(a, b, c, bary), p - _mix(a, b, c, bary)), np.inf)
    for i, j in ((0, 1), (1, 2), (2, 0)):          # edges: corner i to corner j
        x, y = (a, b, c)[i], (a, b, c)[j]
        xy = y - x
        t = np.clip(_dot(p - x, xy) / np.maximum(_dot(xy, xy), 1e-300), 0.0, 1.0)
        q = x + t[:, None] * xy
        d2 = _dot(p - q, p - q)
        better = ~inside & (d2 < best_d2)
        edge_bary = np.zeros_like(bary)
        edge_bary[:, i], edge_bary[:, j] = 1.0 - t, t
        best_bary = np.where(better[:, None], edge_bary, best_bary)
        best_d2 = np.where(better, d2, best_d2)
    point = _mix(a, b, c, best_bary)
    return TriangleHit(point, best_bary, np.sqrt(best_d2))


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def _mix(a, b, c, bary):
    return bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c


@dataclass(frozen=True)
class SurfaceHit:
    triangle: np.ndarray     # (N,) int64 triangle index, -1 when none within reach
    barycentric: np.ndarray  # (N, 3) on its corners (zeros when none)
    distance: np.ndarray     # (N,) to the closest point (inf when none)
    point: np.ndarray        # (N, 3) the closest point (nan when none)


class TriangleIndex:
    """Triangles (F, 3) over vertices (V, 3), hashed into grid cells by their bounding boxes,
    for closest-point queries. A query looks in the 2 x 2 x 2 block of cells nearest to it,
    which holds every triangle within half a cell of it: a result that near is certain; the
    others are looked up again with cells twice as big."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray):
        self.vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
        self.triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
        corners = self.vertices[self.triangles]                              # (F, 3, 3)
        self.lo, self.hi = corners.min(1), corners.max(1)                    # (F, 3) bounding boxes
        normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
        self.normals = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-300)
        edges = np.linalg.norm(corners - np.roll(corners, -1, axis=1), axis=-1)
        self.base_cell = 2.0 * float(np.median(edges)) or 1.0
        self.extent = float(np.max(self.hi.max(0) - self.lo.min(0))) or 1.0
        self._grids: dict[int, tuple] = {}

    def _grid(self, level: int):
        """(cell, origin, dims, sorted cell keys, starts, counts, triangle per slot)."""
        if level not in self._grids:
            cell = self.base_cell * 2.0 ** level
            origin = self.lo.min(0) - cell
            first = np.floor((self.lo - origin) / cell).astype(np.int64)    # (F, 3)
            last = np.floor((self.hi - origin) / cell).astype(np.int64)
            dims = last.max(0) + 2
            span = last - first + 1
            counts = span.prod(1)
            tri = np.repeat(np.arange(len(first)), counts)
            local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            sy, sz = span[tri, 1], span[tri, 2]                             # unravel local -> (i, j, k)
            coords = first[tri] + np.stack([local // (sy * sz), (local // sz) % sy, local % sz], -1)
            keys = (coords[:, 0] * dims[1] + coords[:, 1]) * dims[2] + coords[:, 2]
            order = np.argsort(keys, kind="stable")
            uniq, starts, n = np.unique(keys[order], return_index=True, return_counts=True)
            self._grids[level] = (cell, origin, dims, uniq, starts, n, tri[order])
        return self._grids[level]

    def closest(self, points: np.ndarray, max_distance: float = np.inf, normals: np.ndarray | None = None,
                normal_weight: float = 0.0) -> SurfaceHit:
        """The closest triangle to each point (N, 3) within max_distance.

        With normals (N, 3) (unit), the winner minimises distance + normal_weight * (1 - cos)
        of the angle between the point's normal and the triangle's: among equally near
        triangles, the one facing the same way."""
        points = np.asarray(points, np.float64).reshape(-1, 3)
        n = len(points)
        tri, dist = np.full(n, -1, np.int64), np.full(n, np.inf)
        bary, point = np.zeros((n, 3)), np.full((n, 3), np.nan)
        score = np.full(n, np.inf)
        pending, level = np.arange(n), 0
        while len(pending):
            cell, origin, dims, uniq, starts, counts, slot_tri = self._grid(level)
            done = np.zeros(len(pending), bool)
            for start in range(0, len(pending), 2048):
                rows = pending[start:start + 2048]
                u = (points[rows] - origin) / cell
                home = np.floor(u).astype(np.int64)
                frac = u - home
                step = np.where(frac < 0.5, -1, 1)                           # toward the nearer neighbour
                cells = home[:, None, :] + _BLOCK * step[:, None, :]         # (Q, 8, 3): the 2 x 2 x 2 block
                # how far the query is from the block's boundary (at least half a cell)
                margin = cell * np.min(np.where(frac < 0.5, np.minimum(frac + 1, 1 - frac),
                                                np.minimum(frac, 2 - frac)), axis=1)
                inside = np.all((cells >= 0) & (cells < dims), axis=-1)
                keys = (cells[..., 0] * dims[1] + cells[..., 1]) * dims[2] + cells[..., 2]
                keys = np.where(inside, keys, -1)
                slot = np.minimum(np.searchsorted(uniq, keys), len(uniq) - 1)
                found = inside & (uniq[slot] == keys)
                c = np.where(found, counts[slot], 0).ravel()
                owner = np.repeat(np.repeat(rows, 8), c)
                begin = np.repeat(starts[slot].ravel() - np.cumsum(c) + c, c)
                cand = slot_tri[begin + np.arange(c.sum())]
                if len(cand):
                    pair = np.unique(owner * len(self.triangles) + cand)   # a triangle sits in several cells
                    owner, cand = pair // len(self.triangles), pair % len(self.triangles)
                    t = self.triangles[cand]
                    hit = closest_on_triangles(points[owner], self.vertices[t[:, 0]], self.vertices[t[:, 1]],
                                               self.vertices[t[:, 2]])
                    s = hit.distance.copy()
                    if normals is not None:
                        s += normal_weight * (1.0 - _dot(normals[owner], self.normals[cand]))
                    order = np.argsort(owner + s / (1.001 * s.max() + 1e-300))
                    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
                    who = owner[first]
                    better = s[first] < score[who]
                    who, first = who[better], first[better]
                    tri[who], dist[who], score[who] = cand[first], hit.distance[first], s[first]
                    bary[who], point[who] = hit.barycentric[first], hit.point[first]
                # Certain: nothing unseen is nearer than the margin; or nothing further is wanted.
                done[start:start + len(rows)] = (score[rows] <= margin) | (cell >= 2 * max_distance) \
                    | (cell > 2 * self.extent)
            pending, level = pending[~done], level + 1
        far = dist > max_distance
        tri[far], dist[far], bary[far], point[far] = -1, np.inf, 0.0, np.nan
        return SurfaceHit(tri, bary, dist, point)
