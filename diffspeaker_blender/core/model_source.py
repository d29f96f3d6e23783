"""Where the model comes from, and a cache so it loads once per Blender session.

No bpy here: the add-on preferences are turned into a `ModelSpec`, and the
`ModelCache` (one per session) returns the loaded bundle, reloading only when the
spec or the file on disk changes.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..vendor import model_module

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "models"


class ModelUnavailable(ValueError):
    """The configured model cannot be used; the message says what to change."""


# Preferred first. The default listens through the hama phoneme recogniser (its weights come
# in the bundled hama wheel and run in PyTorch on every platform); the log-mel model is the
# fallback where the hama package is missing, e.g. a hand-made install without its wheel.
BUILTIN_ORDER = ("default.safetensors", "default-logmel.safetensors")


def builtin_model_path() -> Path | None:
    """The built-in model this machine can run, if this build has one."""
    if not BUILTIN_DIR.is_dir():
        return None
    named = [BUILTIN_DIR / name for name in BUILTIN_ORDER]
    models = [p for p in named if p.is_file()] + sorted(set(BUILTIN_DIR.glob("*.safetensors")) - set(named))
    for path in models:
        if model_module("checkpoint").read_config(path).encoder.kind != "hama" or model_module("frontends").hama_available():
            return path
    return None


@dataclass(frozen=True)
class ModelSpec:
    kind: Literal["BUILTIN", "CHECKPOINT", "OFFICIAL"] = "BUILTIN"
    path: str = ""  # our .safetensors (CHECKPOINT) or an official .ckpt (OFFICIAL)
    preset: str = "AUTO"  # OFFICIAL: AUTO (from the vertex count), VOCASET or BIWI
    template: str = ""  # OFFICIAL: template mesh file (.ply/.obj/.npy/templates.pkl)
    subject: str = ""  # OFFICIAL: subject inside templates.pkl
    encoder_config: str = ""  # OFFICIAL: transformers config.json of a non-base speech encoder
    device: str = "auto"  # auto, cpu, cuda, mps

    def model_file(self) -> Path:
        """The file to load; raises ModelUnavailable with advice when there is none."""
        if self.kind == "BUILTIN":
            path = builtin_model_path()
            if path is None and BUILTIN_DIR.is_dir() and any(BUILTIN_DIR.glob("*.safetensors")):
                raise ModelUnavailable(
                    "The built-in model needs the hama phoneme recogniser, which is not installed here. "
                    "Reinstall the DiffSpeaker extension (it bundles hama), or choose a log-mel model file in "
                    "Edit > Preferences > Add-ons > DiffSpeaker."
                )
            if path is None:
                raise ModelUnavailable(
                    "This build has no built-in model yet. Choose a model file in "
                    "Edit > Preferences > Add-ons > DiffSpeaker (a .safetensors model or an official .ckpt)."
                )
            return path
        if not self.path:
            raise ModelUnavailable("No model file is set. Choose one in the DiffSpeaker add-on preferences.")
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise ModelUnavailable(f"The model file '{path}' does not exist. Check the path in the add-on preferences.")
        expected = ".safetensors" if self.kind == "CHECKPOINT" else ".ckpt"
        if self.kind == "CHECKPOINT" and path.suffix != expected:
            raise ModelUnavailable(f"'{path.name}' is not a .safetensors model. For an official .ckpt choose 'Official checkpoint'.")
        return path

    def vertex_count(self) -> int | None:
        """The model's vertex count if it can be read without loading the weights."""
        path = self.model_file()
        if path.suffix == ".safetensors":
            return model_module("checkpoint").read_config(path).n_vertices
        return None  # an official .ckpt must be unpickled (safely) to know; checked after loading


class ModelCache:
    """Holds the most recently loaded model; thread-safe so a worker can load it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._bundle = None

    def _cache_key(self, spec: ModelSpec) -> tuple:
        path = spec.model_file()
        stamps = [path.stat().st_mtime_ns]
        for extra in (spec.template, spec.encoder_config):
            if extra and Path(extra).is_file():
                stamps.append(Path(extra).stat().st_mtime_ns)
        return (spec, str(path), tuple(stamps))

    def get(self, spec: ModelSpec):
        """The loaded ModelBundle for `spec`, loading it on first use."""
        key = self._cache_key(spec)
        with self._lock:
            if key != self._key:
                self._bundle = None  # free the old model before loading a new one
                self._bundle = self._load(spec, key[1])
                self._key = key
            return self._bundle

    def clear(self) -> None:
        with self._lock:
            self._key = self._bundle = None

    @staticmethod
    def _load(spec: ModelSpec, path: str):
        checkpoint = model_module("checkpoint")
        device = model_module("pipeline").pick_device(spec.device)
        options = {}
        if spec.kind == "OFFICIAL":
            if spec.preset != "AUTO":
                options["preset_name"] = spec.preset.lower()
            if spec.template:
                options["template"] = model_module("mesh_io").load_template(spec.template, spec.subject or None)
            if spec.encoder_config:
                import json

                options["encoder_hf_config"] = json.loads(Path(spec.encoder_config).read_text())
        return checkpoint.load_any(path, device=device, **options)


SESSION_CACHE = ModelCache()
