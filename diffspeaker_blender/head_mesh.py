"""The project's own head (the built-in model's topology) as a Blender mesh object."""
from __future__ import annotations

import bpy
import numpy as np

from .vendor import bundled_module


def add_head(context, name: str = "DiffSpeakerHead") -> bpy.types.Object:
    """Create the head with its material groups, linked to the scene and made active."""
    head_module = bundled_module("synth", "head")
    head = head_module.build_head()
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(head.vertices.tolist(), [], head.polygons())
    for material_name in head_module.MATERIALS:
        material = bpy.data.materials.new(f"{name}_{material_name}")
        material.diffuse_color = (*head_module.MATERIAL_COLORS[material_name], 1.0)
        mesh.materials.append(material)
    mesh.polygons.foreach_set("material_index", head.polygon_material().astype(np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    context.scene.collection.objects.link(obj)
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj
