"""The add-on inside the bpy module, for tests: enabled from scratch in an empty factory
scene, and a scene ready to Generate (model in the preferences, a sound strip)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .bpy_env import import_bpy, reset_scene

bpy = import_bpy()
import addon_utils  # noqa: E402  (available once bpy is imported)

from diffspeaker_blender import compat  # noqa: E402
from diffspeaker_blender.core.model_source import SESSION_CACHE  # noqa: E402

ADDON = "diffspeaker_blender"


def enable_addon() -> None:
    addon_utils.enable(ADDON, default_set=True, handle_error=None)


def disable_addon() -> None:
    addon_utils.disable(ADDON, default_set=True, handle_error=None)


@contextmanager
def addon_enabled(fps: int = 24) -> Iterator:
    """An empty factory scene at fps with the add-on enabled from scratch (a factory reset
    drops it from the preferences); the add-on is disabled again afterwards."""
    reset_scene()
    disable_addon()
    enable_addon()
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    try:
        yield scene
    finally:
        disable_addon()


def ready_to_generate(scene, model: Path, wav: Path, *, strip_start: int, steps: int):
    """The checkpoint model on the CPU in the preferences (nothing cached from an earlier
    test), and wav as the sound strip "Dialogue" at strip_start, picked in the panel."""
    SESSION_CACHE.clear()
    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.model_source, prefs.model_path, prefs.device = "CHECKPOINT", str(model), "CPU"
    strip = compat.new_sound_strip(scene, "Dialogue", str(wav), channel=1, frame_start=strip_start)
    scene.diffspeaker.sound_strip = strip.name
    scene.diffspeaker.steps = steps
    return scene
