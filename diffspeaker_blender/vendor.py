"""Access to the model package: the copy bundled inside the built extension
(`<addon>/vendor_model`), or the top-level `vendor_model` of a development checkout.
Importing it pulls in torch, so callers import lazily, when a job runs."""
from __future__ import annotations

import importlib
from types import ModuleType


def model_module(name: str) -> ModuleType:
    """`model_module("pipeline")` -> the vendor_model.pipeline module."""
    package = __package__ or "diffspeaker_blender"
    try:
        return importlib.import_module(f"{package}.vendor_model.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in (f"{package}.vendor_model", f"{package}.vendor_model.{name}"):
            raise  # a dependency such as torch is missing: report that, not a fallback
        return importlib.import_module(f"vendor_model.{name}")
