"""Retargeting: the model's motion, made on its template (the "guide"), moved onto any mesh.

    fit = rough_fit(guide_vertices, face_index, character_vertices)     # guide -> character
    binding = bind(guide_vertices, guide_triangles, guide_regions, character_vertices,
                   character_normals, guide_to_target=fit.matrix)
    motion = transfer(binding, guide_offsets)                           # (T, Vt, 3) character space

Binding. Each character vertex is tied to the closest point of the guide's surface: a
triangle, barycentric weights on its corners and a signed offset along its normal. Its
motion is the guide's motion interpolated there, rotated and scaled by the guide->character
transform. Distances are measured in the guide's own space (the template's metres), so the
falloff means the same whatever size the character is:

* a vertex further than `Falloff.outer` from the guide (hair, shoulders, a hat) does not
  move; between `inner` and `outer` its motion fades out smoothly;
* guide vertices in still regions (skull, eyes, neck, upper face) carry no motion, so a
  character vertex bound near them stays still too;
* no cross-talk between the lips: a vertex bound on the upper lip takes motion from
  upper-lip guide vertices only (and the lower lip likewise), even on a triangle that
  spans the lip seam. At the seam, where both lips touch, the character's vertex normal
  decides which lip it is on.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .nearest import PointIndex, TriangleIndex

STATIC_REGIONS = ("upper_face", "eyes", "skull", "neck")  # guide regions that never move
UPPER_LIP, LOWER_LIP = "upper_lip", "lower_lip"
# Character regions, from unions of guide regions; the same grouping as the cleanup's
# `core.cleanup.head_cleanup_regions` (a test keeps the two in step).
TARGET_REGIONS = {
    "lips": ("lips", "upper_lip", "lower_lip"),
    "jaw": ("jaw", "chin", "cheeks", "mouth_interior", "lower_teeth", "tongue"),
    "upper_face": ("upper_face", "eyes"),
}


@dataclass(frozen=True)
class Falloff:
    """Full motion within `inner` of the guide's surface, none beyond `outer`, a smooth
    step between. Guide units: the template's metres (the default head is 25 cm tall)."""

    inner: float = 0.006
    outer: float = 0.02

    def __post_init__(self):
        if not 0 <= self.inner < self.outer:
            raise ValueError(f"the falloff needs 0 <= inner < outer, got inner={self.inner}, outer={self.outer}")

    def weight(self, distance: np.ndarray) -> np.ndarray:
        u = np.clip((self.outer - np.asarray(distance, np.float64)) / (self.outer - self.inner), 0.0, 1.0)
        return u * u * (3.0 - 2.0 * u)


# --------------------------------------------------------------------- rough fit


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray      # (3, 3) proper rotation
    translation: np.ndarray   # (3,)
    error: float = 0.0        # rough_fit: median distance from the fitted guide's face to the target

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation


def rough_fit(template_vertices: np.ndarray, template_face_region_idx: np.ndarray | None,
              target_vertices: np.ndarray) -> Similarity:
    """Place the template (guide) on the target's head: a similarity transform found from
    the principal axes of both, refined by a few rounds of closest-point matching.

    Principal axes are ambiguous (signs; and the order of two axes of similar length, such
    as a head's depth and height), so every one of the 24 rotations that map the template's
    axes onto the target's is tried and the one whose template face lands closest to the
    target's surface wins. Both point sets are first thinned to one point per grid cell,
    so a densely modelled face does not pull the axes towards it. Assumes the target is a
    head (with or without neck); the artist corrects the rest by moving the guide.

    template_face_region_idx: the template's face vertices (None: all), which must land on
    the target's surface. Similarity.error: the fit's median distance, target units."""
    template = np.asarray(template_vertices, np.float64).reshape(-1, 3)
    target = np.asarray(target_vertices, np.float64).reshape(-1, 3)
    if len(template) < 4 or len(target) < 4:
        raise ValueError("rough_fit needs at least 4 vertices on both meshes")
    face = template if template_face_region_idx is None or len(template_face_region_idx) == 0 \
        else template[np.asarray(template_face_region_idx).ravel()]
    # Thinned clouds: ~400 points a head for trying poses, ~1700 for polishing the best few.
    coarse = (_thin(template, 12), _thin(face, 12), _thin(target, 12))
    fine = (_thin(template, 28), _thin(face, 28), _thin(target, 28))
    (mu_g, axes_g, var_g), (mu_t, axes_t, var_t) = _principal(fine[0]), _principal(fine[2])
    scale = float(np.sqrt(var_t.sum() / var_g.sum()))
    candidates = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            q = np.zeros((3, 3))
            q[np.arange(3), perm] = signs
            rotation = axes_t @ q @ axes_g.T
            if np.linalg.det(rotation) < 0:
                continue  # a mirror image: never what the artist means
            start = Similarity(scale, rotation, mu_t - scale * rotation @ mu_g)
            fit = _icp(coarse[0], coarse[2], start, rounds=4)
            candidates.append((_fit_error(fit, *coarse), fit))
    candidates.sort(key=lambda c: c[0])
    best = []
    for _, fit in candidates[:3]:  # polish the few best with more points and rounds
        fit = _icp(fine[0], fine[2], fit, rounds=10)
        best.append((_fit_error(fit, *fine), fit))
    _, fit = min(best, key=lambda c: c[0])
    # Last, against the target's own vertices: the thinned clouds are only as exact as their cells.
    index, source = PointIndex(target), _thin(template, 48)
    for _ in range(6):
        idx, dist = index.query(fit.apply(source), 1)
        keep = dist[:, 0] <= np.quantile(dist[:, 0], 0.8)
        fit = _solve_similarity(source[keep], target[idx[keep, 0]])
    _, dist = index.query(fit.apply(face), 1)
    return Similarity(fit.scale, fit.rotation, fit.translation, float(np.median(dist[:, 0])))


def _thin(points: np.ndarray, cells: int) -> np.ndarray:
    """One point (the mean) per occupied cell of a grid `cells` wide along the longest side."""
    lo = points.min(0)
    size = float(np.max(points.max(0) - lo)) / cells or 1.0
    key = np.floor((points - lo) / size).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse.ravel(), points)
    return sums / counts[:, None]


def _principal(points: np.ndarray):
    """(mean (3,), axes (3, 3) as columns by falling variance, variances (3,))."""
    mean = points.mean(0)
    variance, axes = np.linalg.eigh(np.cov((points - mean).T))
    return mean, axes[:, ::-1], variance[::-1]


def _icp(source: np.ndarray, target: np.ndarray, fit: Similarity, rounds: int) -> Similarity:
    """Refine a similarity: match each moved source point to its nearest target point, keep
    the closest 80 % of the pairs (parts one mesh has and the other lacks), re-solve."""
    for _ in range(rounds):
        idx, dist = _nearest(fit.apply(source), target)
        keep = dist <= np.quantile(dist, 0.8)
        fit = _solve_similarity(source[keep], target[idx[keep]])
    return fit


def _nearest(queries: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force, for the thinned clouds of `rough_fit` (a few thousand points): faster
    there than a grid, whose cells suit no pose while the fit is still far off."""
    idx = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), 1024):
        q = queries[start:start + 1024]
        d2 = (q * q).sum(1)[:, None] - 2.0 * q @ points.T + (points * points).sum(1)[None]
        idx[start:start + 1024] = np.argmin(d2, axis=1)
    return idx, np.linalg.norm(queries - points[idx], axis=1)


def _solve_similarity(x: np.ndarray, y: np.ndarray) -> Similarity:
    """Least-squares s, R, t with s R x + t ~ y (rotation by SVD of the cross-covariance)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    u, sigma, vt = np.linalg.svd(yc.T @ xc)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / max(np.einsum("ij,ij->", xc, xc), 1e-300))
    return Similarity(scale, rotation, my - scale * rotation @ mx)


def _fit_error(fit: Similarity, template: np.ndarray, face: np.ndarray, target: np.ndarray) -> float:
    """How well a pose fits: the median distance from the template's face to the target, and
    from the target to the whole template (a face turned the wrong way can still land on a
    smooth skull; the target's nose and chin then find nothing near)."""
    to_target = np.median(_nearest(fit.apply(face), target)[1])
    to_template = np.median(_nearest(target, fit.apply(template))[1])
    return float(0.5 * (to_target + to_template))


# ------------------------------------------------------------------------ binding


@dataclass(frozen=True, eq=False)
class Binding:
    """How each of the character's Vt vertices follows the guide (see the module doc)."""

    triangle: np.ndarray        # (Vt,) int32 guide triangle, -1 when no guide surface was within reach
    corners: np.ndarray         # (Vt, 3) int32 its guide vertices (0 when unbound)
    barycentric: np.ndarray     # (Vt, 3) float32 the closest point's weights on the corners
    distance: np.ndarray        # (Vt,) float32 to the guide surface, guide units (inf when unbound)
    normal_offset: np.ndarray   # (Vt,) float32 signed, along the triangle's normal (outside > 0)
    side: np.ndarray            # (Vt,) int8 +1 upper lip, -1 lower lip, 0 neither
    weight: np.ndarray          # (Vt,) float32 in [0, 1]: distance falloff x the guide's moving share
    corner_weights: np.ndarray  # (Vt, 3) float32 what `transfer` mixes the corners' motion with
    regions: Mapping[str, np.ndarray]  # "jaw", "lips", "upper_face" -> (Vt,) bool (when the guide has regions)
    guide_to_target: np.ndarray  # (4, 4) guide space -> character space, at bind time
    n_guide: int                # the guide's vertex count (the model's)
    falloff: Falloff = field(default_factory=Falloff)

    @property
    def n_target(self) -> int:
        return len(self.triangle)

    def quality(self) -> BindingQuality:
        moving = self.weight > 0
        scale = float(abs(np.linalg.det(self.guide_to_target[:3, :3])) ** (1.0 / 3.0))
        far = float(self.distance[moving].max()) if moving.any() else 0.0
        return BindingQuality(self.n_target, int(moving.sum()), int((self.weight >= 1.0).sum()),
                              int((self.triangle < 0).sum()), far, far * scale)


@dataclass(frozen=True)
class BindingQuality:
    vertices: int          # the character's vertex count
    moving: int            # vertices that can move (weight > 0)
    full: int              # vertices that follow the guide fully (weight 1)
    out_of_reach: int      # vertices with no guide surface within reach
    furthest_guide: float  # largest distance of a moving vertex to the guide, guide units
    furthest: float        # the same in the character's units

    def summary(self) -> str:
        return (f"{self.moving} of {self.vertices} vertices follow the guide ({self.full} fully); "
                f"the furthest is {self.furthest_guide * 1000:.1f} mm from it (guide scale)")


def bind(guide_vertices: np.ndarray, guide_triangles: np.ndarray, guide_regions: Mapping[str, np.ndarray] | None,
         target_vertices: np.ndarray, target_normals: np.ndarray | None = None, *,
         guide_to_target: np.ndarray | None = None, falloff: Falloff = Falloff(),
         normal_weight: float = 0.002) -> Binding:
    """Bind the character (target_vertices (Vt, 3), its vertex normals (Vt, 3) if known, both
    in the character's space) to the guide (guide_vertices (Vg, 3), guide_triangles (F, 3)
    outward-facing, in the guide's space), placed by guide_to_target (4, 4; default identity).

    guide_regions: region name -> vertex indices or (Vg,) bool mask; the names used are
    STATIC_REGIONS, UPPER_LIP / LOWER_LIP and those in TARGET_REGIONS. None: everything moves.
    normal_weight: guide units added to a triangle's distance per unit of (1 - cos) between
    its normal and the vertex normal, so among equally near triangles the one facing the
    same way wins (the upper lip's underside, not the lower lip's top, where they touch)."""
    gv = np.asarray(guide_vertices, np.float64).reshape(-1, 3)
    tris = np.asarray(guide_triangles, np.int64).reshape(-1, 3)
    if len(tris) == 0 or tris.min() < 0 or tris.max() >= len(gv):
        raise ValueError("the guide needs triangles whose corners are guide vertices")
    matrix = np.eye(4) if guide_to_target is None else np.asarray(guide_to_target, np.float64)
    linear = matrix[:3, :3]
    if matrix.shape != (4, 4) or abs(np.linalg.det(linear)) < 1e-30:
        raise ValueError("guide_to_target must be an invertible 4 x 4 matrix")
    to_guide = np.linalg.inv(matrix)
    points = np.asarray(target_vertices, np.float64).reshape(-1, 3) @ to_guide[:3, :3].T + to_guide[:3, 3]
    normals = None
    if target_normals is not None:  # normals map by the inverse transpose: L^T for character -> guide
        normals = np.asarray(target_normals, np.float64).reshape(-1, 3) @ linear
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)

    tri, hit_bary, dist, offset = _closest_triangles(gv, tris, points, normals, falloff, normal_weight)
    # Rounding leaves ~1e-17 on corners a point is not really near: drop it, so a vertex on an
    # edge between still guide vertices stays exactly still.
    hit_bary = np.where(hit_bary < 1e-7, 0.0, hit_bary)
    hit_bary /= np.maximum(hit_bary.sum(1, keepdims=True), 1e-300)
    bound = tri >= 0
    corners = np.where(bound[:, None], tris[np.maximum(tri, 0)], 0)
    masks = _region_masks(guide_regions, len(gv))
    guide_side = np.zeros(len(gv), np.int8)                                   # (Vg,) +1 upper, -1 lower lip
    guide_side[masks.get(UPPER_LIP, slice(0))] += 1
    guide_side[masks.get(LOWER_LIP, slice(0))] -= 1
    side = _lip_side(guide_side, corners, hit_bary, bound)
    keep = (guide_side[corners] != -side[:, None]) | (side[:, None] == 0)     # (Vt, 3) same lip (or no lip)
    mixed = hit_bary * keep
    mixed /= np.maximum(mixed.sum(1, keepdims=True), 1e-300)
    moving = np.ones(len(gv))
    for name in STATIC_REGIONS:
        if name in masks:
            moving[masks[name]] = 0.0
    fade = np.where(bound, falloff.weight(np.where(bound, dist, np.inf)), 0.0)
    corner_weights = mixed * moving[corners] * fade[:, None]
    regions = {}
    for name, sources in TARGET_REGIONS.items():
        present = [masks[s] for s in sources if s in masks]
        if present:
            union = np.logical_or.reduce(present)
            regions[name] = bound & (fade > 0) & ((mixed * union[corners]).sum(1) >= 0.5)
    return Binding(
        triangle=tri.astype(np.int32), corners=corners.astype(np.int32), barycentric=hit_bary.astype(np.float32),
        distance=dist.astype(np.float32), normal_offset=offset.astype(np.float32), side=side,
        weight=(fade * (mixed * moving[corners]).sum(1)).astype(np.float32),
        corner_weights=corner_weights.astype(np.float32), regions=MappingProxyType(regions),
        guide_to_target=matrix.copy(), n_guide=len(gv), falloff=falloff,
    )


def _closest_triangles(gv, tris, points, normals, falloff: Falloff, normal_weight: float):
    """Per point: (triangle (-1 when none within reach), barycentric (N, 3), distance, signed
    offset along the triangle's normal)."""
    index = TriangleIndex(gv, tris)
    if normals is not None:  # inside-out normals would send every tie the wrong way: detect them
        sample = np.arange(0, len(points), max(1, len(points) // 2000))
        probe = index.closest(points[sample], falloff.outer)
        ok = probe.triangle >= 0
        if ok.any() and np.median(np.einsum("ij,ij->i", normals[sample[ok]], index.normals[probe.triangle[ok]])) < 0:
            normals = -normals
    hit = index.closest(points, falloff.outer, normals, normal_weight)
    bound = hit.triangle >= 0
    offset = np.zeros(len(points))
    offset[bound] = np.einsum("ij,ij->i", points[bound] - hit.point[bound], index.normals[hit.triangle[bound]])
    return hit.triangle, hit.barycentric, hit.distance, offset


def _region_masks(regions: Mapping[str, np.ndarray] | None, n: int) -> dict[str, np.ndarray]:
    masks = {}
    for name, value in (regions or {}).items():
        value = np.asarray(value)
        if value.dtype == bool:
            if value.shape != (n,):
                raise ValueError(f"guide region '{name}' is a mask of {value.size} values, not {n}")
            masks[name] = value
        else:
            mask = np.zeros(n, bool)
            mask[value.astype(np.int64).ravel()] = True
            masks[name] = mask
    return masks


def _lip_side(guide_side, corners, bary, bound) -> np.ndarray:
    """(Vt,) int8: the lip of the nearest corner that is on a lip (+1 upper, -1 lower, 0 none)."""
    corner_side = guide_side[corners]                                         # (Vt, 3)
    score = np.where(corner_side != 0, bary + 1e-9, -1.0)   # ties at bary 0 still count as a lip corner
    pick = np.argmax(score, axis=1)
    side = corner_side[np.arange(len(corners)), pick]
    return np.where(bound, side, 0).astype(np.int8)


# ----------------------------------------------------------------------- transfer


def transfer(binding: Binding, guide_offsets: np.ndarray, guide_to_target_linear: np.ndarray | None = None) -> np.ndarray:
    """Guide motion (..., T, Vg, 3), in the guide's space -> character motion (..., T, Vt, 3)
    float32, in the character's space: interpolated at the bound points, then rotated and
    scaled by the guide -> character linear map (default: the one at bind time)."""
    offsets = np.asarray(guide_offsets)
    if offsets.ndim < 2 or offsets.shape[-2:] != (binding.n_guide, 3):
        raise ValueError(f"the motion is for {offsets.shape[-2] if offsets.ndim >= 2 else '?'} vertices but the guide "
                         f"has {binding.n_guide}; bind the character to a guide with the model's topology")
    linear = binding.guide_to_target[:3, :3] if guide_to_target_linear is None \
        else np.asarray(guide_to_target_linear, np.float64)
    active = np.flatnonzero(np.any(binding.corner_weights != 0, axis=1))  # most of a head never moves
    mixed = np.zeros(offsets.shape[:-2] + (len(active), 3), np.float64)
    for c in range(3):  # one corner at a time: no (..., Vt, 3, 3) temporary
        mixed += binding.corner_weights[active, c, None] * offsets[..., binding.corners[active, c], :]
    out = np.zeros(offsets.shape[:-2] + (binding.n_target, 3), np.float32)
    out[..., active, :] = mixed @ linear.T
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of triangles (F, 3) (zero for loose vertices)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for c in range(3):
        np.add.at(out, f[:, c], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-300)
