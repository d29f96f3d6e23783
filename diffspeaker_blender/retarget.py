"""Retargeting in Blender: a guide (the model's template) fitted onto any character, a
binding stored with the character, and the generated motion moved across when baking.

    Add Guide   the template head as a wireframe "DS_guide_<character>", parented to the
                character and placed on its head by `core.retarget.rough_fit`; the
                artist moves, rotates, scales (or edits) it until it sits on the face.
    Bind        ties every character vertex to the guide's surface. The binding is kept
                on the character's mesh as point attributes named "ds_bind_*" and
                "ds_region_*" (they save with the .blend and follow undo), plus the
                guide -> character transform at bind time in `Object.diffspeaker_binding`.
    Generate    on a bound character runs the model on the template and bakes
                `transfer(...)`'d motion onto the character (see operators.prepare /
                bake_result): the usual shape keys, or, with "Drive ARKit Keys" on, keyframes
                on the character's own ARKit keys (`arkit_bake`).

The guide is never needed again after Bind: deleting it keeps the binding. The panel
("Your Character") is in panels.py.
"""
from __future__ import annotations

from types import MappingProxyType

import bpy
import numpy as np
from bpy.props import (
    BoolProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)
from mathutils import Matrix

from . import bake
from .core import arkit as arkit_math
from .core import retarget as retarget_math
from .polls import poll_reason
from .vendor import bundled_module

GUIDE_PREFIX = "DS_guide_"
# Guide regions written onto the guide mesh (what `core.retarget.bind` reads).
GUIDE_REGIONS = tuple(dict.fromkeys(
    retarget_math.STATIC_REGIONS + (retarget_math.UPPER_LIP, retarget_math.LOWER_LIP)
    + tuple(name for names in retarget_math.TARGET_REGIONS.values() for name in names)))
REGION_ATTR = "ds_region_{}"
# Binding attributes on the character's mesh: name -> (Blender type, foreach key, width).
BIND_ATTRS = {
    "ds_bind_triangle": ("INT", "value", 1),
    "ds_bind_corner0": ("INT", "value", 1),
    "ds_bind_corner1": ("INT", "value", 1),
    "ds_bind_corner2": ("INT", "value", 1),
    "ds_bind_barycentric": ("FLOAT_VECTOR", "vector", 3),
    "ds_bind_corner_weights": ("FLOAT_VECTOR", "vector", 3),
    "ds_bind_distance": ("FLOAT", "value", 1),   # -1 for a vertex with no guide surface in reach
    "ds_bind_normal_offset": ("FLOAT", "value", 1),
    "ds_bind_weight": ("FLOAT", "value", 1),
    "ds_bind_side": ("INT8", "value", 1),
}
MOVED_TOLERANCE = 1e-5  # relative change of the guide -> character matrix that counts as moved


class DIFFSPEAKER_PG_retarget_settings(bpy.types.PropertyGroup):
    use_arkit: BoolProperty(
        name="Drive ARKit Keys", default=False,
        description="On a mesh with ARKit-named shape keys (jawOpen, mouthClose, ...), keyframe those keys "
                    "instead of adding new ones. Their shapes and your other animation are left as they are",
    )


class DIFFSPEAKER_PG_binding(bpy.types.PropertyGroup):
    """On a character: its guide and the binding's bookkeeping. On a guide: its character."""

    guide: PointerProperty(type=bpy.types.Object, name="Guide")
    character: PointerProperty(type=bpy.types.Object, name="Character")
    bound: BoolProperty(default=False)
    target_vertices: IntProperty(default=0, description="The character's vertex count when it was bound")
    guide_vertices: IntProperty(default=0, description="The guide's (the model's) vertex count")
    guide_matrix: FloatVectorProperty(size=16, default=tuple(np.eye(4).ravel()),
                                      description="Guide -> character transform at bind time, row by row")
    inner: FloatProperty(default=retarget_math.Falloff().inner)
    outer: FloatProperty(default=retarget_math.Falloff().outer)
    summary: StringProperty(default="")


# ----------------------------------------------------------------------- helpers


def character_of(obj):
    """The character an object stands for: itself, or the character of a guide."""
    if obj is None:
        return None
    owner = obj.diffspeaker_binding.character
    return owner if owner is not None else obj


def guide_of(character):
    guide = character.diffspeaker_binding.guide if character is not None else None
    return guide if guide is not None and guide.name in bpy.data.objects else None


def _basis_co(obj) -> np.ndarray:
    """(V, 3) rest positions: the Basis shape key's when there is one (the mesh's otherwise)."""
    mesh = obj.data
    key = mesh.shape_keys
    if key is not None and key.reference_key is not None:
        return bake.shape_key_co(key.reference_key).astype(np.float64)
    co = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3).astype(np.float64)


def _normals(mesh) -> np.ndarray:
    normals = np.empty(3 * len(mesh.vertices), np.float32)
    mesh.vertices.foreach_get("normal", normals)
    return normals.reshape(-1, 3).astype(np.float64)


def _triangles(mesh) -> np.ndarray:
    mesh.calc_loop_triangles()
    tris = np.empty(3 * len(mesh.loop_triangles), np.int32)
    mesh.loop_triangles.foreach_get("vertices", tris)
    return tris.reshape(-1, 3)


def _matrix(m) -> np.ndarray:
    return np.array([list(row) for row in m], np.float64)


def relative_matrix(character, guide) -> np.ndarray:
    """(4, 4) guide space -> character space, from their current world transforms."""
    return np.linalg.inv(_matrix(character.matrix_world)) @ _matrix(guide.matrix_world)


def _write_attr(mesh, name: str, kind: str, key: str, values: np.ndarray) -> None:
    attr = mesh.attributes.get(name)
    if attr is not None and (attr.data_type != kind or attr.domain != "POINT"):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        mesh.attributes.new(name, kind, "POINT")
    # Fetched again by name: adding an attribute can move the others in memory.
    mesh.attributes[name].data.foreach_set(key, np.ascontiguousarray(values).ravel())


def _read_attr(mesh, name: str, kind: str, key: str, width: int) -> np.ndarray | None:
    attr = mesh.attributes.get(name)
    if attr is None or attr.data_type != kind or attr.domain != "POINT":
        return None
    dtype = {"INT": np.int32, "INT8": np.int8, "BOOLEAN": bool}.get(kind, np.float32)
    out = np.empty(len(mesh.vertices) * width, dtype)
    attr.data.foreach_get(key, out)
    return out.reshape(-1, width) if width > 1 else out


def _guide_regions(mesh) -> dict[str, np.ndarray]:
    regions = {}
    for name in GUIDE_REGIONS:
        mask = _read_attr(mesh, REGION_ATTR.format(name), "BOOLEAN", "value", 1)
        if mask is not None:
            regions[name] = mask
    return regions


# ---------------------------------------------------------------------- add guide


def add_guide(context, character) -> bpy.types.Object:
    """The template head as a wireframe guide, parented to `character` and placed on its head."""
    head_module = bundled_module("synth", "head")
    head = head_module.build_head()
    name = GUIDE_PREFIX + character.name
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(head.vertices.tolist(), [], head.polygons())
    mesh.update()
    for region in GUIDE_REGIONS:
        if region in head.regions:
            mask = np.zeros(len(head.vertices), bool)
            mask[head.regions[region]] = True
            _write_attr(mesh, REGION_ATTR.format(region), "BOOLEAN", "value", mask)
    face = np.concatenate([head.regions[r] for r in ("upper_face", "nose", "lips", "chin", "cheeks")
                           if r in head.regions])
    fit = retarget_math.rough_fit(head.vertices, face, _basis_co(character))

    guide = bpy.data.objects.new(name, mesh)
    for collection in character.users_collection or (context.scene.collection,):
        collection.objects.link(guide)
    guide.display_type = "WIRE"
    guide.show_in_front = True
    guide.hide_render = True
    guide.parent = character
    guide.matrix_parent_inverse.identity()
    guide.matrix_basis = Matrix(fit.matrix.tolist())  # in the character's own space (a plain list would be read by columns)
    guide.diffspeaker_binding.character = character
    character.diffspeaker_binding.guide = guide
    return guide


# ---------------------------------------------------------------------------- bind


def bind_character(context, character, falloff: retarget_math.Falloff) -> retarget_math.Binding:
    """Bind the character to its guide where the guide is now, and store the binding."""
    guide = guide_of(character)
    if guide is None:
        raise ValueError(f"'{character.name}' has no guide. Click Add Guide first, fit it to the face, then Bind.")
    context.view_layer.update()  # world matrices of objects moved from a script
    guide_mesh = guide.data
    guide_co = np.empty(3 * len(guide_mesh.vertices), np.float32)
    guide_mesh.vertices.foreach_get("co", guide_co)
    binding = retarget_math.bind(
        guide_co.reshape(-1, 3), _triangles(guide_mesh), _guide_regions(guide_mesh), _basis_co(character),
        _normals(character.data), guide_to_target=relative_matrix(character, guide), falloff=falloff,
    )
    store_binding(character, binding)
    return binding


def store_binding(character, binding: retarget_math.Binding) -> None:
    mesh = character.data
    distance = np.where(np.isfinite(binding.distance), binding.distance, -1.0).astype(np.float32)
    values = {
        "ds_bind_triangle": binding.triangle, "ds_bind_corner0": binding.corners[:, 0],
        "ds_bind_corner1": binding.corners[:, 1], "ds_bind_corner2": binding.corners[:, 2],
        "ds_bind_barycentric": binding.barycentric, "ds_bind_corner_weights": binding.corner_weights,
        "ds_bind_distance": distance, "ds_bind_normal_offset": binding.normal_offset,
        "ds_bind_weight": binding.weight, "ds_bind_side": binding.side,
    }
    for name, (kind, key, _width) in BIND_ATTRS.items():
        _write_attr(mesh, name, kind, key, values[name])
    for name in retarget_math.TARGET_REGIONS:
        attr = REGION_ATTR.format(name)
        if name in binding.regions:
            _write_attr(mesh, attr, "BOOLEAN", "value", binding.regions[name])
        elif mesh.attributes.get(attr) is not None:
            mesh.attributes.remove(mesh.attributes[attr])
    props = character.diffspeaker_binding
    props.bound = True
    props.target_vertices = binding.n_target
    props.guide_vertices = binding.n_guide
    props.guide_matrix = tuple(binding.guide_to_target.ravel())
    props.inner, props.outer = binding.falloff.inner, binding.falloff.outer
    props.summary = describe(binding)


def describe(binding: retarget_math.Binding) -> str:
    q = binding.quality()
    if q.moving == 0:
        return ("No vertex is near the guide, so nothing would move. Move the guide onto the face "
                "(or raise the reach) and Bind again.")
    text = (f"{q.moving:,} of {q.vertices:,} vertices follow the guide ({q.full:,} fully); the furthest is "
            f"{q.furthest_guide * 1000:.1f} mm from it at the guide's own size")
    return text + (f"; {q.vertices - q.moving:,} stay still." if q.moving < q.vertices else ".")


def binding_problem(obj) -> str:
    """Why obj's stored binding cannot be used ('' when it can)."""
    if obj is None or obj.type != "MESH":
        return "Select a mesh."
    props = obj.diffspeaker_binding
    if not props.bound:
        return f"'{obj.name}' is not bound to a guide. Add a guide, fit it to the face and click Bind."
    if props.target_vertices != len(obj.data.vertices):
        return (f"'{obj.name}' has {len(obj.data.vertices)} vertices now but had {props.target_vertices} when it was "
                "bound. Click Bind again.")
    if any(obj.data.attributes.get(name) is None for name in BIND_ATTRS):
        return f"The binding data on '{obj.name}' is missing (removed attributes?). Click Bind again."
    return ""


def stored_binding(obj) -> retarget_math.Binding:
    """The binding kept on obj's mesh; ValueError (saying what to do) when it is unusable."""
    problem = binding_problem(obj)
    if problem:
        raise ValueError(problem)
    mesh, props = obj.data, obj.diffspeaker_binding
    arrays = {name: _read_attr(mesh, name, *spec) for name, spec in BIND_ATTRS.items()}
    if any(value is None for value in arrays.values()):
        raise ValueError(f"The binding data on '{obj.name}' has the wrong type. Click Bind again.")
    regions = {}
    for name in retarget_math.TARGET_REGIONS:
        mask = _read_attr(mesh, REGION_ATTR.format(name), "BOOLEAN", "value", 1)
        if mask is not None:
            regions[name] = mask
    distance = arrays["ds_bind_distance"]
    return retarget_math.Binding(
        triangle=arrays["ds_bind_triangle"],
        corners=np.stack([arrays["ds_bind_corner0"], arrays["ds_bind_corner1"], arrays["ds_bind_corner2"]], 1),
        barycentric=arrays["ds_bind_barycentric"], distance=np.where(distance < 0, np.inf, distance),
        normal_offset=arrays["ds_bind_normal_offset"], side=arrays["ds_bind_side"], weight=arrays["ds_bind_weight"],
        corner_weights=arrays["ds_bind_corner_weights"], regions=MappingProxyType(regions),
        guide_to_target=np.array(props.guide_matrix, np.float64).reshape(4, 4), n_guide=props.guide_vertices,
        falloff=retarget_math.Falloff(props.inner, props.outer),
    )


def bound_guide_vertices(obj) -> int | None:
    """The model-side vertex count of obj's usable binding, else None."""
    return obj.diffspeaker_binding.guide_vertices if obj is not None and obj.type == "MESH" \
        and not binding_problem(obj) else None


def guide_moved(character) -> bool:
    """Whether the guide has been moved since Bind (the binding still uses the old place)."""
    guide, props = guide_of(character), character.diffspeaker_binding
    if guide is None or not props.bound:
        return False
    stored = np.array(props.guide_matrix, np.float64).reshape(4, 4)
    now = relative_matrix(character, guide)
    return bool(np.abs(now - stored).max() > MOVED_TOLERANCE * max(1.0, np.abs(stored).max()))


def motion_for(obj, offsets: np.ndarray) -> np.ndarray:
    """Offsets (..., T, Vg, 3) made on the guide -> (..., T, V, 3) on obj, through its binding."""
    return retarget_math.transfer(stored_binding(obj), offsets)


def motion_on(obj, offsets: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """(offsets (takes, T, V, 3) on obj, obj's face regions for the bake or None): moved
    across obj's binding when it is bound (to a guide of this motion's vertex count), else
    as they are."""
    if bound_guide_vertices(obj) != offsets.shape[-2] and offsets.shape[-2] == len(obj.data.vertices):
        return offsets, None
    binding = stored_binding(obj)  # ValueError with advice when there is none
    return retarget_math.transfer(binding, offsets), dict(binding.regions) or None


def mismatch_hint(obj, model_vertices: int) -> str:
    """Advice added to the vertex-count message for a mesh the model cannot animate directly."""
    props = obj.diffspeaker_binding
    if props.bound and props.guide_vertices != model_vertices:
        return (f" Its guide has {props.guide_vertices} vertices, not the model's {model_vertices}: "
                "add a guide for this model and Bind again.")
    problem = binding_problem(obj) if props.bound else ""
    return f" {problem}" if problem else " To animate it anyway: Add Guide, fit the guide to the face, then Bind."


def use_arkit(scene, obj) -> bool:
    """Whether this bake should keyframe obj's own ARKit keys."""
    settings = getattr(scene, "diffspeaker_retarget", None)
    return bool(settings is not None and settings.use_arkit and arkit_key_names(obj))


def arkit_key_names(obj) -> dict[str, str]:
    """{ARKit name: key name} of obj's shape keys that speech can drive."""
    key = obj.data.shape_keys if obj is not None and obj.type == "MESH" else None
    if key is None:
        return {}
    names = [block.name for block in key.key_blocks if block != key.reference_key]
    return arkit_math.match_arkit_names(names, arkit_math.SPEECH_NAMES)


# ------------------------------------------------------------------------ operators


def _mesh_reason(context) -> str:
    obj = context.active_object
    if obj is None or obj.type != "MESH":
        return "Select the character's mesh (make it the active object)"
    if context.mode != "OBJECT":
        return "Switch to Object Mode"
    return ""


class DIFFSPEAKER_OT_add_guide(bpy.types.Operator):
    """Add the model's head as a wireframe guide on the selected character, to fit to its face"""

    bl_idname = "diffspeaker.add_guide"
    bl_label = "Add Guide"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return poll_reason(cls, _mesh_reason(context))

    def execute(self, context):
        obj = context.active_object
        character = character_of(obj)
        if character is not obj:
            self.report({"ERROR"}, f"'{obj.name}' is a guide. Select the character '{character.name}' to add a guide to it.")
            return {"CANCELLED"}
        existing = guide_of(character)
        if existing is not None:
            self.report({"ERROR"}, f"'{character.name}' already has the guide '{existing.name}'. Fit that one and "
                                   "click Bind, or delete it first to start again.")
            return {"CANCELLED"}
        try:
            guide = add_guide(context, character)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Added '{guide.name}'. Move, rotate and scale it until it sits on the face, then click Bind.")
        return {"FINISHED"}


class DIFFSPEAKER_OT_bind_guide(bpy.types.Operator):
    """Tie the character's vertices to the guide where it sits now, so generated motion can move them"""

    bl_idname = "diffspeaker.bind_guide"
    bl_label = "Bind"
    bl_options = {"REGISTER", "UNDO"}

    inner_mm: FloatProperty(
        name="Full Effect Within (mm)", min=0.0, max=100.0, default=retarget_math.Falloff().inner * 1000,
        description="Vertices this close to the guide's surface follow it fully (measured at the guide's own size)",
    )
    outer_mm: FloatProperty(
        name="No Effect Beyond (mm)", min=0.1, max=200.0, default=retarget_math.Falloff().outer * 1000,
        description="Vertices further than this from the guide's surface stay still (measured at the guide's own size)",
    )

    @classmethod
    def poll(cls, context):
        reason = _mesh_reason(context)
        if not reason and guide_of(character_of(context.active_object)) is None:
            reason = "Add a guide first"
        return poll_reason(cls, reason)

    def execute(self, context):
        character = character_of(context.active_object)
        try:
            falloff = retarget_math.Falloff(self.inner_mm / 1000.0, self.outer_mm / 1000.0)
            binding = bind_character(context, character, falloff)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        summary = describe(binding)
        self.report({"INFO"} if binding.quality().moving else {"WARNING"}, f"Bound '{character.name}': {summary}")
        return {"FINISHED"}


classes = (
    DIFFSPEAKER_PG_retarget_settings,
    DIFFSPEAKER_PG_binding,
    DIFFSPEAKER_OT_add_guide,
    DIFFSPEAKER_OT_bind_guide,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.diffspeaker_retarget = PointerProperty(type=DIFFSPEAKER_PG_retarget_settings)
    bpy.types.Object.diffspeaker_binding = PointerProperty(type=DIFFSPEAKER_PG_binding)


def unregister():
    del bpy.types.Object.diffspeaker_binding
    del bpy.types.Scene.diffspeaker_retarget
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
