"""Import bpy for tests with Blender's user resources isolated in a temporary directory.

bpy can be imported only once per process and reads `BLENDER_USER_RESOURCES` at
import time, so every bpy-using test gets the module from `import_bpy()`:

    from tests.bpy_env import import_bpy
    bpy = import_bpy()

Preferences, `userpref.blend` and installed extensions then land in one per-process
temporary directory (removed at exit), never in ~/.config/blender.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

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
