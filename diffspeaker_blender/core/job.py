"""A generation job that runs on a worker thread (UI) or synchronously (background
mode, tests) and talks to Blender only through messages.

The worker never touches Blender data: it posts `Progress`, `Finished` or `Failed`
on a queue that the modal operator drains on the main thread, which then bakes.
"""
from __future__ import annotations

import io
import queue
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..vendor import model_module


@dataclass(frozen=True)
class AudioSource:
    """Speech to animate: a file path, or the bytes of a sound packed in the .blend."""

    path: str = ""
    packed: bytes | None = field(default=None, repr=False)
    label: str = ""  # what the artist calls it (strip name or file name), for messages

    def load(self) -> np.ndarray:
        """Mono 16 kHz float32 samples; AudioError with a plain message on bad input."""
        audio = model_module("audio")
        if self.packed is not None:
            import soundfile

            try:
                samples, rate = soundfile.read(io.BytesIO(self.packed), dtype="float32", always_2d=True)
            except Exception as exc:  # noqa: BLE001 - soundfile raises several types for bad data
                raise audio.AudioError(f"Could not read the sound packed in the .blend ('{self.label}'): {exc}") from exc
            return audio.load_audio(samples, rate)
        if not self.path:
            raise audio.AudioError("No audio chosen. Pick a sound strip or an audio file in the DiffSpeaker panel.")
        return audio.load_audio(Path(self.path))


@dataclass(frozen=True)
class Request:
    load_model: Callable[[], Any]  # returns a vendor_model ModelBundle (cached)
    audio: AudioSource
    style: int = 0
    steps: int = 50
    guidance: float | None = None  # None: the model's own scale
    seed: int = 0
    takes: int = 1
    n_vertices: int | None = None  # the target mesh's vertex count, checked against the model
    close_lips: bool = True  # shut the lips where the model's recogniser hears p, b or m


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


@dataclass(frozen=True)
class Finished:
    generation: Any  # vendor_model.pipeline.Generation
    style_name: str
    seconds: float
    notes: tuple[str, ...] = ()  # extra plain-words remarks for the status line


@dataclass(frozen=True)
class Failed:
    message: str  # plain words for the status line
    details: str = ""  # traceback for the console, empty for expected input errors


class JobCancelled(Exception):
    pass


def describe_error(exc: BaseException) -> Failed:
    """Expected problems (bad audio, wrong mesh, missing file) become one plain line;
    anything else keeps its traceback for the console."""
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return Failed(str(exc))
    return Failed(f"Generation failed: {type(exc).__name__}: {exc}", traceback.format_exc())


def run_generation(request: Request, progress: Callable[[int, int], None] | None = None,
                   cancelled: Callable[[], bool] | None = None) -> Finished:
    """The whole job, synchronously: load model, read audio, check, generate."""
    import time

    pipeline = model_module("pipeline")
    config = model_module("config")
    started = time.perf_counter()
    bundle = request.load_model()
    if request.n_vertices is not None and request.n_vertices != bundle.cfg.n_vertices:
        raise ValueError(mesh_mismatch_message(request.n_vertices, bundle.cfg.n_vertices))
    samples = request.audio.load()
    style = bundle.style_index(request.style)
    sampler = config.SamplerConfig(steps=request.steps, guidance=request.guidance, seed=request.seed, takes=request.takes)
    lip_closure = bundle.lip_closure() if request.close_lips else None
    try:
        generation = pipeline.generate(
            bundle.model, samples, sample_rate=config.SAMPLE_RATE, style=style, sampler=sampler,
            progress=progress, cancel=cancelled, lip_closure=lip_closure,
        )
    except pipeline.GenerationCancelled as exc:
        raise JobCancelled(str(exc)) from exc
    if generation.lip_closures:
        counts = "/".join(str(n) for n in generation.lip_closures)
        notes = (f"lips shut on {counts} p/b/m" + (" (per take)" if len(generation.lip_closures) > 1 else ""),)
    elif request.close_lips and lip_closure is None:
        notes = ("this model cannot close the lips on p/b/m (it needs the phoneme front-end)",)
    else:
        notes = ()
    return Finished(generation, bundle.style_names[style], time.perf_counter() - started, notes)


def mesh_mismatch_message(mesh_vertices: int, model_vertices: int) -> str:
    return (
        f"The mesh has {mesh_vertices} vertices but the model animates {model_vertices}. "
        "Select a mesh with the model's topology (its template), or retarget the animation onto your character."
    )


class GenerationJob:
    """Runs `run_generation` on a daemon thread; the main thread polls `messages()`."""

    def __init__(self, request: Request):
        self.request = request
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, name="diffspeaker-generate", daemon=True)

    def start(self) -> "GenerationJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def messages(self) -> list:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        try:
            result = run_generation(self.request, lambda done, total: self._queue.put(Progress(done, total)), self._cancel.is_set)
        except JobCancelled:
            self._queue.put(Failed("Cancelled."))
        except BaseException as exc:  # noqa: BLE001 - everything must reach the main thread
            self._queue.put(describe_error(exc))
        else:
            self._queue.put(result)
