"""FBX export with the settings that keep shape keys and their animation.

Blender's defaults lose them: with `use_mesh_modifiers` every shape key is
dropped when the object has any modifier, and `bake_anim_use_all_actions` /
`bake_anim_use_nla_strips` each leave the exported mesh with no shape-key
animation. These settings were checked by a re-import round trip.
"""
from __future__ import annotations

import bpy

FBX_SHAPE_KEY_SETTINGS = dict(
    object_types={"MESH"},
    use_mesh_modifiers=False,
    add_leaf_bones=False,
    bake_anim=True,
    bake_anim_use_all_actions=False,
    bake_anim_use_nla_strips=False,
    bake_anim_force_startend_keying=True,
    bake_anim_step=1.0,
    bake_anim_simplify_factor=0.0,
)


def export_fbx(filepath: str, use_selection: bool = True) -> set:
    """Export the selected (or all) meshes; the frame range is the scene's."""
    return bpy.ops.export_scene.fbx(filepath=filepath, use_selection=use_selection, **FBX_SHAPE_KEY_SETTINGS)
