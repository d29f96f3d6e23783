"""A procedural mannequin head for synthetic speech animation: `build_head() -> Head`.

Blender convention: metres, Z up, the face looks toward -Y, mirror-symmetric in X.

How it is made (deterministic, no mesh data):
  * skin: rays cast from a short vertical axis inside the head onto an implicit head shape
    (smooth unions of ellipsoids and capsules). Rays are laid out on a (row, column) grid:
    rows go from the crown (a pole) through horizontal rays (eyes to mouth) down to the neck
    cut (a pole); columns go round the head. Both are graded: dense on the face, at the eyes
    and at the mouth. One row runs exactly along the lip seam: the mouth is that row cut open.
  * mouth: the slit's two edges (upper and lower lip seams, joined at the corners) continue
    into a tube of rings that goes back into the head and is closed at the throat: a dark
    pocket of the skin, so an open jaw shows the inside of a mouth, not the back of a head.
  * upper and lower teeth rows (scalloped bars swept along an arch), a tongue, two eyeballs.

Faces: quads where possible (`quads` (Q, 4)); triangles (`triangles` (R, 3)) only at the
poles of lat-long parts and the two ends of the throat wall. Every part is a closed surface
with outward normals (each edge in exactly two faces, traversed in opposite directions):
skin + mouth pocket together, each tooth row, the tongue, each eyeball.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MOUTH_Z = -0.052                      # height of the lip seam (the slit row)
MOUTH_HALF_WIDTH = 0.024              # corner x
EYE_CENTRE = np.array([0.031, -0.0695, 0.011])  # +x eye; the other is mirrored
EYE_RADIUS = 0.0115
EYE_OPENING = (np.array([0.0, -0.0025, 0.0]), np.array([0.019, 0.014, 0.006]))  # cut: offset, radii
NECK_CUT_Z = -0.125
UPPER_TEETH_DEPTH = 0.0075            # upper incisors' front, behind the seam mid-mouth
UPPER_TEETH_EDGE_Z = MOUTH_Z - 0.003  # just below the seam: visible once the lips part
AXIS_Y, AXIS_TOP_Z, AXIS_BOTTOM_Z = 0.0, 0.015, -0.06  # ray origins (see `_skin_grid`)
CAP_RADIUS = 0.1                      # turns cap ray angles into arc lengths for grading

MATERIALS = ("skin", "lips", "mouth", "teeth", "tongue", "eye", "iris")
MATERIAL_COLORS = {  # linear RGB for viewport/Workbench colouring; the add-on may use its own
    "skin": (0.72, 0.55, 0.45), "lips": (0.55, 0.25, 0.24), "mouth": (0.08, 0.015, 0.02),
    "teeth": (0.85, 0.83, 0.76), "tongue": (0.5, 0.16, 0.17), "eye": (0.85, 0.85, 0.82),
    "iris": (0.08, 0.05, 0.03),
}

# Mouth pocket rings behind the seam: depth behind the seam centre, half width, half height
# above / below the seam, arch curvature as a fraction of the seam's own.
# Inner lips (1), vestibule in front of the teeth (2), gums (3), palate/floor (4-5), throat (6-7).
_CAVITY_RINGS = (
    (0.003, 0.0235, 0.0012, 0.0012, 1.0),
    (0.007, 0.024, 0.0065, 0.0065, 1.0),
    (0.013, 0.026, 0.011, 0.011, 0.9),
    (0.022, 0.028, 0.016, 0.017, 0.6),
    (0.036, 0.027, 0.017, 0.018, 0.3),
    (0.048, 0.021, 0.013, 0.014, 0.2),
    (0.054, 0.013, 0.008, 0.009, 0.1),
)


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity, so rigs can be cached per head
class Head:
    vertices: np.ndarray            # (V, 3) float32, metres
    quads: np.ndarray               # (Q, 4) int32, counter-clockwise seen from outside
    triangles: np.ndarray           # (R, 3) int32, same orientation
    quad_material: np.ndarray       # (Q,) int8 index into MATERIALS
    triangle_material: np.ndarray   # (R,) int8
    regions: dict[str, np.ndarray]  # name -> sorted int32 vertex indices (see `_regions`)
    seam: np.ndarray                # (2, K) int32: upper / lower lip seam, corner to corner (x rising);
                                    # the rows share their first and last (corner) vertex
    landmarks: dict[str, np.ndarray]  # name -> (3,) float32 rest point: mouth_centre, upper_incisor_edge,
                                      # alveolar_ridge, jaw_hinge (a point of the x-parallel hinge axis)

    def polygons(self) -> list[tuple[int, ...]]:
        """Quads then triangles, e.g. for `Mesh.from_pydata`."""
        return [tuple(f) for f in self.quads.tolist()] + [tuple(f) for f in self.triangles.tolist()]

    def polygon_material(self) -> np.ndarray:
        """(Q + R,) int8 material index per polygon, in `polygons()` order."""
        return np.concatenate([self.quad_material, self.triangle_material])

    def triangulated(self) -> np.ndarray:
        """(2Q + R, 3) int32: every quad split along its 0-2 diagonal, then the triangles."""
        q = self.quads
        return np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]], self.triangles]).astype(np.int32)


# --------------------------------------------------------------- implicit shape

def _ellipsoid(q, centre, radii):
    radii = np.broadcast_to(np.asarray(radii, float), (3,))
    return (np.linalg.norm((q - centre) / radii, axis=-1) - 1.0) * radii.min()


def _capsule(q, a, b, radius):
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip((q - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    return np.linalg.norm(q - a - t[..., None] * (b - a), axis=-1) - radius


def _smin(a, b, k):
    """Smooth union: blends over a fillet of size ~k instead of a crease."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smax(a, b, k):
    return -_smin(-a, -b, k)


# Smooth unions, in order: (kind, a, b, fillet). Ellipsoid: a = centre, b = radii; capsule: a, b =
# ends, kind = radius. Parts off x = 0 are mirrored by the field's abs(x).
_MASSES = (
    ("ellipsoid", (0, 0.012, 0.032), (0.073, 0.097, 0.088), 0.0),        # cranium
    ("ellipsoid", (0, -0.028, 0.05), (0.06, 0.055, 0.05), 0.02),         # forehead
    ("ellipsoid", (0, -0.03, -0.005), (0.055, 0.055, 0.045), 0.02),      # midface
    ("ellipsoid", (0, -0.055, -0.045), (0.035, 0.037, 0.035), 0.015),    # muzzle (teeth and lips)
    ("ellipsoid", (0.034, -0.045, -0.04), (0.022, 0.035, 0.03), 0.015),  # lower cheeks
    (0.009, (0.046, -0.01, -0.058), (0.015, -0.075, -0.083), 0.025),     # jaw line
    ("ellipsoid", (0, -0.082, -0.079), (0.018, 0.013, 0.014), 0.012),    # chin
    ("ellipsoid", (0.045, -0.054, 0.0), (0.016, 0.018, 0.011), 0.02),    # cheekbones
    (0.008, (0.0, -0.083, 0.026), (0.02, -0.08, 0.029), 0.012),          # brow, inner
    (0.008, (0.02, -0.08, 0.029), (0.042, -0.066, 0.025), 0.012),        # brow, outer
    ("ellipsoid", (0.07, 0.008, 0.0), (0.012, 0.018, 0.028), 0.008),     # ears (mannequin mounds)
    (0.048, (0, 0.015, -0.2), (0, 0.005, -0.03), 0.03),                  # neck
)


def _nose_field(q):
    nose = _smin(_capsule(q, (0, -0.084, 0.01), (0, -0.103, -0.015), 0.0055),
                 _ellipsoid(q, (0, -0.104, -0.019), (0.0078, 0.0085, 0.0075)), 0.006)
    return _smin(nose, _ellipsoid(q, (0.0105, -0.094, -0.0245), (0.0062, 0.0072, 0.0055)), 0.005)  # + nostril wings


def _lips_field(q):
    return _smin(_ellipsoid(q, (0, -0.0895, MOUTH_Z + 0.0042), (0.022, 0.0078, 0.005)),
                 _ellipsoid(q, (0, -0.0885, MOUTH_Z - 0.005), (0.02, 0.0082, 0.006)), 0.002)


def _mirrored(p):
    return np.concatenate([np.abs(p[..., :1]), p[..., 1:]], axis=-1)


def head_field(p: np.ndarray) -> np.ndarray:
    """Implicit head shape, (..., 3) -> (...): negative inside. Not a true distance; only its
    zero set matters. Mirror-symmetric in x."""
    q = _mirrored(p)
    d = None
    for kind, a, b, fillet in _MASSES:
        part = _ellipsoid(q, a, b) if kind == "ellipsoid" else _capsule(q, a, b, kind)
        d = part if d is None else _smin(d, part, fillet)
    d = _smin(d, _nose_field(q), 0.005)
    d = _smin(d, _lips_field(q), 0.006)
    d = _smax(d, -_ellipsoid(q, EYE_CENTRE + EYE_OPENING[0], EYE_OPENING[1]), 0.006)  # almond eye openings
    d = _smax(d, -_ellipsoid(q, (0, -0.1, MOUTH_Z), (MOUTH_HALF_WIDTH, 0.006, 0.0008)), 0.0008)  # lip seam
    return _smax(d, NECK_CUT_Z - q[..., 2], 0.006)                                  # flat neck cut


def _cast(origins: np.ndarray, dirs: np.ndarray, reach=0.2, step=0.003) -> np.ndarray:
    """(N, 3) origins inside the head, (N, 3) unit directions -> (N, 3) outermost surface points.
    Samples every `step` (features thinner than that along a ray may be missed), then bisects."""
    r = np.arange(0.02, reach + step, step)                               # (S,) the axis is >2 cm deep
    inside = head_field(origins[:, None] + r[None, :, None] * dirs[:, None]) < 0  # (N, S)
    if not inside[:, 0].all() or inside[:, -1].any():
        raise AssertionError("ray origins must be inside the head and the reach outside it")
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)      # last inside sample
    lo, hi = r[last], r[last] + step
    for _ in range(20):                                                   # bisection to ~3 nm
        mid = 0.5 * (lo + hi)
        ins = head_field(origins + mid[:, None] * dirs) < 0
        lo, hi = np.where(ins, mid, lo), np.where(ins, hi, mid)
    return origins + (0.5 * (lo + hi))[:, None] * dirs


# ------------------------------------------------------------------ skin grid

def _graded(start: float, stop: float, knots, spacing) -> np.ndarray:
    """Points from start to stop (both included) whose gaps follow the piecewise-linear
    spacing(knots): integrate 1/spacing, then cut the integral into equal steps."""
    s = np.linspace(start, stop, 4001)
    gaps = np.interp(0.5 * (s[1:] + s[:-1]), knots, spacing)
    u = np.concatenate([[0.0], np.cumsum(np.diff(s) / gaps)])
    return np.interp(np.linspace(0.0, u[-1], max(1, round(u[-1])) + 1), u, s)


def _skin_grid():
    """-> (rows (Ri, C, 3) without the poles, top pole (3,), bottom pole (3,), seam row index
    into rows, column angles (C,)).

    A row is a parameter s, arc length from the crown on a reference shape: in the upper
    cap rays fan up from the axis top, in the middle (eyes to mouth) they are horizontal
    from points down the axis, so those rows are horizontal lines; in the lower cap they
    fan down from the axis bottom. Columns are angles round Z, 0 = the front (-Y)."""
    cap, middle = CAP_RADIUS * np.pi / 2, AXIS_TOP_Z - AXIS_BOTTOM_Z
    end, seam = 2 * cap + middle, cap + AXIS_TOP_Z - MOUTH_Z
    eyes = cap + AXIS_TOP_Z - EYE_CENTRE[2]
    neck_cut = cap + middle + CAP_RADIUS * np.arctan2(AXIS_BOTTOM_Z - NECK_CUT_Z, 0.05)
    knots = (0, 0.5 * cap, eyes - 0.02, eyes - 0.014, eyes + 0.012, eyes + 0.018, seam - 0.012, seam,
             seam + 0.012, cap + middle, neck_cut - 0.015, neck_cut, neck_cut + 0.012, end)
    spacing = (0.012, 0.006, 0.0036, 0.0018, 0.0018, 0.0026, 0.0026, 0.0013, 0.0026, 0.0032, 0.007, 0.0035,
               0.007, 0.014)
    s = np.concatenate([_graded(0, seam, knots, spacing), _graded(seam, end, knots, spacing)[1:]])[1:-1]
    half = _graded(0.0, np.pi, (0, 0.5, 1.1, np.pi), (0.027, 0.034, 0.085, 0.16))
    theta = np.concatenate([-half[::-1][:-1], half[:-1]])                 # (C,) -pi .. 0 .. <pi, rising

    z = np.clip(AXIS_TOP_Z - (s - cap), AXIS_BOTTOM_Z, AXIS_TOP_Z)       # (Ri,) ray origins on the axis
    el = np.where(s < cap, (cap - s) / CAP_RADIUS, np.minimum(cap + middle - s, 0.0) / CAP_RADIUS)
    dirs = np.stack([np.cos(el)[:, None] * np.sin(theta), -np.cos(el)[:, None] * np.cos(theta),
                     np.broadcast_to(np.sin(el)[:, None], (len(z), len(theta)))], -1)  # (Ri, C, 3)
    origins = np.broadcast_to(np.stack(np.broadcast_arrays(0.0, AXIS_Y, z[:, None]), -1), dirs.shape)
    rows = _cast(origins.reshape(-1, 3), dirs.reshape(-1, 3)).reshape(dirs.shape)
    poles = _cast(np.array([[0, AXIS_Y, AXIS_TOP_Z], [0, AXIS_Y, AXIS_BOTTOM_Z]]), np.array([[0, 0, 1.0], [0, 0, -1]]))
    return rows, poles[0], poles[1], int(np.argmin(np.abs(s - seam))), theta


def _grid_quads(index: np.ndarray, wrap: bool = True) -> np.ndarray:
    """(A, B) vertex index grid -> quads between consecutive rows/columns. With rows going
    'down' and columns 'east', (a, down, down-east, east) faces outward."""
    cols = np.arange(index.shape[1] if wrap else index.shape[1] - 1)
    nxt = (cols + 1) % index.shape[1]
    a, b = index[:-1], index[1:]
    return np.stack([a[:, cols], b[:, cols], b[:, nxt], a[:, nxt]], -1).reshape(-1, 4)


# --------------------------------------------------------------- other parts

def _sweep(rings: np.ndarray, start=None, end=None):
    """Closed surface through (S, K, 3) rings: quads between rings (wrapping round K); each end
    closed by one quad (K = 4) or by a triangle fan to a `start` / `end` pole point.
    -> (vertices, quads, triangles), flipped if needed so the signed volume is positive."""
    S, K = rings.shape[:2]
    grid = np.arange(S * K).reshape(S, K)
    verts, quads, tris = [rings.reshape(-1, 3)], [_grid_quads(grid)], [np.zeros((0, 3), int)]
    # The tube runs round its first ring backwards and its last ring forwards; caps run the other way.
    for ring, pole, first in ((grid[0], start, True), (grid[-1], end, False)):
        if pole is None:
            quads.append((ring if first else ring[::-1])[None])
        else:
            fan = np.stack([np.full(K, S * K + len(verts) - 1), ring, np.roll(ring, -1)], -1)
            verts.append(np.asarray(pole, float)[None])
            tris.append(fan if first else fan[:, [0, 2, 1]])
    verts, quads, tris = np.concatenate(verts), np.concatenate(quads), np.concatenate(tris)
    t = np.concatenate([quads[:, :3], quads[:, [0, 2, 3]], tris])
    if np.einsum("ij,ij->", verts[t[:, 0]], np.cross(verts[t[:, 1]], verts[t[:, 2]])) < 0:
        quads, tris = quads[:, ::-1], tris[:, ::-1]
    return verts, quads, tris


def _tooth_row(y_front, curvature, half_width, z_root, z_edge, thickness, tooth=0.0075):
    """A scalloped bar along the arch y = y_front + curvature * x^2: (S, 4, 3) rings.
    The front face dips and the biting edge shortens at tooth boundaries (multiples of
    `tooth` of arc length from the midline, where the central incisors meet)."""
    x = np.linspace(-half_width, half_width, 801)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(curvature * x * x)))])
    arc -= np.interp(0.0, x, arc)
    s = np.linspace(arc[0], arc[-1], 4 * round((arc[-1] - arc[0]) / tooth) + 1)
    xs = np.interp(s, arc, x)
    centre = np.stack([xs, y_front + curvature * xs * xs, np.zeros_like(xs)], -1)
    normal = np.stack([-2 * curvature * xs, np.ones_like(xs), np.zeros_like(xs)], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)             # into the mouth
    gap = 0.5 * (1 + np.cos(2 * np.pi * s / tooth))                      # 1 at boundaries, 0 mid-tooth
    edge = (z_edge - np.sign(z_edge - z_root) * 0.0008 * gap)[:, None]
    up = np.array([0.0, 0.0, 1.0])
    front, back = centre + normal * (0.0005 * gap)[:, None], centre + normal * thickness
    return np.stack([front + up * z_root, front + up * edge, back + up * edge, back + up * z_root], 1)


def _lat_long(centre, radii, n_lat, n_lon, shape=None):
    """Ellipsoid rings (n_lat, n_lon, 3), front pole (-y), back pole (+y).
    `shape(a, ring) -> ring` may reshape the ring at polar angle a (0 at the front) but must
    keep the y axis (the poles) where it is."""
    a = np.linspace(0, np.pi, n_lat + 2)[1:-1]
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    rings = np.stack([np.sin(a)[:, None] * np.cos(phi), np.broadcast_to(-np.cos(a)[:, None], (n_lat, n_lon)),
                      np.sin(a)[:, None] * np.sin(phi)], -1) * radii
    if shape is not None:
        rings = np.stack([shape(ai, ring) for ai, ring in zip(a, rings)])
    return rings + centre, centre - (0, radii[1], 0), centre + (0, radii[1], 0)


def _tongue_shape(a, ring):
    """Flat underside, wider toward the root (a: 0 at the tip, pi at the root)."""
    return ring * np.stack([np.full(len(ring), 0.75 + 0.25 * a / np.pi), np.ones(len(ring)),
                            np.where(ring[:, 2] < 0, 0.6, 1.0)], -1)


def _cavity_rings(seam_upper: np.ndarray, corner: np.ndarray, y0: float) -> np.ndarray:
    """Rings of the mouth pocket, (len(_CAVITY_RINGS), M, 3) ordered like the seam loop:
    left corner, upper points (x rising), right corner, lower points (x falling)."""
    xc = abs(corner[0])
    k0 = (corner[1] - y0) / xc ** 2                                      # the seam's own arch curvature
    u = seam_upper[:, 0] / xc                                            # (n,) across the mouth, -1..1
    bulge = (1.0 - np.minimum(np.abs(u), 1.0) ** 2.5) ** 0.4             # superellipse: boxier than a circle
    rings = []
    for depth, width, up, down, arch in _CAVITY_RINGS:
        x = np.concatenate([[-width], u * width, [width], (u * width)[::-1]])
        z = np.concatenate([[0.0], up * bulge, [0.0], (-down * bulge)[::-1]]) + MOUTH_Z
        rings.append(np.stack([x, y0 + depth + arch * k0 * x * x, z], -1))
    return np.stack(rings)


def _close_throat(ring: np.ndarray):
    """Close the last pocket ring (L, u1..un, R, ln..l1) with a strip of quads between the
    upper and lower points and a triangle at each side, traversing its edges against the tube."""
    n = (len(ring) - 2) // 2
    k = np.arange(1, n)
    quads = np.stack([ring[k + 1], ring[k], ring[2 * n + 2 - k], ring[2 * n + 1 - k]], -1)
    return quads, np.array([[ring[1], ring[0], ring[2 * n + 1]], [ring[n + 1], ring[n], ring[n + 2]]])


# ------------------------------------------------------------------- assembly

class _Builder:
    """Accumulates vertices, and faces with a material each."""

    def __init__(self):
        self.verts, self.quads, self.tris, self.quad_mat, self.tri_mat = [], [], [], [], []
        self.count = 0

    def add_vertices(self, points) -> np.ndarray:
        """-> the new vertices' indices, shaped like `points` without its last axis."""
        points = np.asarray(points, float)
        self.verts.append(points.reshape(-1, 3))
        self.count += len(self.verts[-1])
        return np.arange(self.count - len(self.verts[-1]), self.count).reshape(points.shape[:-1])

    def add_faces(self, quads, tris, quad_mat, tri_mat=None) -> None:
        quads, tris = np.reshape(quads, (-1, 4)), np.reshape(tris, (-1, 3))
        self.quads.append(quads)
        self.tris.append(tris)
        self.quad_mat.append(np.broadcast_to(quad_mat, len(quads)))
        self.tri_mat.append(np.broadcast_to(quad_mat if tri_mat is None else tri_mat, len(tris)))

    def add_part(self, part, material) -> np.ndarray:
        verts, quads, tris = part
        index = self.add_vertices(verts)
        self.add_faces(index[quads], index[tris], material)
        return index


@lru_cache(maxsize=1)
def build_head() -> Head:
    """The mannequin head (cached: the same read-only object on every call)."""
    b, mat = _Builder(), {name: np.int8(i) for i, name in enumerate(MATERIALS)}
    rows, top, bottom, i_s, theta = _skin_grid()                         # rows: (Ri, C, 3)
    C = rows.shape[1]
    top_i, grid, bottom_i = b.add_vertices(top), b.add_vertices(rows), b.add_vertices(bottom)

    # The slit: interior seam columns get a second, lower-lip copy of their vertex.
    j_left = int(np.argmin(np.abs(rows[i_s, :, 0] + MOUTH_HALF_WIDTH) + 10.0 * (np.abs(theta) > 1.0)))
    j_right = C - j_left                                                 # its mirror image
    interior = np.arange(j_left + 1, j_right)
    lower = b.add_vertices(rows[i_s, interior])
    below = grid[i_s].copy()
    below[interior] = lower
    nxt = np.roll(np.arange(C), -1)
    b.add_faces(np.concatenate([_grid_quads(grid[:i_s + 1]), _grid_quads(np.stack([below, grid[i_s + 1]])),
                                _grid_quads(grid[i_s + 1:])]),
                np.concatenate([np.stack([np.full(C, top_i), grid[0], grid[0, nxt]], -1),
                                np.stack([grid[-1], np.full(C, bottom_i), grid[-1, nxt]], -1)]), mat["skin"])
    seam = np.stack([grid[i_s, j_left:j_right + 1], np.concatenate([[grid[i_s, j_left]], lower, [grid[i_s, j_right]]])])

    # The mouth pocket hangs from the seam loop: left corner, upper lip, right corner, lower lip back.
    y0 = rows[i_s, C // 2, 1]
    rings = b.add_vertices(_cavity_rings(rows[i_s, interior], rows[i_s, j_left], y0))  # (7, M)
    tube = np.concatenate([np.concatenate([seam[0], lower[::-1]])[None], rings])
    b.add_faces(_grid_quads(tube[:2]), [], mat["lips"])                                 # inner lips
    throat_quads, throat_tris = _close_throat(rings[-1])
    b.add_faces(np.concatenate([_grid_quads(tube[1:]), throat_quads]), throat_tris, mat["mouth"])

    # Teeth, tongue, eyes: separate closed parts.
    y_teeth = y0 + UPPER_TEETH_DEPTH
    upper_teeth = b.add_part(_sweep(_tooth_row(y_teeth, 45.0, 0.022, MOUTH_Z + 0.016, UPPER_TEETH_EDGE_Z, 0.0065)),
                             mat["teeth"])
    lower_teeth = b.add_part(_sweep(_tooth_row(y_teeth + 0.003, 42.0, 0.020, MOUTH_Z - 0.016, MOUTH_Z + 0.0005, 0.006)),
                             mat["teeth"])
    tongue = b.add_part(_sweep(*_lat_long(np.array([0, y0 + 0.041, MOUTH_Z - 0.0115]),
                                          np.array([0.018, 0.022, 0.0075]), 10, 16, _tongue_shape)), mat["tongue"])
    eyes = []
    for centre in (EYE_CENTRE, EYE_CENTRE * (-1, 1, 1)):
        verts, quads, tris = _sweep(*_lat_long(centre, np.full(3, EYE_RADIUS), 12, 20))
        iris = (verts - centre) @ (0, -1.0, 0) > EYE_RADIUS * np.cos(0.55)          # (n,) round the front pole
        eyes.append(b.add_vertices(verts))
        b.add_faces(eyes[-1][quads], eyes[-1][tris], np.where(iris[quads].all(1), mat["iris"], mat["eye"]),
                    np.where(iris[tris].all(1), mat["iris"], mat["eye"]))

    vertices = np.concatenate(b.verts).astype(np.float32)
    quads, tris = np.concatenate(b.quads).astype(np.int32), np.concatenate(b.tris).astype(np.int32)
    quad_mat, tri_mat = np.concatenate(b.quad_mat).astype(np.int8), np.concatenate(b.tri_mat).astype(np.int8)
    centre = vertices[quads].mean(1)                                         # the red of the lips: the bulges
    on_lips = (_lips_field(_mirrored(centre)) < 0.0006) | (np.abs(centre[:, 2] - MOUTH_Z) < 0.002)  # and the seam
    quad_mat[on_lips & (np.abs(centre[:, 0]) < MOUTH_HALF_WIDTH) & (centre[:, 1] < -0.08) & (quad_mat == mat["skin"])] \
        = mat["lips"]
    regions = _regions(vertices, {"skin": np.arange(lower[-1] + 1), "seam": seam, "rings": rings, "tongue": tongue,
                                  "upper_teeth": upper_teeth, "lower_teeth": lower_teeth, "eyes": np.concatenate(eyes)})
    incisors = np.array([0.0, y_teeth, UPPER_TEETH_EDGE_Z])
    landmarks = {
        "mouth_centre": np.array([0.0, y0, MOUTH_Z]),          # the seam mid-mouth
        "upper_incisor_edge": incisors,                         # front of the upper biting edge
        "alveolar_ridge": incisors + (0.0, 0.009, 0.009),      # behind the upper incisors: t/d/n/l contact
        "jaw_hinge": np.array([0.0, -0.005, -0.004]),           # on the left-right hinge axis, by the ears
    }
    seam = seam.astype(np.int32)
    for array in (vertices, quads, tris, quad_mat, tri_mat, seam, *regions.values()):
        array.setflags(write=False)
    return Head(vertices, quads, tris, quad_mat, tri_mat, regions, seam,
                {name: point.astype(np.float32) for name, point in landmarks.items()})


def _regions(v: np.ndarray, parts: dict) -> dict[str, np.ndarray]:
    """Named vertex sets, by part and by rest position. upper_face, eyes, skull and neck
    never move; jaw is everything the jaw carries (chin, lower lip, lower teeth, tongue,
    lower half of the pocket); the cheeks between them are neither."""
    x, y, z = v.T

    def mask(index):
        out = np.zeros(len(v), bool)
        out[np.ravel(index)] = True
        return out

    skin, rings, seam = mask(parts["skin"]), parts["rings"], parts["seam"]
    n = (rings.shape[1] - 2) // 2
    pocket_upper, pocket_lower = rings[:, 1:n + 1], rings[:, n + 2:]
    seam_upper, seam_lower = mask(seam[0, 1:-1]), mask(seam[1, 1:-1])
    lips = skin & (np.abs(x) < MOUTH_HALF_WIDTH + 0.004) & (y < -0.075) & (np.abs(z - MOUTH_Z - 0.001) < 0.013)
    upper_lip = (lips & (z > MOUTH_Z) | seam_upper | mask(pocket_upper[:2])) & ~seam_lower
    lower_lip = (lips & (z < MOUTH_Z) | seam_lower | mask(pocket_lower[:2])) & ~seam_upper
    chin = skin & (z < MOUTH_Z - 0.012) & (y < -0.05) & (z > -0.1)
    front = skin & (y < -0.03)
    nose = skin & (_nose_field(_mirrored(v)) < 0.003) & (z > MOUTH_Z + 0.01)
    regions = {
        "skin": skin,
        "lips": lips | mask(seam) | mask(rings[:2]),
        "upper_lip": upper_lip,
        "lower_lip": lower_lip,
        # The inner lip contour without the corners: where the lips meet. Lip-sync metrics
        # measure opening here; the whole lips' centres part by 1-2 mm in a closure with the
        # jaw slightly open, as the lip bodies stretch.
        "upper_lip_seam": seam_upper,
        "lower_lip_seam": seam_lower,
        "jaw": chin | lower_lip | mask(parts["lower_teeth"]) | mask(parts["tongue"]) | mask(pocket_lower),
        "chin": chin,
        "upper_face": front & (z > 0.0),
        "cheeks": front & (np.abs(x) > MOUTH_HALF_WIDTH) & (z > MOUTH_Z - 0.02) & (z <= 0.0) & ~nose,
        "eyes": mask(parts["eyes"]),
        "nose": nose,
        "mouth_interior": mask(rings),
        "teeth": mask(parts["upper_teeth"]) | mask(parts["lower_teeth"]),
        "upper_teeth": mask(parts["upper_teeth"]),
        "lower_teeth": mask(parts["lower_teeth"]),
        "tongue": mask(parts["tongue"]),
        "neck": skin & ((z < -0.1) | (z <= -0.07) & (y >= -0.03)),
        "skull": skin & (y >= -0.03) & (z > -0.07),
    }
    return {name: np.flatnonzero(m).astype(np.int32) for name, m in regions.items()}
