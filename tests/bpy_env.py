"""Import bpy for tests with Blender's user resources isolated in a temporary directory.

bpy can be imported only once per process and reads `BLENDER_USER_RESOURCES` at
import time, so every bpy-using test gets the module from `import_bpy()`:

    from tests.bpy_env import import_bpy
    bpy = import_bpy()

Preferences, `userpref.blend` and installed extensions then land in one per-process
temporary directory (removed at exit), never in ~/.config/blender.

Also here: small readers of Blender data as arrays (`mesh_co`, `key_co`, `evaluated_co`)
and `select`, shared by the bpy-using tests.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np

_ENV = "BLENDER_USER_RESOURCES"


def user_resources() -> Path:
    """The per-process user resource directory, created (and set in the environment) on first use."""
    if _ENV not in os.environ:
        path = tempfile.mkdtemp(prefix="diffspeaker-bpy-user-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ[_ENV] = path
    return Path(os.environ[_ENV])


def import_bpy() -> ModuleType:
    """Return bpy, importing it (after isolating user resources) if it is not loaded yet.

    Raises RuntimeError when bpy was already imported without isolation: its user
    directory would then be the real one.
    """
    if "bpy" in sys.modules:
        bpy = sys.modules["bpy"]
        if _ENV not in os.environ:
            raise RuntimeError(f"bpy was imported before {_ENV} was set; import it via tests.bpy_env.import_bpy()")
    else:
        user_resources()
        import bpy
    actual = Path(bpy.utils.resource_path("USER")).resolve()
    if actual != Path(os.environ[_ENV]).resolve():
        raise RuntimeError(f"bpy uses user resources {actual}, not {_ENV}={os.environ[_ENV]}")
    return bpy


def reset_scene() -> None:
    """Start from an empty factory scene (0.06 s). Classes registered at runtime survive this."""
    import_bpy().ops.wm.read_factory_settings(use_empty=True)


def select(obj) -> None:
    """Make obj the only selected object and the active one."""
    for other in import_bpy().context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    import_bpy().context.view_layer.objects.active = obj


def mesh_co(mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions of a mesh datablock."""
    co = np.empty(3 * len(mesh.vertices), dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


def key_co(block) -> np.ndarray:
    """(V, 3) float32 positions of a shape key."""
    co = np.empty(3 * len(block.points), dtype=np.float32)
    block.points.foreach_get("co", co)
    return co.reshape(-1, 3)


def evaluated_co(obj, frame: int) -> np.ndarray:
    """(V, 3) float32: obj's vertices as Blender shows them on frame (shape keys, drivers, modifiers)."""
    bpy = import_bpy()
    bpy.context.scene.frame_set(frame)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        return mesh_co(mesh)
    finally:
        evaluated.to_mesh_clear()
