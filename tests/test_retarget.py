"""Retargeting and ARKit solving without Blender (core/retarget.py, core/arkit.py, core/nearest.py).

Every retarget case has an exactly known answer. The guide is the project's head, the
motion comes from its rig (jaw, lip closure, tuck, rounding, smile, tongue), and the
character is the same surface sampled differently, so each character vertex's true
motion is the guide's motion interpolated at that point:

    (a) subdivided: every triangle split in four at its edge midpoints (37k vertices);
        a midpoint moves as the mean of its edge's two ends;
    (b) resampled like a remesh: half the vertices plus 20k random points on the surface,
        each moving as its triangle's barycentric mix;
    (c) scaled x3, rotated arbitrarily and moved: each vertex moves as R (3 x offset).

Measured (bpy 5.0 venv, numpy 1.26): max vertex error 1e-6 mm in all three cases (float32
rounding), exactly 0 on the skull, eyes, neck and upper face. The bounds asserted below
(0.001 mm) leave room for rounding only: any wrong triangle, wrong lip or leak into the
still regions would cost millimetres.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from diffspeaker_blender.core import arkit
from diffspeaker_blender.core import retarget as rt
from diffspeaker_blender.core.nearest import TriangleIndex, closest_on_triangles, knn
from synth import rig
from synth.arkit_keys import arkit_shapes
from synth.head import build_head

ROOT = Path(__file__).resolve().parents[1]
EXACT_MM = 1e-3  # retarget bound on every vertex, cases (a)-(c): rounding only


@pytest.fixture(scope="module")
def head():
    return build_head()


@pytest.fixture(scope="module")
def motion(head) -> np.ndarray:
    """(6, V, 3) float64 rig offsets: every parameter, including the contacts, at several values."""
    params = np.zeros((6, len(rig.PARAMETERS)), np.float32)
    values = {
        "jaw_open": [0, 0.3, 1, 0.6, 0.2, 0.8], "lip_close": [0, 0, 1, 0.5, 0, 1],
        "lower_lip_tuck": [0, 1, 0, 0, 0.4, 0], "round": [0.2, 0, 0.9, 0, 0.5, 0.1],
        "protrude": [0, 0.3, 0.7, 0, 0.2, 0], "spread": [0.5, 0, 0, 0.8, 0, 0.3],
        "smile": [0.4, 0.1, 0, 1, 0, 0.6], "lip_press": [0, 0, 0.8, 0, 0, 0.5], "tongue_up": [0, 0.5, 0, 1, 0.3, 0],
    }
    for name, column in values.items():
        params[:, rig.P[name]] = column
    return rig.deform(rig.build_rig(head), params).astype(np.float64)


def mask(head, *names) -> np.ndarray:
    out = np.zeros(len(head.vertices), bool)
    for name in names:
        out[head.regions[name]] = True
    return out


def subdivide(vertices: np.ndarray, tris: np.ndarray):
    """-> (vertices + edge midpoints, the 4x triangles, edges (E, 2): midpoint i is vertex V + i)."""
    edges = np.unique(np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), 1), axis=0)
    lookup = {pair: len(vertices) + i for i, pair in enumerate(map(tuple, edges.tolist()))}
    faces = []
    for a, b, c in tris.tolist():
        ab, bc, ca = (lookup[tuple(sorted(pair))] for pair in ((a, b), (b, c), (c, a)))
        faces += [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)]
    return np.concatenate([vertices, vertices[edges].mean(1)]), np.array(faces), edges


def report(name: str, error_m: np.ndarray, lips: np.ndarray, still: np.ndarray, moved_still: float) -> None:
    print(f"\n{name}: max {error_m.max() * 1e3:.2e} mm, lips {error_m[:, lips].max() * 1e3:.2e} mm, "
          f"still regions moved {moved_still:.1e} m")


# ------------------------------------------------------------------------ exact cases


def test_a_subdivided_head_moves_exactly_like_the_guide(head, motion):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    verts, faces, edges = subdivide(guide, tris)
    expected = np.concatenate([motion, motion[:, edges].mean(2)], 1)
    binding = rt.bind(guide, tris, head.regions, verts, rt.vertex_normals(verts, faces))
    out = rt.transfer(binding, motion)
    error = np.linalg.norm(out - expected, axis=-1)                    # (T, Vt) metres
    lips = np.r_[mask(head, "lips"), mask(head, "lips")[edges].all(1)]
    still = np.r_[mask(head, *rt.STATIC_REGIONS), mask(head, *rt.STATIC_REGIONS)[edges].all(1)]
    report("(a) subdivided", error, lips, still, float(np.abs(out[:, still]).max()))
    assert error.max() * 1e3 <= EXACT_MM
    assert np.all(out[:, still] == 0)
    assert binding.quality().furthest_guide < 1e-6


def test_b_a_differently_sampled_head_moves_exactly_like_the_guide(head, motion):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    rng = np.random.default_rng(3)
    keep = np.flatnonzero(rng.random(len(guide)) < 0.5)
    pick = rng.integers(0, len(tris), 20000)
    uv = rng.random((len(pick), 2))
    uv[uv.sum(1) > 1] = 1 - uv[uv.sum(1) > 1]
    bary = np.stack([1 - uv.sum(1), uv[:, 0], uv[:, 1]], 1)
    points = np.einsum("nc,ncd->nd", bary, guide[tris[pick]])
    face_normal = np.cross(guide[tris[pick, 1]] - guide[tris[pick, 0]], guide[tris[pick, 2]] - guide[tris[pick, 0]])
    verts = np.concatenate([guide[keep], points])
    normals = np.concatenate([rt.vertex_normals(guide, tris)[keep], face_normal])
    expected = np.concatenate([motion[:, keep], np.einsum("nc,tncd->tnd", bary, motion[:, tris[pick]])], 1)
    out = rt.transfer(rt.bind(guide, tris, head.regions, verts, normals), motion)
    error = np.linalg.norm(out - expected, axis=-1)
    lips = np.r_[mask(head, "lips")[keep], mask(head, "lips")[tris[pick]].all(1)]
    still = np.r_[mask(head, *rt.STATIC_REGIONS)[keep], mask(head, *rt.STATIC_REGIONS)[tris[pick]].all(1)]
    report("(b) resampled", error, lips, still, float(np.abs(out[:, still]).max()))
    assert error.max() * 1e3 <= EXACT_MM
    assert np.all(out[:, still] == 0)


def random_rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def test_c_a_scaled_rotated_moved_head_gets_the_rotated_scaled_motion(head, motion):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    rotation = random_rotation(7)
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = 3.0 * rotation, (0.4, -1.2, 2.0)
    verts = guide @ matrix[:3, :3].T + matrix[:3, 3]
    normals = rt.vertex_normals(guide, tris) @ rotation.T
    out = rt.transfer(rt.bind(guide, tris, head.regions, verts, normals, guide_to_target=matrix), motion)
    expected = motion @ matrix[:3, :3].T
    error = np.linalg.norm(out - expected, axis=-1) / 3.0             # at the guide's size, like (a), (b)
    report("(c) x3, rotated", error, mask(head, "lips"), mask(head, *rt.STATIC_REGIONS),
           float(np.abs(out[:, mask(head, *rt.STATIC_REGIONS)]).max()))
    assert error.max() * 1e3 <= EXACT_MM
    assert np.all(out[:, mask(head, *rt.STATIC_REGIONS)] == 0)


def test_the_rough_fit_finds_a_scaled_rotated_head_to_within_two_millimetres(head):
    """Half the vertices of the head, x3, turned and moved: every vertex of the fitted
    guide's upper face lies within 2 mm (at the guide's size; measured 0.3-1.4 mm, 0.3 mm
    on average) of where it belongs."""
    guide = head.vertices.astype(np.float64)
    face = head.regions["upper_face"]
    for seed in (0, 2):
        rotation = random_rotation(seed)
        keep = np.random.default_rng(seed).random(len(guide)) < 0.5
        target = 3.0 * guide[keep] @ rotation.T + (0.3, 0.5, -2.0)
        fit = rt.rough_fit(guide, face, target)
        placed, truth = fit.apply(guide[face]), 3.0 * guide[face] @ rotation.T + (0.3, 0.5, -2.0)
        error_mm = np.linalg.norm(placed - truth, axis=1).max() / 3.0 * 1e3
        print(f"\nrough fit, seed {seed}: face within {error_mm:.2f} mm, scale {fit.scale:.4f}")
        assert error_mm <= 2.0
        assert fit.scale == pytest.approx(3.0, rel=2e-3)


def test_a_wider_longer_head_is_still_faced_the_right_way(head):
    """Non-uniform scaling (1.25 wide, 1.1 tall) cannot be matched by a similarity; the fit
    must still face the same way and sit on the head (the artist fine-tunes the rest).
    Bounds: rotation within 10 deg, nose within 15 mm (measured 5.3 deg, 9.1 mm)."""
    guide = head.vertices.astype(np.float64)
    rotation = random_rotation(1)
    target = (guide * (1.25, 1.0, 1.1)) @ rotation.T + (1.0, 2.0, 3.0)
    fit = rt.rough_fit(guide, head.regions["upper_face"], target)
    angle = np.degrees(np.arccos(np.clip((np.trace(fit.rotation.T @ rotation) - 1) / 2, -1, 1)))
    nose = head.vertices[head.regions["nose"]].mean(0)
    nose_error = np.linalg.norm(fit.apply(nose[None])[0] - ((nose * (1.25, 1.0, 1.1)) @ rotation.T + (1.0, 2.0, 3.0)))
    print(f"\nnon-uniform: rotation off by {angle:.1f} deg, nose off by {nose_error * 1e3:.1f} mm")
    assert angle < 10.0 and nose_error < 0.015


# ------------------------------------------------------------------ rules of the binding


def test_vertices_bound_to_the_upper_lip_never_move_with_the_lower_lip(head):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    verts, faces, _ = subdivide(guide, tris)
    binding = rt.bind(guide, tris, head.regions, verts, rt.vertex_normals(verts, faces))
    lower_only = np.zeros((1, len(guide), 3))
    lower_only[0, head.regions["lower_lip"], 2] = -0.01                # the lower lip drops 1 cm, nothing else moves
    out = rt.transfer(binding, lower_only)
    upper = binding.side > 0
    assert upper.sum() > 300 and (binding.side < 0).sum() > 300
    assert np.all(out[0, upper] == 0)
    # and the seam itself: upper seam vertices sit exactly on lower seam vertices
    seam_upper, seam_lower = head.seam[0, 1:-1], head.seam[1, 1:-1]
    assert np.allclose(guide[seam_upper], guide[seam_lower])
    assert np.all(binding.side[seam_upper] == 1) and np.all(binding.side[seam_lower] == -1)


def test_a_vertex_far_from_the_guide_does_not_move_and_the_falloff_is_smooth(head, motion):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    normals = rt.vertex_normals(guide, tris)
    chin = head.regions["chin"][:50]
    lift = np.array([0.0, 0.003, 0.01, 0.015, 0.03, 0.2])             # metres out along the normal
    verts = (guide[chin][None] + lift[:, None, None] * normals[chin][None]).reshape(-1, 3)
    falloff = rt.Falloff(inner=0.006, outer=0.02)
    binding = rt.bind(guide, tris, head.regions, verts, np.tile(normals[chin], (len(lift), 1)), falloff=falloff)
    weight = binding.weight.reshape(len(lift), -1)
    assert np.all(weight[:2] == 1) and np.all(weight[4:] == 0)
    assert np.all((weight[2] > weight[3]) & (weight[3] > 0) & (weight[2] < 1))
    out = rt.transfer(binding, motion).reshape(len(motion), len(lift), len(chin), 3)
    assert np.all(out[:, 4:] == 0)                                     # 3 cm and 20 cm out: still
    assert np.all(binding.triangle.reshape(len(lift), -1)[5] == -1)    # 20 cm: out of reach altogether
    assert np.abs(binding.normal_offset.reshape(len(lift), -1)[1] - 0.003).max() < 5e-4


def test_the_characters_regions_follow_the_guides(head):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    binding = rt.bind(guide, tris, head.regions, guide, rt.vertex_normals(guide, tris))
    for name, sources in rt.TARGET_REGIONS.items():
        assert np.array_equal(binding.regions[name], mask(head, *sources)), name


def test_the_region_grouping_matches_the_cleanup(head):
    from diffspeaker_blender.core.cleanup import head_cleanup_regions

    theirs = head_cleanup_regions(head.regions)
    for name, sources in rt.TARGET_REGIONS.items():
        assert np.array_equal(np.flatnonzero(mask(head, *sources)), theirs[name]), name


def test_a_guide_without_regions_moves_everything_near_it(head, motion):
    """A template with no regions (FLAME, BIWI): no still parts, no lip sides; the vertex
    normals alone keep the two lips apart where they touch."""
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    binding = rt.bind(guide, tris, None, guide, rt.vertex_normals(guide, tris))
    assert binding.regions == {} and np.all(binding.side == 0)
    assert np.abs(rt.transfer(binding, motion) - motion).max() < 1e-9


def test_binding_is_fast_enough_for_a_10k_character_on_a_9k_guide(head):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    rng = np.random.default_rng(0)
    verts = guide[rng.integers(0, len(guide), 10000)] + rng.normal(0, 0.002, (10000, 3))
    started = time.perf_counter()
    rt.bind(guide, tris, head.regions, verts, rng.normal(size=(10000, 3)))
    seconds = time.perf_counter() - started
    print(f"\nbind 10k on 9.3k: {seconds:.2f} s")
    assert seconds < 10.0  # ~1 s measured on 2 shared cores


def test_bad_input_is_explained(head, motion):
    guide, tris = head.vertices.astype(np.float64), head.triangulated()
    with pytest.raises(ValueError, match="inner < outer"):
        rt.Falloff(inner=0.02, outer=0.01)
    with pytest.raises(ValueError, match="invertible"):
        rt.bind(guide, tris, None, guide, guide_to_target=np.zeros((4, 4)))
    binding = rt.bind(guide, tris, None, guide[:100])
    with pytest.raises(ValueError, match="the guide has 9277"):
        rt.transfer(binding, motion[:, :500])


# ------------------------------------------------------------------- spatial search


def test_knn_and_closest_points_agree_with_brute_force():
    rng = np.random.default_rng(1)
    points, queries = rng.normal(size=(3000, 3)), rng.normal(size=(400, 3)) * 1.5
    _, dist = knn(points, queries, 5)
    brute = np.linalg.norm(queries[:, None] - points[None], axis=-1)
    assert np.allclose(dist, np.sort(brute, 1)[:, :5])
    a, b, c, p = rng.normal(size=(4, 2000, 3))
    hit = closest_on_triangles(p, a, b, c)
    assert np.allclose(hit.barycentric.sum(1), 1) and hit.barycentric.min() >= 0
    uv = rng.random((4000, 2))
    uv[uv.sum(1) > 1] = 1 - uv[uv.sum(1) > 1]
    samples = a[:50, None] + uv[None, :, :1] * (b - a)[:50, None] + uv[None, :, 1:] * (c - a)[:50, None]
    assert np.all(hit.distance[:50] <= np.linalg.norm(samples - p[:50, None], axis=-1).min(1) + 1e-12)
    verts, tris = rng.normal(size=(300, 3)), rng.integers(0, 300, (500, 3))
    found = TriangleIndex(verts, tris).closest(queries)
    every = closest_on_triangles(np.repeat(queries, len(tris), 0), *(np.tile(verts[tris[:, i]], (len(queries), 1))
                                                                     for i in range(3)))
    assert np.allclose(found.distance, every.distance.reshape(len(queries), -1).min(1))


# --------------------------------------------------------------------------- ARKit


def test_arkit_names_are_recognised_with_the_usual_decorations():
    assert len(arkit.ARKIT_NAMES) == 52 and len(set(arkit.ARKIT_NAMES)) == 52
    assert set(arkit.SPEECH_NAMES) <= set(arkit.ARKIT_NAMES) and len(arkit.SPEECH_NAMES) == 28
    cases = {
        "jawOpen": "jawOpen", "JawOpen": "jawOpen", "jaw_open": "jawOpen", "ARKit_jawOpen": "jawOpen",
        "blendShape1.jawOpen": "jawOpen", "jawOpen.001": "jawOpen", "Face:jawOpen": "jawOpen",
        "mouthSmile_L": "mouthSmileLeft", "mouthSmile.R": "mouthSmileRight", "mouthSmileL": "mouthSmileLeft",
        "A38_Mouth_Smile_Left": "mouthSmileLeft", "bs_mouthFunnel": "mouthFunnel", "mouthRollLower": "mouthRollLower",
        "mouthShrugUpper": "mouthShrugUpper", "EyeBlink_L": "eyeBlinkLeft", "tongueOut": "tongueOut",
        "Basis": None, "blink": None, "mouthWide": None, "jaw": None,
    }
    assert {name: arkit.canonical_arkit_name(name) for name in cases} == cases
    found = arkit.match_arkit_names(["Basis", "jawOpen", "bs_jawOpen", "eyeBlink_L", "mouthClose"], arkit.SPEECH_NAMES)
    assert found == {"jawOpen": "jawOpen", "mouthClose": "mouthClose"}


@pytest.fixture(scope="module")
def keys(head):
    shapes = arkit_shapes(head)
    return list(shapes), np.stack([shapes[n] for n in shapes]).astype(np.float64)


def test_known_arkit_weights_are_recovered(keys):
    """Motion = sum of known weights x the keys' shapes (18 keys built from the rig), 300
    frames, a third of the weights at 0 and a tenth at 1. Bounds: every weight within 0.05
    (measured <= 0.013), every vertex within 0.5 mm (measured 0.02 mm). jawLeft/jawRight
    are exact opposites, so only one of the two is ever on (as in real capture)."""
    names, deltas = keys
    rng = np.random.default_rng(0)
    weights = rng.random((300, len(names)))
    weights[rng.random(weights.shape) < 0.3] = 0.0
    weights[rng.random(weights.shape) < 0.1] = 1.0
    left, right = names.index("jawLeft"), names.index("jawRight")
    weights[weights[:, left] > weights[:, right], right] = 0.0
    weights[weights[:, left] > 0, right] = 0.0
    motion = np.einsum("tk,kvc->tvc", weights, deltas)
    fit = arkit.solve_weights(deltas, motion)
    print(f"\nARKit known weights: weight error {np.abs(fit.weights - weights).max():.4f}, {fit.summary()}")
    assert np.abs(fit.weights - weights).max() <= 0.05
    assert fit.max_error.max() <= 0.5e-3
    assert fit.weights.min() >= 0 and fit.weights.max() <= 1


def test_rig_speech_motion_is_fitted_by_the_arkit_keys_within_a_stated_error(head, keys):
    """Nonlinear rig motion (jaw rotation, contacts that depend on the pose) is not a sum of
    the keys, so the fit is approximate. Bound: RMS over the keys' vertices <= 0.5 mm
    (measured 0.25 mm, for motion of 3.6 mm RMS); worst vertex <= 8 mm (measured 5.5 mm, at
    the lip contacts)."""
    _, deltas = keys
    t = np.arange(300) / 30
    params = np.zeros((300, len(rig.PARAMETERS)), np.float32)
    for i, name in enumerate(("jaw_open", "lip_close", "round", "protrude", "spread", "smile", "lip_press",
                              "lower_lip_tuck")):
        params[:, rig.P[name]] = np.clip(0.8 * np.sin(t * (1.3 + 0.7 * i) + i), 0, 1)
    motion = rig.deform(rig.build_rig(head), params)
    fit = arkit.solve_weights(deltas, motion)
    rms = fit.overall_rms
    print(f"\nARKit on rig speech: {fit.summary()}, motion RMS {fit.motion_rms.mean() * 1e3:.1f} mm")
    assert rms <= 0.5e-3 and fit.max_error.max() <= 8e-3


def test_weights_stay_within_their_bounds(keys):
    names, deltas = keys
    jaw = deltas[names.index("jawOpen")]
    fit = arkit.solve_weights(deltas, np.stack([2.0 * jaw, -jaw, 0 * jaw]))
    assert fit.weights.min() >= 0 and fit.weights.max() <= 1
    assert fit.weights[0, names.index("jawOpen")] == pytest.approx(1.0)
    assert np.abs(fit.weights[2]).max() == 0


def test_the_solve_takes_well_under_a_second_for_300_frames_and_30_keys():
    rng = np.random.default_rng(2)
    x = rng.random((2000, 3))
    centres = rng.random((30, 3))
    deltas = np.exp(-((x[None] - centres[:, None]) ** 2).sum(-1) / 0.05)[..., None] * rng.normal(size=(30, 1, 3)) * 0.01
    weights = np.clip(rng.normal(0.3, 0.4, (300, 30)), 0, 1)
    motion = np.einsum("tk,kvc->tvc", weights, deltas) + rng.normal(0, 1e-4, (300, 2000, 3))
    started = time.perf_counter()
    fit = arkit.solve_weights(deltas, motion)
    seconds = time.perf_counter() - started
    print(f"\nsolve 300 x 30 keys x 2000 vertices: {seconds:.2f} s, {fit.summary()}")
    assert seconds < 1.0
    assert np.abs(fit.weights - weights).max() < 0.05


def test_retarget_and_arkit_modules_import_without_blender_or_torch():
    code = ("import sys; import diffspeaker_blender.core.retarget, diffspeaker_blender.core.arkit, synth.arkit_keys; "
            "print(sorted({'bpy', 'torch', 'scipy'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
