"""The API differences between Blender 4.2, 4.4+ and 5.x, in one place.

Actions: 4.4 introduced slotted (layered) actions and 5.0 removed `Action.fcurves`.
Sequencer: 4.4 renamed `sequences` to `strips` and 5.0 removed the old name.
Everything else in the add-on calls these helpers and stays version-agnostic.
"""
from __future__ import annotations

from typing import Iterator

import bpy


def new_fcurve(action: bpy.types.Action, id_data: bpy.types.ID, data_path: str, index: int = 0) -> bpy.types.FCurve:
    """An F-curve for `data_path` of `id_data` in `action` (which must already be
    assigned to id_data's animation data, so 4.4+ can pick the right slot)."""
    if hasattr(action, "fcurve_ensure_for_datablock"):  # 4.4+
        return action.fcurve_ensure_for_datablock(id_data, data_path, index=index)
    return action.fcurves.new(data_path, index=index)  # 4.2, 4.3


def iter_fcurves(id_data: bpy.types.ID) -> Iterator[bpy.types.FCurve]:
    """The F-curves that animate `id_data` through its active action."""
    anim = id_data.animation_data
    if anim is None or anim.action is None:
        return
    action = anim.action
    slot = getattr(anim, "action_slot", None)
    if slot is not None and hasattr(action, "layers"):
        for layer in action.layers:
            for strip in layer.strips:
                channelbag = strip.channelbag(slot)
                if channelbag is not None:
                    yield from list(channelbag.fcurves)
    elif hasattr(action, "fcurves"):
        yield from list(action.fcurves)


def action_is_empty(action: bpy.types.Action) -> bool:
    if hasattr(action, "layers"):
        return all(
            len(channelbag.fcurves) == 0
            for layer in action.layers for strip in layer.strips for channelbag in getattr(strip, "channelbags", [])
        ) and (not hasattr(action, "fcurves") or len(action.fcurves) == 0)
    return len(action.fcurves) == 0


def sequencer_strips(scene: bpy.types.Scene, all_levels: bool = True):
    """All strips of the scene's sequencer (including inside meta strips), or []."""
    editor = scene.sequence_editor
    if editor is None:
        return []
    if all_levels:
        return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def sound_strips(scene: bpy.types.Scene) -> list:
    return [strip for strip in sequencer_strips(scene) if strip.type == "SOUND"]


def new_sound_strip(scene: bpy.types.Scene, name: str, filepath: str, channel: int = 1, frame_start: int = 1):
    editor = scene.sequence_editor or scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    return strips.new_sound(name, filepath, channel, frame_start)


def scene_fps(scene: bpy.types.Scene) -> float:
    return scene.render.fps / scene.render.fps_base
