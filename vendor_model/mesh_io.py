"""Reading face meshes and neutral templates (PLY, OBJ, .npy, FLAME-style templates.pkl).

Public API:

* :func:`read_ply` -> ``(vertices float32 [V,3], faces int64 [F,3] or None)``
* :func:`read_obj` -> same
* :func:`load_template` -> ``float32 [V,3]`` from ``.ply`` / ``.obj`` / ``.npy`` / ``.pkl``
* :class:`MeshError` (a ``ValueError``) for unsupported, malformed or wrongly shaped input.
  A missing file raises ``FileNotFoundError``; a ``.pkl`` that would need more than numpy
  arrays to load raises :class:`vendor_model.untrusted.UntrustedFileError`.

Polygons: faces with more than three corners (quads, n-gons) are split into triangles
as a fan around their first corner, ``(v0, v1, v2), (v0, v2, v3), ...``, in both PLY and
OBJ. This is exact for convex (and planar) polygons, which is what face-mesh exporters
write. Faces with fewer than three corners raise :class:`MeshError`.

PLY: ``ascii``, ``binary_little_endian`` and ``binary_big_endian`` 1.0. Vertex
coordinates are the ``x``, ``y``, ``z`` properties (any numeric type); every other
property, element (normals, colours, UVs, edges, ...) and comment is skipped. Faces come
from the ``face`` element's ``vertex_indices`` (or ``vertex_index``) list property.
Type names accept both spellings: char/int8, uchar/uint8, short/int16, ushort/uint16,
int/int32, uint/uint32, float/float32, double/float64.

OBJ: ``v`` lines (extra values such as w or vertex colours are ignored) and ``f`` lines
with ``v``, ``v/vt``, ``v//vn`` or ``v/vt/vn`` corners; negative (relative) indices are
supported; everything else (vt, vn, g, o, s, usemtl, mtllib, l, p, ...) is ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MeshError", "read_ply", "read_obj", "load_template", "TEMPLATE_SUFFIXES"]

TEMPLATE_SUFFIXES = (".ply", ".obj", ".npy", ".pkl")


class MeshError(ValueError):
    """A mesh or template file is unsupported, malformed or has the wrong shape."""


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise MeshError(f"{what} is not a regular file: {path}")


# --------------------------------------------------------------------------------------
# PLY
# --------------------------------------------------------------------------------------

_PLY_TYPES = {
    "char": "i1", "int8": "i1",
    "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4",
    "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4",
    "double": "f8", "float64": "f8",
}
_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}
_FACE_LIST_NAMES = ("vertex_indices", "vertex_index")
_MAX_HEADER_LINES = 10_000


@dataclass
class _PlyProperty:
    name: str
    type: str  # numpy code of the value (or list item) type, e.g. "f4"
    count_type: str | None = None  # numpy code of the list length type, None for scalars


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[_PlyProperty] = field(default_factory=list)


def _ply_type(name: str, path: Path, lineno: int) -> str:
    try:
        return _PLY_TYPES[name]
    except KeyError:
        raise MeshError(
            f"{path}: header line {lineno}: unknown PLY property type {name!r} "
            f"(known: {', '.join(sorted(_PLY_TYPES))})"
        ) from None


def _read_ply_header(fh: Any, path: Path) -> tuple[str, list[_PlyElement]]:
    first = fh.readline(64).rstrip(b"\r\n")
    if first != b"ply":
        raise MeshError(f"{path} is not a PLY file (it does not start with 'ply')")
    fmt: str | None = None
    elements: list[_PlyElement] = []
    for lineno in range(2, _MAX_HEADER_LINES):
        raw = fh.readline(65536)
        if not raw:
            raise MeshError(f"{path}: the PLY header has no 'end_header' line")
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise MeshError(f"{path}: header line {lineno} is not ASCII text") from None
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        key = words[0]
        if key == "end_header":
            break
        if key == "format":
            if len(words) != 3 or words[1] not in _PLY_FORMATS:
                raise MeshError(
                    f"{path}: unsupported PLY format line {line!r} "
                    f"(supported: {', '.join(_PLY_FORMATS)})"
                )
            if words[2] not in ("1.0", "1"):
                raise MeshError(f"{path}: unsupported PLY version {words[2]!r} (only 1.0)")
            fmt = words[1]
        elif key == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise MeshError(f"{path}: header line {lineno}: malformed element line {line!r}")
            elements.append(_PlyElement(words[1], int(words[2])))
        elif key == "property":
            if not elements:
                raise MeshError(f"{path}: header line {lineno}: property before any element")
            if len(words) == 3:
                elements[-1].properties.append(
                    _PlyProperty(words[2], _ply_type(words[1], path, lineno))
                )
            elif len(words) == 5 and words[1] == "list":
                count_type = _ply_type(words[2], path, lineno)
                if count_type[0] == "f":
                    raise MeshError(f"{path}: header line {lineno}: list length type must be an integer")
                elements[-1].properties.append(
                    _PlyProperty(words[4], _ply_type(words[3], path, lineno), count_type)
                )
            else:
                raise MeshError(f"{path}: header line {lineno}: malformed property line {line!r}")
        else:
            raise MeshError(f"{path}: header line {lineno}: unknown PLY header keyword {key!r}")
    else:
        raise MeshError(f"{path}: the PLY header is too long (no 'end_header' line)")
    if fmt is None:
        raise MeshError(f"{path}: the PLY header has no 'format' line")
    return fmt, elements


def _face_list_index(element: _PlyElement, path: Path) -> int:
    lists = [i for i, p in enumerate(element.properties) if p.count_type is not None]
    for name in _FACE_LIST_NAMES:
        for i in lists:
            if element.properties[i].name == name:
                return i
    if len(lists) == 1:
        return lists[0]
    raise MeshError(
        f"{path}: the face element has no 'vertex_indices' list property "
        f"(properties: {', '.join(p.name for p in element.properties)})"
    )


def _read_binary_element(
    data: memoryview, offset: int, element: _PlyElement, endian: str, keep: set[int], path: Path
) -> tuple[int, dict[int, Any]]:
    """Parse one binary element from ``offset``; returns (new offset, {prop index: values}).

    Scalar properties come back as 1-D arrays, list properties as a list of 1-D arrays,
    or as a 2-D array when every row has the same length.
    """
    props = element.properties
    count = element.count

    def too_short() -> MeshError:
        return MeshError(
            f"{path}: the file ends before all {count} '{element.name}' entries were read "
            "(truncated or wrong counts in the header)"
        )

    if all(p.count_type is None for p in props):
        dtype = np.dtype([(f"p{i}", endian + p.type) for i, p in enumerate(props)])
        if offset + count * dtype.itemsize > len(data):
            raise too_short()
        rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return offset + count * dtype.itemsize, {i: rows[f"p{i}"] for i in keep}

    if count == 0:
        return offset, {i: (np.zeros((0, 0)) if props[i].count_type else np.zeros(0)) for i in keep}

    # Fast path: take the list lengths of the first row as the lengths of every row.
    fields = []
    pos = offset
    for i, p in enumerate(props):
        if p.count_type is None:
            fields.append((f"p{i}", endian + p.type))
            pos += np.dtype(p.type).itemsize
        else:
            if pos + np.dtype(p.count_type).itemsize > len(data):
                raise too_short()
            n = int(np.frombuffer(data, dtype=endian + p.count_type, count=1, offset=pos)[0])
            fields.append((f"n{i}", endian + p.count_type))
            fields.append((f"p{i}", endian + p.type, (n,)))
            pos += np.dtype(p.count_type).itemsize + n * np.dtype(p.type).itemsize
    dtype = np.dtype(fields)
    if offset + count * dtype.itemsize <= len(data):
        rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        uniform = all(
            np.all(rows[f"n{i}"] == rows[f"n{i}"][0])
            for i, p in enumerate(props)
            if p.count_type is not None
        )
        if uniform:
            out = {}
            for i in keep:
                values = rows[f"p{i}"]
                if props[i].count_type is not None:
                    values = values.reshape(count, -1)
                out[i] = values
            return offset + count * dtype.itemsize, out

    # General path: rows of different lengths (e.g. triangles mixed with quads).
    out_lists: dict[int, list] = {i: [] for i in keep}
    pos = offset
    for _ in range(count):
        for i, p in enumerate(props):
            if p.count_type is None:
                size = np.dtype(p.type).itemsize
                if pos + size > len(data):
                    raise too_short()
                if i in keep:
                    out_lists[i].append(np.frombuffer(data, endian + p.type, 1, pos)[0])
                pos += size
            else:
                csize = np.dtype(p.count_type).itemsize
                if pos + csize > len(data):
                    raise too_short()
                n = int(np.frombuffer(data, endian + p.count_type, 1, pos)[0])
                pos += csize
                size = n * np.dtype(p.type).itemsize
                if pos + size > len(data):
                    raise too_short()
                if i in keep:
                    out_lists[i].append(np.frombuffer(data, endian + p.type, n, pos))
                pos += size
    out = {}
    for i, values in out_lists.items():
        out[i] = values if props[i].count_type is not None else np.asarray(values)
    return pos, out


def _read_ascii_element(
    tokens: list[bytes], start: int, element: _PlyElement, keep: set[int], path: Path
) -> tuple[int, dict[int, Any]]:
    props = element.properties
    count = element.count

    def number(tok: bytes) -> float:
        try:
            return float(tok)
        except ValueError:
            raise MeshError(
                f"{path}: {tok.decode('ascii', 'replace')!r} in the '{element.name}' data is not a number"
            ) from None

    def too_short() -> MeshError:
        return MeshError(
            f"{path}: the file ends before all {count} '{element.name}' entries were read "
            "(truncated or wrong counts in the header)"
        )

    if all(p.count_type is None for p in props):
        n = count * len(props)
        if start + n > len(tokens):
            raise too_short()
        try:
            table = np.array(tokens[start:start + n], dtype=np.float64).reshape(count, len(props))
        except ValueError:
            for tok in tokens[start:start + n]:
                number(tok)
            raise
        return start + n, {i: table[:, i] for i in keep}

    out: dict[int, list] = {i: [] for i in keep}
    pos = start
    for _ in range(count):
        for i, p in enumerate(props):
            if pos >= len(tokens):
                raise too_short()
            if p.count_type is None:
                if i in keep:
                    out[i].append(number(tokens[pos]))
                pos += 1
            else:
                n = number(tokens[pos])
                if n < 0 or n != int(n):
                    raise MeshError(f"{path}: bad list length {n} in the '{element.name}' data")
                n = int(n)
                if pos + 1 + n > len(tokens):
                    raise too_short()
                if i in keep:
                    out[i].append(np.array([number(t) for t in tokens[pos + 1:pos + 1 + n]]))
                pos += 1 + n
    return pos, {
        i: (values if props[i].count_type is not None else np.asarray(values))
        for i, values in out.items()
    }


def _triangulate(polygons: Any, path: Path) -> np.ndarray:
    """Fan-triangulate a 2-D array [F, n] or a list of 1-D arrays into int64 [T, 3].

    For a 2-D array the triangles come corner-fan by corner-fan ((v0,v1,v2) of every
    face, then (v0,v2,v3) of every face, ...); for a list they stay in face order.
    """
    if isinstance(polygons, np.ndarray) and polygons.ndim == 2:
        groups = [polygons]
    else:
        groups = [np.asarray(p).reshape(1, -1) for p in polygons]
    tris = []
    for group in groups:
        n = group.shape[1]
        if group.shape[0] == 0:
            continue
        if n < 3:
            raise MeshError(f"{path}: a face has {n} corner(s); faces need at least 3")
        if not np.issubdtype(group.dtype, np.integer):
            if not np.all(np.isfinite(group)) or not np.all(group == np.round(group)):
                raise MeshError(f"{path}: face vertex indices must be whole numbers")
        g = group.astype(np.int64)
        for k in range(1, n - 1):
            tris.append(np.stack([g[:, 0], g[:, k], g[:, k + 1]], axis=1))
    if not tris:
        return np.zeros((0, 3), dtype=np.int64)
    return np.ascontiguousarray(np.concatenate(tris))


def _check_faces(faces: np.ndarray, n_vertices: int, path: Path) -> np.ndarray:
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise MeshError(
            f"{path}: face vertex indices must be in 0..{n_vertices - 1}, "
            f"found {int(faces.min())}..{int(faces.max())}"
        )
    return faces


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PLY mesh: ``(vertices float32 [V,3], faces int64 [F,3] or None)``.

    ``faces`` is None when the file has no ``face`` element. Quads and larger polygons
    are fan-triangulated (see the module docstring).
    """
    path = Path(path)
    _require_file(path, "PLY file")
    with open(path, "rb") as fh:
        fmt, elements = _read_ply_header(fh, path)
        body = fh.read()

    names = [e.name for e in elements]
    if "vertex" not in names:
        raise MeshError(f"{path}: the PLY file has no 'vertex' element")

    vertex_el = elements[names.index("vertex")]
    vprops = {p.name: i for i, p in enumerate(vertex_el.properties) if p.count_type is None}
    missing = [axis for axis in "xyz" if axis not in vprops]
    if missing:
        raise MeshError(
            f"{path}: the vertex element has no {'/'.join(missing)} property "
            f"(properties: {', '.join(p.name for p in vertex_el.properties) or 'none'})"
        )

    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    endian = _PLY_FORMATS[fmt]
    tokens = body.split() if endian is None else None
    data = memoryview(body)
    pos = 0
    for element in elements:
        keep: set[int] = set()
        if element is vertex_el:
            keep = {vprops["x"], vprops["y"], vprops["z"]}
        elif element.name == "face" and faces is None:
            face_idx = _face_list_index(element, path)
            keep = {face_idx}
        if endian is None:
            pos, values = _read_ascii_element(tokens, pos, element, keep, path)
        else:
            pos, values = _read_binary_element(data, pos, element, endian, keep, path)
        if element is vertex_el:
            vertices = np.stack(
                [values[vprops[a]].astype(np.float32) for a in "xyz"], axis=1
            ) if element.count else np.zeros((0, 3), dtype=np.float32)
        elif keep:
            faces = _triangulate(values[face_idx], path)

    assert vertices is not None
    if not np.all(np.isfinite(vertices)):
        raise MeshError(f"{path}: some vertex coordinates are not finite numbers")
    if faces is not None:
        faces = _check_faces(faces, len(vertices), path)
    return np.ascontiguousarray(vertices), faces


# --------------------------------------------------------------------------------------
# OBJ
# --------------------------------------------------------------------------------------


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a Wavefront OBJ mesh: ``(vertices float32 [V,3], faces int64 [F,3] or None)``.

    Polygons are fan-triangulated; ``faces`` is None when there are no ``f`` lines.
    """
    path = Path(path)
    _require_file(path, "OBJ file")
    text = path.read_bytes().decode("utf-8", errors="replace")
    vertices: list[tuple[float, float, float]] = []
    triangles: list[tuple[int, int, int]] = []
    saw_face = False
    pending = ""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = pending + raw.split("#", 1)[0]
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = line.split()
        if not words:
            continue
        if words[0] == "v":
            if len(words) < 4:
                raise MeshError(f"{path}: line {lineno}: a 'v' line needs x y z")
            try:
                vertices.append((float(words[1]), float(words[2]), float(words[3])))
            except ValueError:
                raise MeshError(f"{path}: line {lineno}: vertex coordinates must be numbers") from None
        elif words[0] == "f":
            saw_face = True
            corners = []
            for word in words[1:]:
                head = word.split("/", 1)[0]
                try:
                    index = int(head)
                except ValueError:
                    raise MeshError(
                        f"{path}: line {lineno}: bad face corner {word!r} (expected v, v/vt, v//vn or v/vt/vn)"
                    ) from None
                if index == 0:
                    raise MeshError(f"{path}: line {lineno}: OBJ vertex indices start at 1, found 0")
                corners.append(index - 1 if index > 0 else len(vertices) + index)
            if len(corners) < 3:
                raise MeshError(f"{path}: line {lineno}: a face needs at least 3 corners, found {len(corners)}")
            for k in range(1, len(corners) - 1):
                triangles.append((corners[0], corners[k], corners[k + 1]))
    if not vertices:
        raise MeshError(f"{path}: the OBJ file has no 'v' (vertex) lines")
    verts = np.asarray(vertices, dtype=np.float32)
    if not np.all(np.isfinite(verts)):
        raise MeshError(f"{path}: some vertex coordinates are not finite numbers")
    faces = None
    if saw_face:
        faces = _check_faces(np.asarray(triangles, dtype=np.int64).reshape(-1, 3), len(verts), path)
    return verts, faces


# --------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------


def _as_vertices(array: Any, source: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise MeshError(f"{source}: expected a numpy array of vertices, got {type(array).__name__}")
    if array.dtype == bool or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise MeshError(f"{source}: vertex array must hold real numbers, not {array.dtype}")
    if array.ndim == 1 and array.size % 3 == 0 and array.size > 0:
        array = array.reshape(-1, 3)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise MeshError(
            f"{source}: vertex array has shape {tuple(array.shape)}; expected [V, 3] or [V*3]"
        )
    out = np.ascontiguousarray(array, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise MeshError(f"{source}: some vertex coordinates are not finite numbers")
    return out


def _format_subjects(keys: list) -> str:
    names = sorted(str(k) for k in keys)
    if len(names) > 40:
        names = names[:40] + [f"... ({len(keys) - 40} more)"]
    return ", ".join(names)


def load_template(path: str | os.PathLike, subject: str | None = None) -> np.ndarray:
    """Load a neutral face template as ``float32 [V, 3]``.

    * ``.ply`` / ``.obj``: the mesh's vertices (faces are not needed here);
    * ``.npy``: an array of shape ``[V, 3]`` or ``[V*3]`` (loaded with ``allow_pickle=False``);
    * ``.pkl``: a FLAME/VOCASET-style ``templates.pkl`` (dict subject -> array), read with
      :func:`vendor_model.untrusted.load_numpy_pickle`. ``subject`` picks the entry and is
      required when the dict holds more than one; a pickle holding a single array is
      accepted as is. ``subject`` is ignored for the other formats.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TEMPLATE_SUFFIXES:
        raise MeshError(
            f"{path}: unsupported template file type {path.suffix or '(none)'!r}; "
            f"use one of {', '.join(TEMPLATE_SUFFIXES)}"
        )
    _require_file(path, "Template file")
    if suffix == ".ply":
        return _as_vertices(read_ply(path)[0], str(path))
    if suffix == ".obj":
        return _as_vertices(read_obj(path)[0], str(path))
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise MeshError(f"{path}: not a plain numeric .npy array ({exc})") from None
        except (OSError, EOFError) as exc:
            raise MeshError(f"{path}: could not be read as a .npy file ({exc})") from None
        if not isinstance(array, np.ndarray):
            raise MeshError(f"{path}: expected a single .npy array (is it an .npz archive?)")
        return _as_vertices(array, str(path))

    from .untrusted import load_numpy_pickle

    data = load_numpy_pickle(path)
    if isinstance(data, np.ndarray):
        return _as_vertices(data, str(path))
    if not isinstance(data, dict):
        raise MeshError(
            f"{path}: expected a dict of subject -> vertex array, got {type(data).__name__}"
        )
    if not data:
        raise MeshError(f"{path}: the templates dict is empty")
    if subject is None:
        if len(data) != 1:
            raise MeshError(
                f"{path} holds templates for {len(data)} subjects; choose one with subject=... "
                f"(available: {_format_subjects(list(data))})"
            )
        key = next(iter(data))
    else:
        key = subject
        if key not in data:
            matches = [k for k in data if str(k) == str(subject)]
            if not matches:
                raise MeshError(
                    f"{path}: no template for subject {subject!r} "
                    f"(available: {_format_subjects(list(data))})"
                )
            key = matches[0]
    return _as_vertices(data[key], f"{path} [{key}]")
