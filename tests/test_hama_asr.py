"""hama's phoneme recogniser run by PyTorch (`vendor_model.hama_asr`): the same posteriors as
hama's own native engine, on every platform, from the weights in the hama package."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vendor_model import frontends
from vendor_model.hama_asr import HamaRecogniser, read_pack

hama = pytest.importorskip("hama", reason="the hama package (the recogniser's weights) is not installed")
from hama import _engine  # noqa: E402

native_engine = pytest.mark.skipif(not _engine.available(), reason="hama's native engine, the reference, has no build here")


@pytest.fixture(scope="module")
def recogniser() -> HamaRecogniser:
    return frontends._hama_session()


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """Formant-like buzz with syllable rhythm and pauses: enough to make the recogniser commit."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 3.5 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.6)
    x = voice * syllables * (1 + 0.5 * np.sin(2 * np.pi * 700 * t)) + 0.02 * rng.standard_normal(t.shape)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@native_engine
@pytest.mark.parametrize("seconds", [0.7, 4.0, 12.0])
def test_the_port_matches_hamas_native_engine(recogniser, seconds):
    x = speech(seconds)
    asr = hama.ASRModel()
    native, lengths = asr.session.run(["log_probs", "out_lengths"],
                                      {"waveform": x[None], "waveform_lengths": np.array([len(x)], dtype=np.int64)})
    native = native[0, : int(np.asarray(lengths).reshape(-1)[0])]
    with torch.no_grad():
        ours = recogniser(torch.from_numpy(x)).numpy()
    assert ours.shape == native.shape == (len(x) // 320 + 1, 191)
    assert np.abs(ours - native).max() < 0.02  # log-probabilities
    assert (ours.argmax(-1) == native.argmax(-1)).all()
    assert recogniser.tokens == asr.decoder_tokens


@pytest.mark.parametrize("samples", [1, 150, 200, 201, 319, 320, 16000])
def test_every_length_gives_one_frame_per_20_ms_of_probabilities(recogniser, samples):
    with torch.no_grad():
        out = recogniser(torch.from_numpy(speech(1.0)[:samples]))
    assert out.shape == (samples // 320 + 1, 191)
    np.testing.assert_allclose(out.exp().sum(-1).numpy(), 1.0, atol=1e-4)


def test_it_runs_where_hama_has_no_native_engine(monkeypatch):
    # Windows: the hama package installs (weights, phone list) but its engine cannot load
    x = speech(2.0)
    reference = frontends.hama_log_posteriors(x)
    monkeypatch.setattr(_engine, "available", lambda: False)
    monkeypatch.setattr(frontends, "_HAMA_SESSION", None)  # rebuilt from the package's files
    monkeypatch.setattr(frontends, "_POSTERIOR_CACHE", frontends._PosteriorCache())
    assert frontends.hama_available()
    np.testing.assert_array_equal(frontends.hama_log_posteriors(x), reference)


def test_weight_packs_it_cannot_run_are_refused_in_plain_words():
    with pytest.raises(ValueError, match="not a hama weight pack"):
        read_pack(b"PK\x03\x04 a zip file")
    weights = read_pack(frontends._hama_pack())
    tokens = frontends.hama_phone_inventory()
    del weights["acoustic_model.model.proj.weight"]  # e.g. hama 1.6's recogniser, another network
    with pytest.raises(ValueError, match="pin hama==1.7.0"):
        HamaRecogniser(weights, tokens)


def test_a_clip_longer_than_30_s_is_heard_to_its_end():
    # hama's native engine stops at 30 s; the encoder used to stretch those 30 s over the clip
    from vendor_model.encoders import build_encoder
    from vendor_model.frontends import hama_encoder_config

    x = speech(40.0)
    encoder = build_encoder(hama_encoder_config(hidden_size=32, layers=1))
    post, frames = encoder.posteriors(torch.from_numpy(x)[None] * 3.0)  # any level: it is set to input_rms
    assert frames.tolist() == [len(x) // 320 + 1] == [2001]
    direct = frontends.hama_log_posteriors((0.05 * x / np.sqrt(np.mean(x * x))).astype(np.float32))
    np.testing.assert_allclose(post[0].numpy(), direct, atol=0.01)  # the encoder's own level rounding aside
