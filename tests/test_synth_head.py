"""The synthetic head (`synth.head`): a deterministic mannequin in Blender's convention whose
mouth is a slit that opens onto a dark pocket, built from closed, outward-facing parts."""
from __future__ import annotations

import numpy as np
import pytest

from synth.head import MATERIALS, MOUTH_Z, build_head

REGIONS = ("lips", "upper_lip", "lower_lip", "jaw", "upper_face", "eyes", "nose", "mouth_interior", "teeth",
           "tongue", "neck", "skull")


@pytest.fixture(scope="module")
def head():
    return build_head()


def directed_edges(head) -> np.ndarray:
    """(E, 2) every face's edges in its winding order."""
    return np.concatenate([np.stack([f, np.roll(f, -1, axis=1)], -1).reshape(-1, 2)
                           for f in (head.quads, head.triangles)])


def signed_volume(head, polygon_mask) -> float:
    tri = head.triangulated()
    keep = np.concatenate([polygon_mask[:len(head.quads)]] * 2 + [polygon_mask[len(head.quads):]])
    a, b, c = (head.vertices.astype(np.float64)[tri[keep, k]] for k in range(3))
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6)


def test_vertex_count_and_array_types(head):
    assert 3000 <= len(head.vertices) <= 10000
    assert head.vertices.dtype == np.float32 and head.vertices.shape[1] == 3
    assert head.quads.dtype == np.int32 and head.quads.shape[1] == 4
    assert head.triangles.dtype == np.int32 and head.triangles.shape[1] == 3
    assert len(head.quads) > 10 * len(head.triangles), "mostly quads"
    assert len(head.polygons()) == len(head.polygon_material()) == len(head.quads) + len(head.triangles)


def test_blender_convention_and_human_size(head):
    skin = head.vertices[head.regions["skin"]]
    low, high = skin.min(0), skin.max(0)
    assert 0.14 < high[0] - low[0] < 0.18, "about 16 cm wide"
    assert 0.22 < high[2] - low[2] < 0.26, "about 24 cm tall with the neck"
    assert np.all(np.abs((low + high) / 2) < 0.03), "centred near the origin"
    nose_tip = skin[np.argmin(skin[:, 1])]  # the front-most point, looking toward -Y
    assert abs(nose_tip[0]) < 0.003 and MOUTH_Z < nose_tip[2] < 0.0
    crown = skin[np.argmax(skin[:, 2])]
    assert abs(crown[0]) < 1e-3 and crown[2] > 0.1, "Z up: the crown is on top"


def test_mirror_symmetric(head):
    v = np.round(head.vertices.astype(np.float64), 6)
    mirrored = v * [-1, 1, 1]
    assert np.array_equal(v[np.lexsort(v.T)], mirrored[np.lexsort(mirrored.T)])


def test_faces_are_valid_and_not_degenerate(head):
    for faces in (head.quads, head.triangles):
        assert faces.min() >= 0 and faces.max() < len(head.vertices)
        assert all(len(set(f)) == len(f) for f in faces.tolist()), "no repeated corner"
    tri = head.triangulated()
    v = head.vertices.astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(v[tri[:, 1]] - v[tri[:, 0]], v[tri[:, 2]] - v[tri[:, 0]]), axis=1)
    assert area.min() > 1e-8, "every triangle over 0.01 mm^2"
    assert np.unique(np.concatenate([head.quads.ravel(), head.triangles.ravel()])).size == len(v), "no loose vertex"


def test_closed_and_consistently_oriented(head):
    """Each edge is used by exactly two faces (so at most two), once in each direction."""
    edges = directed_edges(head)
    keys = edges[:, 0].astype(np.int64) * len(head.vertices) + edges[:, 1]
    reverse = edges[:, 1].astype(np.int64) * len(head.vertices) + edges[:, 0]
    assert np.unique(keys).size == len(keys), "no directed edge twice (orientation flip or >2 faces)"
    assert np.isin(reverse, keys).all(), "every edge has a partner face running the other way"


def test_normals_face_outward_part_by_part(head):
    material = head.polygon_material()
    group = {name: np.isin(material, [MATERIALS.index(m) for m in members]) for name, members in {
        "skin and mouth": ("skin", "lips", "mouth"), "teeth": ("teeth",), "tongue": ("tongue",),
        "eyes": ("eye", "iris")}.items()}
    volumes = {name: signed_volume(head, mask) for name, mask in group.items()}
    assert 0.003 < volumes["skin and mouth"] < 0.006, volumes  # litres / 1000: a head and neck
    eyeballs = 2 * 4 / 3 * np.pi * 0.0115 ** 3
    assert volumes["eyes"] == pytest.approx(eyeballs, rel=0.05)
    assert volumes["teeth"] > 0 and volumes["tongue"] > 0


def test_every_material_is_used(head):
    used = set(head.polygon_material().tolist())
    assert used == set(range(len(MATERIALS)))


def test_regions_exist_and_index_vertices(head):
    for name in REGIONS:
        index = head.regions[name]
        assert index.size > 0, name
        assert index.dtype == np.int32 and np.all(np.diff(index) > 0) and index[-1] < len(head.vertices), name


def test_still_regions_and_moving_regions_do_not_overlap(head):
    r = {name: set(index.tolist()) for name, index in head.regions.items()}
    for still in ("upper_face", "eyes", "skull", "neck", "upper_teeth"):
        assert not r[still] & r["jaw"], still
    assert not r["upper_lip"] & r["lower_lip"]
    assert r["lower_lip"] <= r["jaw"] and r["lower_teeth"] <= r["jaw"] and r["tongue"] <= r["jaw"]
    assert r["upper_lip"] | r["lower_lip"] <= r["lips"]
    assert r["teeth"] == r["upper_teeth"] | r["lower_teeth"]


def test_lips_surround_the_mouth(head):
    v = head.vertices
    lips = v[head.regions["lips"]]
    assert np.abs(lips[:, 0]).max() < 0.032 and np.abs(lips[:, 2] - MOUTH_Z).max() < 0.016
    assert v[head.regions["upper_lip"], 2].mean() > MOUTH_Z > v[head.regions["lower_lip"], 2].mean()
    corners = v[head.seam[0, [0, -1]]]
    assert 0.04 < corners[1, 0] - corners[0, 0] < 0.055, "mouth about 4.5 cm wide"


def test_mouth_is_a_closed_slit_onto_a_pocket(head):
    upper, lower = head.seam
    assert upper[0] == lower[0] and upper[-1] == lower[-1], "corners are shared"
    assert not set(upper[1:-1].tolist()) & set(lower[1:-1].tolist()), "the slit's edges are separate vertices"
    np.testing.assert_array_equal(head.vertices[upper], head.vertices[lower])  # at rest the lips meet
    pocket = head.vertices[head.regions["mouth_interior"]]
    assert pocket[:, 1].min() > head.vertices[upper, 1].min(), "the pocket lies behind the lips"
    assert np.abs(pocket[:, 0]).max() < 0.035 and pocket[:, 1].max() < -0.02, "and inside the head"
    for part in ("teeth", "tongue"):
        assert np.all(head.vertices[head.regions[part], 1] > head.vertices[upper, 1].min()), part


def test_deterministic():
    again = build_head.__wrapped__()  # bypass the cache
    first = build_head()
    for name in ("vertices", "quads", "triangles", "quad_material", "triangle_material", "seam"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name), err_msg=name)
    assert first.regions.keys() == again.regions.keys()
    for name in first.regions:
        np.testing.assert_array_equal(first.regions[name], again.regions[name], err_msg=name)
