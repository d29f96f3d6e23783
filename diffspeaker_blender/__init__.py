"""DiffSpeaker Lip Sync: speech-driven facial animation for Blender.

Registration happens here and nowhere else: each module lists its classes and the
package registers them in order and unregisters them in reverse. torch and the
model are imported only when a job runs, so enabling the add-on stays fast.
"""
from __future__ import annotations

import tomllib
from pathlib import Path


def _modules() -> tuple:
    # Imported here, not at module level, so the package (and its bpy-free core)
    # can be imported outside Blender.
    from . import cleanup, operators, panels, preferences, properties, retarget

    return (preferences, properties, operators, cleanup, retarget, panels)


def manifest_version() -> str:
    """The one version source: blender_manifest.toml."""
    with open(Path(__file__).with_name("blender_manifest.toml"), "rb") as f:
        return tomllib.load(f)["version"]


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
