"""Access to the packages bundled inside the built extension (`<addon>/vendor_model`,
`<addon>/synth`), or their top-level copies in a development checkout. Importing the
model pulls in torch, so callers import lazily, when a job runs."""
from __future__ import annotations

import importlib
from types import ModuleType


def bundled_module(package: str, name: str) -> ModuleType:
    """`bundled_module("vendor_model", "pipeline")` -> the vendor_model.pipeline module."""
    addon = __package__ or "diffspeaker_blender"
    try:
        return importlib.import_module(f"{addon}.{package}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{addon}.{package}", f"{addon}.{package}.{name}"):
            raise  # a dependency such as torch is missing: report that, not a fallback
        return importlib.import_module(f"{package}.{name}")


def model_module(name: str) -> ModuleType:
    return bundled_module("vendor_model", name)
