"""The add-on's bpy-free job layer: model source and cache, audio sources, the
worker thread's messages, cancellation and plain-words errors."""
from __future__ import annotations

import dataclasses

import time

import numpy as np
import pytest
import soundfile

from diffspeaker_blender.core import model_source
from diffspeaker_blender.core.job import (
    AudioSource, Failed, Finished, GenerationJob, JobCancelled, Progress, Request, run_generation,
)
from diffspeaker_blender.core.model_source import ModelCache, ModelSpec, ModelUnavailable
from vendor_model.checkpoint import ModelBundle, save_bundle
from vendor_model.frontends import hama_available, hama_encoder_config

from .conftest import speech_like, tiny_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_bundle(ModelBundle(tiny_model(), None, ("calm", "lively", "wide")), path)
    return path


@pytest.fixture(scope="module")
def wav_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "line.wav"
    soundfile.write(path, speech_like(1.0, rate=22050), 22050)
    return path


def request(model_file, audio, **options):
    cache = ModelCache()
    spec = ModelSpec("CHECKPOINT", str(model_file), device="cpu")
    return Request(load_model=lambda: cache.get(spec), audio=audio, **{"steps": 4, **options})


def test_model_spec_explains_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(model_source, "BUILTIN_DIR", tmp_path / "none")
    with pytest.raises(ModelUnavailable, match="no built-in model"):
        ModelSpec("BUILTIN").model_file()
    with pytest.raises(ModelUnavailable, match="No model file is set"):
        ModelSpec("CHECKPOINT").model_file()
    with pytest.raises(ModelUnavailable, match="does not exist"):
        ModelSpec("CHECKPOINT", str(tmp_path / "gone.safetensors")).model_file()
    ckpt = tmp_path / "official.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ModelUnavailable, match="not a .safetensors model"):
        ModelSpec("CHECKPOINT", str(ckpt)).model_file()


def test_builtin_model_is_found_inside_the_addon(tmp_path, monkeypatch, model_file):
    monkeypatch.setattr(model_source, "BUILTIN_DIR", tmp_path)
    (tmp_path / "default.safetensors").write_bytes(model_file.read_bytes())
    assert ModelSpec("BUILTIN").model_file().name == "default.safetensors"
    assert ModelSpec("BUILTIN").vertex_count() == 20


def test_builtin_default_falls_back_to_log_mel_where_hama_is_missing(tmp_path, monkeypatch, model_file):
    from vendor_model import checkpoint, frontends

    monkeypatch.setattr(model_source, "BUILTIN_DIR", tmp_path)
    hama_cfg = dataclasses.replace(checkpoint.read_config(model_file), encoder=frontends.hama_encoder_config())
    real_read_config = checkpoint.read_config
    monkeypatch.setattr(checkpoint, "read_config", lambda p: hama_cfg if p.name == "default.safetensors" else real_read_config(p))
    (tmp_path / "default.safetensors").write_bytes(model_file.read_bytes())
    (tmp_path / "default-logmel.safetensors").write_bytes(model_file.read_bytes())

    monkeypatch.setattr(frontends, "hama_available", lambda: True)
    assert ModelSpec("BUILTIN").model_file().name == "default.safetensors"
    monkeypatch.setattr(frontends, "hama_available", lambda: False)  # e.g. an install without the hama wheel
    assert ModelSpec("BUILTIN").model_file().name == "default-logmel.safetensors"
    (tmp_path / "default-logmel.safetensors").unlink()
    with pytest.raises(ModelUnavailable, match="not installed here.*Reinstall"):
        ModelSpec("BUILTIN").model_file()


def test_vertex_count_is_read_without_loading_weights(model_file):
    assert ModelSpec("CHECKPOINT", str(model_file)).vertex_count() == 20


def test_cache_loads_once_and_reloads_when_the_file_changes(model_file, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(model_file.read_bytes())
    cache, spec = ModelCache(), ModelSpec("CHECKPOINT", str(path), device="cpu")
    first = cache.get(spec)
    assert cache.get(spec) is first
    time.sleep(0.01)
    path.write_bytes(model_file.read_bytes())  # new mtime: the artist replaced the file
    assert cache.get(spec) is not first


def test_audio_from_a_file_and_from_packed_bytes_agree(wav_file):
    from_file = AudioSource(path=str(wav_file)).load()
    from_bytes = AudioSource(packed=wav_file.read_bytes(), label="Strip").load()
    np.testing.assert_array_equal(from_file, from_bytes)
    assert len(from_file) == 16000


def test_bad_audio_sources_say_what_is_wrong():
    from vendor_model.audio import AudioError

    with pytest.raises(AudioError, match="No audio chosen"):
        AudioSource().load()
    with pytest.raises(AudioError, match="packed in the .blend"):
        AudioSource(packed=b"not audio", label="Dialogue").load()


def test_synchronous_run_generates_every_take(model_file, wav_file):
    seen = []
    finished = run_generation(request(model_file, AudioSource(path=str(wav_file)), takes=2, style=1),
                              progress=lambda d, t: seen.append((d, t)))
    assert finished.generation.offsets.shape == (2, 29, 20, 3)  # 1 s: 49 features -> int(49 / 50 * 30)
    assert finished.style_name == "lively"
    assert seen[-1] == (4, 4)


def test_lip_closure_is_asked_for_by_default_and_its_absence_is_said(model_file, wav_file):
    audio = AudioSource(path=str(wav_file))
    # this model has no phoneme front-end and no lip rows: it cannot close the lips, and says so
    finished = run_generation(request(model_file, audio))
    assert finished.generation.lip_closures == ()
    assert finished.notes == ("this model cannot close the lips on p/b/m (it needs the phoneme front-end)",)
    assert run_generation(request(model_file, audio, close_lips=False)).notes == ()


@pytest.mark.skipif(not hama_available(), reason="the hama phoneme recogniser cannot run here")
def test_a_model_that_hears_phonemes_says_how_many_closures_each_take_got(tmp_path, wav_file):
    model = tiny_model(encoder=hama_encoder_config(hidden_size=32, layers=1))
    regions = {"upper_lip_seam": [0, 1], "lower_lip_seam": [2, 3]}
    path = tmp_path / "hears.safetensors"
    save_bundle(ModelBundle(model, np.zeros((model.cfg.n_vertices, 3)), ("calm",), {"regions": regions}), path)
    finished = run_generation(request(path, AudioSource(path=str(wav_file)), takes=2))
    counts = finished.generation.lip_closures
    assert len(counts) == 2
    assert finished.notes == (f"lips shut on {counts[0]}/{counts[1]} p/b/m (per take)",)


def test_mesh_with_the_wrong_vertex_count_is_explained(model_file, wav_file):
    with pytest.raises(ValueError, match="mesh has 7 vertices but the model animates 20.*retarget"):
        run_generation(request(model_file, AudioSource(path=str(wav_file)), n_vertices=7))


def test_worker_thread_posts_progress_then_the_result(model_file, wav_file):
    job = GenerationJob(request(model_file, AudioSource(path=str(wav_file)))).start()
    job.join(timeout=60)
    messages = job.messages()
    assert [m for m in messages if isinstance(m, Progress)][-1] == Progress(4, 4)
    assert isinstance(messages[-1], Finished)


def test_worker_reports_bad_input_in_plain_words(model_file, tmp_path):
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    job = GenerationJob(request(model_file, AudioSource(path=str(silent)))).start()
    job.join(timeout=60)
    (failure,) = job.messages()
    assert isinstance(failure, Failed) and "silent" in failure.message and failure.details == ""


def test_cancel_stops_the_worker(model_file, wav_file):
    job = GenerationJob(request(model_file, AudioSource(path=str(wav_file)), steps=500))
    job.cancel()  # cancelled before the first step: the loop stops at its first check
    job.start().join(timeout=60)
    assert job.messages()[-1] == Failed("Cancelled.")
    with pytest.raises(JobCancelled):
        cancelled = request(model_file, AudioSource(path=str(wav_file)))
        run_generation(cancelled, cancelled=lambda: True)

