"""Specification of vendor_model.mesh_io: PLY / OBJ meshes and neutral face templates."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest

from vendor_model.mesh_io import MeshError, load_template, read_obj, read_ply
from vendor_model.untrusted import UntrustedFileError

TOPOLOGIES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "topologies"

# A small mesh: a square pyramid (5 vertices, 4 triangles and the quad base).
VERTS = np.array(
    [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.75]],
    dtype=np.float32,
)
TRIS = [[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]
QUAD = [0, 3, 2, 1]
QUAD_AS_TRIS = [[0, 3, 2], [0, 2, 1]]  # fan around the first corner

NUMPY_CODES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


# --------------------------------------------------------------------------------------
# Writing small PLY files by hand
# --------------------------------------------------------------------------------------


def ply_header(fmt, n_verts, n_faces, vertex_props, count_type="uchar", index_type="int",
               extra_elements="", comment=True, face_prop="vertex_indices"):
    lines = ["ply", f"format {fmt} 1.0"]
    if comment:
        lines.append("comment made by test_mesh_io")
    lines += extra_elements.splitlines()
    lines.append(f"element vertex {n_verts}")
    lines += [f"property {t} {name}" for t, name in vertex_props]
    if n_faces is not None:
        lines.append(f"element face {n_faces}")
        lines.append(f"property list {count_type} {index_type} {face_prop}")
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def binary_rows(endian, vertex_props, verts, faces, count_type, index_type):
    """Bytes of the vertex rows (extra props filled with a pattern) then the face rows."""
    out = bytearray()
    for vi, v in enumerate(verts):
        for k, (t, name) in enumerate(vertex_props):
            value = {"x": v[0], "y": v[1], "z": v[2]}.get(name, (vi + k) % 100)
            out += np.array([value], dtype=endian + NUMPY_CODES[t]).tobytes()
    for face in faces or []:
        out += np.array([len(face)], dtype=endian + NUMPY_CODES[count_type]).tobytes()
        out += np.array(face, dtype=endian + NUMPY_CODES[index_type]).tobytes()
    return bytes(out)


def write_binary_ply(path, verts, faces, *, endian="<", vertex_props=None, count_type="uchar",
                     index_type="int", extra_elements="", extra_data=b""):
    vertex_props = vertex_props or [("float", "x"), ("float", "y"), ("float", "z")]
    fmt = "binary_little_endian" if endian == "<" else "binary_big_endian"
    header = ply_header(fmt, len(verts), None if faces is None else len(faces), vertex_props,
                        count_type, index_type, extra_elements)
    path.write_bytes(header + extra_data + binary_rows(endian, vertex_props, verts, faces,
                                                       count_type, index_type))
    return path


# --------------------------------------------------------------------------------------
# PLY: ascii
# --------------------------------------------------------------------------------------


def test_ascii_ply_with_extra_vertex_properties_and_elements(tmp_path):
    header = ply_header(
        "ascii", 5, 5,
        [("float", "x"), ("float", "y"), ("float", "z"), ("float", "nx"), ("float", "ny"),
         ("float", "nz"), ("uchar", "red"), ("uchar", "green"), ("uchar", "blue")],
        extra_elements="element material 1\nproperty list uchar float values\nproperty int id",
    )
    body = "3 0.1 0.2 0.3 9\n"  # the material row: a list of 3 floats and an int
    for v in VERTS:
        body += f"{v[0]} {v[1]} {v[2]} 0 0 1 255 128 0\n"
    for face in TRIS + [QUAD]:
        body += f"{len(face)} {' '.join(map(str, face))}\n"
    path = tmp_path / "pyramid.ply"
    path.write_bytes(header + body.encode("ascii"))

    verts, faces = read_ply(path)

    assert verts.dtype == np.float32 and verts.shape == (5, 3)
    np.testing.assert_array_equal(verts, VERTS)
    assert faces.dtype == np.int64
    assert faces.tolist() == TRIS + QUAD_AS_TRIS


def test_ascii_ply_with_crlf_lines_and_no_faces(tmp_path):
    text = "ply\r\nformat ascii 1.0\r\nelement vertex 2\r\nproperty double x\r\nproperty double y\r\n" \
           "property double z\r\nend_header\r\n1 2 3\r\n-4.5 5e-1 6\r\n"
    path = tmp_path / "points.ply"
    path.write_bytes(text.encode("ascii"))
    verts, faces = read_ply(path)
    assert faces is None
    np.testing.assert_allclose(verts, [[1, 2, 3], [-4.5, 0.5, 6]])


def test_ascii_ply_face_property_named_vertex_index(tmp_path):
    path = tmp_path / "tri.ply"
    header = ply_header("ascii", 3, 1, [("float", "x"), ("float", "y"), ("float", "z")],
                        face_prop="vertex_index")
    path.write_bytes(header + b"0 0 0\n1 0 0\n0 1 0\n3 2 1 0\n")
    assert read_ply(path)[1].tolist() == [[2, 1, 0]]


# --------------------------------------------------------------------------------------
# PLY: binary
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
@pytest.mark.parametrize(
    "coord_type, count_type, index_type",
    [
        ("float", "uchar", "int"),        # FLAME_sample.ply, BIWI (FaceFormer)
        ("double", "uint8", "uint16"),    # BIWI (CodeTalker / DiffSpeaker, meshio)
        ("float32", "uint8", "uint32"),
        ("float64", "ushort", "int32"),
        ("double", "char", "short"),
        ("float", "int8", "ushort"),
        ("float", "uint", "uint"),
        ("double", "int16", "int16"),
    ],
)
def test_binary_ply_round_trip(tmp_path, endian, coord_type, count_type, index_type):
    props = [(coord_type, "x"), (coord_type, "y"), (coord_type, "z")]
    path = write_binary_ply(tmp_path / "tris.ply", VERTS, TRIS, endian=endian, vertex_props=props,
                            count_type=count_type, index_type=index_type)

    verts, faces = read_ply(path)

    np.testing.assert_array_equal(verts, VERTS)
    assert verts.dtype == np.float32 and verts.flags.c_contiguous
    assert faces.dtype == np.int64 and faces.tolist() == TRIS


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
def test_binary_ply_skips_other_vertex_properties_of_every_size(tmp_path, endian):
    props = [("uchar", "flags"), ("double", "x"), ("short", "s"), ("float", "y"),
             ("int8", "c"), ("uint", "u"), ("float64", "z"), ("ushort", "w"), ("float32", "nx")]
    path = write_binary_ply(tmp_path / "props.ply", VERTS, TRIS, endian=endian, vertex_props=props)
    verts, faces = read_ply(path)
    np.testing.assert_array_equal(verts, VERTS)
    assert faces.tolist() == TRIS


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little", "big"])
def test_binary_ply_skips_elements_with_lists_before_the_vertices(tmp_path, endian):
    extra = "element material 2\nproperty list uchar float values\nproperty short id"
    extra_data = b""
    for n in (2, 4):  # rows of different lengths
        extra_data += np.array([n], endian + "u1").tobytes()
        extra_data += np.arange(n, dtype=endian + "f4").tobytes()
        extra_data += np.array([n], endian + "i2").tobytes()
    path = write_binary_ply(tmp_path / "m.ply", VERTS, TRIS, endian=endian,
                            extra_elements=extra, extra_data=extra_data)
    verts, faces = read_ply(path)
    np.testing.assert_array_equal(verts, VERTS)
    assert faces.tolist() == TRIS


def test_binary_ply_all_quads_are_split_into_triangles(tmp_path):
    path = write_binary_ply(tmp_path / "quad.ply", VERTS[:4], [QUAD, [1, 2, 3, 0]])
    verts, faces = read_ply(path)
    assert sorted(faces.tolist()) == sorted(QUAD_AS_TRIS + [[1, 2, 3], [1, 3, 0]])


def test_binary_ply_mixed_triangles_and_quads_keep_face_order(tmp_path):
    path = write_binary_ply(tmp_path / "mixed.ply", VERTS, [TRIS[0], QUAD, TRIS[1]],
                            count_type="uint8", index_type="uint16")
    _, faces = read_ply(path)
    assert faces.tolist() == [TRIS[0]] + QUAD_AS_TRIS + [TRIS[1]]


def test_binary_ply_pentagon_fan(tmp_path):
    verts = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    path = write_binary_ply(tmp_path / "penta.ply", verts, [[0, 1, 2, 3, 4]])
    assert read_ply(path)[1].tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


def test_binary_ply_with_zero_faces(tmp_path):
    path = write_binary_ply(tmp_path / "empty_faces.ply", VERTS, [])
    verts, faces = read_ply(path)
    assert faces.shape == (0, 3) and faces.dtype == np.int64


# --------------------------------------------------------------------------------------
# PLY: bad input
# --------------------------------------------------------------------------------------


def _bad_ply(tmp_path, data: bytes) -> Path:
    path = tmp_path / "bad.ply"
    path.write_bytes(data)
    return path


XYZ = [("float", "x"), ("float", "y"), ("float", "z")]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"solid cube\nfacet normal 0 0 1\n", "not a PLY file"),
        (b"", "not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "end_header"),
        (b"ply\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\nend_header\n",
         "no 'format' line"),
        (b"ply\nformat binary_middle_endian 1.0\nend_header\n", "unsupported PLY format"),
        (b"ply\nformat ascii 2.0\nend_header\n", "version"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n",
         "unknown PLY property type 'float128'"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty list float int x\nend_header\n",
         "list length type"),
        (b"ply\nformat ascii 1.0\nproperty float x\nend_header\n", "property before any element"),
        (b"ply\nformat ascii 1.0\nelement vertex many\nend_header\n", "malformed element"),
        (b"ply\nformat ascii 1.0\nbogus line\nend_header\n", "unknown PLY header keyword"),
        (b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n",
         "no 'vertex' element"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n0 0\n",
         "no z property"),
        (ply_header("ascii", 2, 0, XYZ) + b"0 0 0\n1 1\n", "ends before all 2 'vertex'"),
        (ply_header("ascii", 1, 0, XYZ) + b"0 0 zero\n", "'zero' in the 'vertex' data is not a number"),
        (ply_header("ascii", 3, 1, XYZ) + b"0 0 0\n1 0 0\n0 1 0\n3 0 1\n", "ends before all 1 'face'"),
        (ply_header("ascii", 3, 1, XYZ) + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n", "must be in 0..2"),
        (ply_header("ascii", 3, 1, XYZ) + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 -1\n", "must be in 0..2"),
        (ply_header("ascii", 3, 1, XYZ) + b"0 0 0\n1 0 0\n0 1 0\n2 0 1\n", "at least 3"),
        (ply_header("ascii", 3, 1, XYZ) + b"0 0 0\n1 0 0\n0 1 0\n3 0 1 1.5\n", "whole numbers"),
        (ply_header("ascii", 1, None, XYZ) + b"0 nan 0\n", "not finite"),
        (ply_header("binary_little_endian", 3, 0, XYZ) + b"\x00" * 35, "ends before all 3 'vertex'"),
        (ply_header("binary_little_endian", 3, 1, XYZ) + b"\x00" * 36 + b"\x03" + b"\x00" * 11,
         "ends before all 1 'face'"),
    ],
)
def test_bad_ply_files_raise_mesh_error(tmp_path, data, message):
    with pytest.raises(MeshError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_ply(_bad_ply(tmp_path, data))


def test_binary_ply_with_out_of_range_index(tmp_path):
    path = write_binary_ply(tmp_path / "oob.ply", VERTS, [[0, 1, 5]], index_type="uint16")
    with pytest.raises(MeshError, match=r"0\.\.4, found 0\.\.5"):
        read_ply(path)


def test_missing_ply_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_ply(tmp_path / "missing.ply")


# --------------------------------------------------------------------------------------
# OBJ
# --------------------------------------------------------------------------------------

OBJ_TEXT = """\
# pyramid with texture coordinates and normals
mtllib pyramid.mtl
o pyramid
v 0 0 0
v 1 0 0
v 1 1 0 1.0
v 0 1 0 0.5 0.5 0.5
v 0.5 0.5 0.75
vt 0 0
vt 1 0
vt 1 1
vn 0 0 1
g sides
usemtl skin
s 1
f 1/1/1 2/2/1 5/3/1
f 2//1 3//1 5//1
f 3/1 4/2 5/3
f -2 -5 -1   # relative indices: 4 1 5
g base
f 1/1/1 4/2/1 3/3/1 2/1/1
l 1 2
"""


def test_obj_with_v_vt_vn_faces_and_a_quad(tmp_path):
    path = tmp_path / "pyramid.obj"
    path.write_text(OBJ_TEXT)

    verts, faces = read_obj(path)

    np.testing.assert_array_equal(verts, VERTS)
    assert verts.dtype == np.float32
    assert faces.dtype == np.int64
    assert faces.tolist() == TRIS + QUAD_AS_TRIS


def test_obj_line_continuation_and_no_faces(tmp_path):
    path = tmp_path / "points.obj"
    path.write_text("v 1 2 \\\n 3\nv 4 5 6\n")
    verts, faces = read_obj(path)
    assert faces is None
    np.testing.assert_array_equal(verts, [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no 'v'"),
        ("vt 0 0\nf 1 2 3\n", "no 'v'"),
        ("v 0 0\n", "line 1: a 'v' line needs x y z"),
        ("v 0 0 zero\n", "line 1: vertex coordinates must be numbers"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "start at 1"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", r"0\.\.2, found 0\.\.3"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "line 4: a face needs at least 3 corners"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 a/2 3\n", "bad face corner 'a/2'"),
        ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", "found -1"),
        ("v 0 inf 0\n", "not finite"),
    ],
)
def test_bad_obj_files_raise_mesh_error(tmp_path, text, message):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(MeshError, match=message):
        read_obj(path)


# --------------------------------------------------------------------------------------
# load_template
# --------------------------------------------------------------------------------------


def test_template_from_ply_and_obj(tmp_path):
    ply = write_binary_ply(tmp_path / "t.ply", VERTS, TRIS)
    obj = tmp_path / "t.OBJ"  # suffixes are case-insensitive
    obj.write_text(OBJ_TEXT)
    for path in (ply, obj):
        template = load_template(path)
        assert template.dtype == np.float32 and template.shape == (5, 3)
        np.testing.assert_array_equal(template, VERTS)


@pytest.mark.parametrize("shape", [(5, 3), (15,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_template_from_npy(tmp_path, shape, dtype):
    path = tmp_path / "template.npy"
    np.save(path, VERTS.astype(dtype).reshape(shape))
    template = load_template(path)
    assert template.dtype == np.float32 and template.shape == (5, 3)
    np.testing.assert_array_equal(template, VERTS.astype(dtype).astype(np.float32))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((5, 4), np.float32), r"shape \(5, 4\); expected \[V, 3\] or \[V\*3\]"),
        (np.zeros(7, np.float32), r"shape \(7,\)"),
        (np.zeros((1, 5, 3), np.float32), r"shape \(1, 5, 3\)"),
        (np.zeros((0, 3), np.float32), r"shape \(0, 3\)"),
        (np.array([[1, np.nan, 0]]), "not finite"),
        (np.zeros((5, 3), bool), "real numbers"),
        (np.zeros((5, 3), complex), "real numbers"),
        (np.array(["a", "b", "c"]), "real numbers"),
    ],
)
def test_npy_template_with_wrong_content(tmp_path, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(MeshError, match=message):
        load_template(path)


def test_npy_template_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "object.npy"
    payload = np.empty(1, dtype=object)
    payload[0] = _RunsShell(marker)
    np.save(path, payload, allow_pickle=True)
    with pytest.raises(MeshError, match="not a plain numeric .npy array"):
        load_template(path)
    assert not marker.exists()


def test_npy_template_that_is_not_npy(tmp_path):
    path = tmp_path / "text.npy"
    path.write_text("0 0 0\n")
    with pytest.raises(MeshError, match=".npy"):
        load_template(path)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _templates():
    return {
        "FaceTalk_170725_00137_TA": VERTS,
        "FaceTalk_170728_03272_TA": (VERTS * 2).astype(np.float64).reshape(-1),
    }


@pytest.mark.parametrize("protocol", [0, 2])
def test_template_from_templates_pkl(tmp_path, protocol):
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps(_templates(), protocol=protocol))

    a = load_template(path, subject="FaceTalk_170725_00137_TA")
    b = load_template(path, subject="FaceTalk_170728_03272_TA")

    np.testing.assert_array_equal(a, VERTS)
    np.testing.assert_array_equal(b, VERTS * 2)
    assert a.dtype == b.dtype == np.float32 and b.shape == (5, 3)


def test_templates_pkl_needs_a_subject_when_it_has_several(tmp_path):
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps(_templates(), protocol=2))
    with pytest.raises(MeshError, match="2 subjects.*subject=.*FaceTalk_170725_00137_TA, FaceTalk_170728_03272_TA"):
        load_template(path)
    with pytest.raises(MeshError, match="no template for subject 'M3'.*available: FaceTalk_170725_00137_TA"):
        load_template(path, subject="M3")


def test_templates_pkl_with_one_subject_or_a_bare_array(tmp_path):
    one = tmp_path / "one.pkl"
    one.write_bytes(pickle.dumps({"F1": VERTS}, protocol=2))
    np.testing.assert_array_equal(load_template(one), VERTS)
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps(VERTS.reshape(-1), protocol=2))
    np.testing.assert_array_equal(load_template(bare), VERTS)


@pytest.mark.parametrize(
    "value, message",
    [({}, "empty"), ([VERTS], "expected a dict"), ({"F1": np.zeros((5, 2))}, r"\[F1\].*shape \(5, 2\)")],
)
def test_templates_pkl_with_wrong_content(tmp_path, value, message):
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps(value, protocol=2))
    with pytest.raises(MeshError, match=message):
        load_template(path)


def test_templates_pkl_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "templates.pkl"
    path.write_bytes(pickle.dumps({"F1": VERTS, "evil": _RunsShell(marker)}, protocol=0))
    with pytest.raises(UntrustedFileError, match="could run code"):
        load_template(path, subject="F1")
    assert not marker.exists()


def test_template_suffix_and_missing_file(tmp_path):
    stl = tmp_path / "face.stl"
    stl.write_bytes(b"solid x\n")
    with pytest.raises(MeshError, match=r"unsupported template file type '\.stl'.*\.ply, \.obj, \.npy, \.pkl"):
        load_template(stl)
    with pytest.raises(MeshError, match="unsupported template file type"):
        load_template(tmp_path / "noext")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_template(tmp_path / "missing.ply")
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    with pytest.raises(MeshError, match="not a regular file"):
        load_template(folder)


def test_mesh_error_is_a_value_error():
    assert issubclass(MeshError, ValueError)


# --------------------------------------------------------------------------------------
# The research-only topologies (read in place, never copied)
# --------------------------------------------------------------------------------------


def _fixture(name: str) -> Path:
    path = TOPOLOGIES / name
    if not path.is_file():
        pytest.skip(f"research-only fixture not available: {path}")
    return path


def test_flame_sample_ply():
    verts, faces = read_ply(_fixture("FLAME_sample.ply"))
    assert verts.shape == (5023, 3) and faces.shape == (9976, 3)
    assert faces.min() == 0 and faces.max() == 5022
    assert len(np.unique(faces)) == 5023  # every vertex is used
    np.testing.assert_allclose(verts.min(axis=0), [-0.1015, -0.1776, -0.1582], atol=1e-4)
    np.testing.assert_allclose(verts.max(axis=0), [0.1010, 0.1355, 0.0754], atol=1e-4)
    assert load_template(_fixture("FLAME_sample.ply")).shape == (5023, 3)


@pytest.mark.parametrize("name", ["BIWI_faceformer.ply", "BIWI_codetalker_diffspeaker.ply"])
def test_biwi_ply_variants(name):
    verts, faces = read_ply(_fixture(name))
    assert verts.shape == (23370, 3) and verts.dtype == np.float32
    assert faces.shape == (46068, 3) and faces.max() == 23369
    assert len(np.unique(faces)) == 23370


def test_biwi_variants_share_faces_but_not_vertices():
    v1, f1 = read_ply(_fixture("BIWI_faceformer.ply"))
    v2, f2 = read_ply(_fixture("BIWI_codetalker_diffspeaker.ply"))
    np.testing.assert_array_equal(f1, f2)
    assert abs(float(np.abs(v1 - v2).max()) - 0.0411) < 1e-3
