"""Light speech front-ends (`vendor_model.frontends`): the log-mel encoder and the hama
phoneme-posterior encoder give `num_features` frames at 50 fps, respect padding,
ignore loudness (log-mel), augment only in training, load strictly, round-trip
through our checkpoint format, and say clearly when hama cannot run."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from vendor_model import frontends
from vendor_model.audio import load_audio, normalize_waveform
from vendor_model.checkpoint import ModelBundle, load_bundle, save_bundle
from vendor_model.config import EncoderConfig, SamplerConfig
from vendor_model.encoders import build_encoder
from vendor_model.frontends import (
    HamaUnavailableError, LogMelEncoder, PhonemePosteriorEncoder, hama_encoder_config, hz_to_mel,
    log_mel_spectrogram, logmel_encoder_config, mel_filterbank, mel_frequencies, mel_to_hz,
)
from vendor_model.model import DiffSpeaker, TrainingBatch
from vendor_model.pipeline import generate

from .conftest import speech_like, tiny_config

LENGTHS = (1, 319, 320, 321, 1600, 8000, 16001)


def _hama_ok() -> bool:
    try:
        frontends._import_hama()
        return True
    except HamaUnavailableError:
        return False


needs_hama = pytest.mark.skipif(not _hama_ok(), reason="the hama phoneme recogniser cannot run here")


def _logmel(seed: int = 0, **overrides) -> LogMelEncoder:
    torch.manual_seed(seed)
    return build_encoder(logmel_encoder_config(**{"hidden_size": 32, "layers": 2, **overrides})).eval()


def _hama(seed: int = 0, **overrides) -> PhonemePosteriorEncoder:
    torch.manual_seed(seed)
    return build_encoder(hama_encoder_config(**{"hidden_size": 32, "layers": 2, **overrides})).eval()


def _run(encoder, waveform, mask=None):
    with torch.no_grad():
        return encoder(waveform, mask)


@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> np.ndarray:
    """'hello world ...' spoken by espeak-ng, 16 kHz, normalised as the pipeline does."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    subprocess.run([espeak, "-w", str(path), "hello world, the quick brown fox"], check=True, capture_output=True)
    return normalize_waveform(load_audio(str(path)))


# ---- configuration --------------------------------------------------------------------------


def test_registered_kinds_and_complete_configs():
    assert isinstance(build_encoder(logmel_encoder_config()), LogMelEncoder)
    cfg = logmel_encoder_config(hidden_size=128)
    assert cfg.kind == "logmel" and cfg.feature_dim == 128
    assert set(cfg.hf_config) == {"hidden_size", "layers", "kernel", "dropout", "n_mels", "mel_scale", "top_db", "spec_augment"}
    assert set(hama_encoder_config().hf_config) == {"hidden_size", "layers", "kernel", "dropout", "n_classes", "input_rms"}


def test_bad_settings_are_refused_with_the_helper_named():
    with pytest.raises(ValueError, match="logmel_encoder_config"):
        build_encoder(EncoderConfig(kind="logmel"))  # the wav2vec2 default hf_config
    with pytest.raises(ValueError, match="odd"):
        logmel_encoder_config(kernel=4)
    with pytest.raises(ValueError, match="spec_augment"):
        build_encoder(logmel_encoder_config(spec_augment={"time_warp": 5}))


def test_parameter_counts_stay_small():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_encoder(logmel_encoder_config(hidden_size=256))) < 2_000_000
    assert count(build_encoder(logmel_encoder_config(hidden_size=128))) < 500_000


# ---- mel analysis ---------------------------------------------------------------------------


def test_mel_scales_follow_their_formulas():
    assert float(hz_to_mel(1000.0, "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(6400.0, "slaney")) == pytest.approx(15.0 + 27.0)
    assert float(hz_to_mel(500.0, "slaney")) == pytest.approx(7.5)
    assert float(hz_to_mel(1000.0, "htk")) == pytest.approx(1000.0, abs=0.05)
    f = np.array([0.0, 100.0, 999.0, 1000.0, 4321.0, 8000.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, atol=1e-6)
    fb = mel_filterbank(80)
    assert fb.shape == (80, 257) and (fb.sum(axis=1) > 0).all()


@pytest.mark.parametrize("band", [3, 20, 45, 70])
def test_a_pure_tone_peaks_in_its_mel_band(band):
    centre = mel_frequencies(80)[band + 1]
    t = np.arange(8000) / 16000
    x = torch.from_numpy(np.sin(2 * np.pi * centre * t).astype(np.float32))[None]
    logmel = log_mel_spectrogram(x)
    assert logmel.shape == (1, 80, 8000 // 160 + 1)
    assert int(logmel[0, :, 5:-5].mean(-1).argmax()) == band


def test_the_normalised_log_mel_ignores_loudness():
    encoder = _logmel()
    x = torch.from_numpy(speech_like(1.0, seed=2))[None]
    torch.testing.assert_close(encoder.features(0.1 * x)[0], encoder.features(x)[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(_run(encoder, 0.1 * x), _run(encoder, x), atol=1e-4, rtol=0)
    assert _run(encoder, torch.zeros(1, 4000)).isfinite().all()  # silence (guidance's audio-free pass)


# ---- shapes and padding ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [_logmel, pytest.param(_hama, marks=needs_hama)])
def test_shapes_follow_num_features(make):
    encoder = make()
    assert encoder.feature_fps == 50 and encoder.feature_dim == 32
    for n in LENGTHS:
        assert encoder.num_features(n) == n // 320 + 1
        assert _run(encoder, torch.randn(2, n)).shape == (2, encoder.num_features(n), 32)
    assert encoder.num_features(0) == 0


@needs_hama
def test_num_features_matches_hamas_own_frame_count():
    for n in LENGTHS:
        assert frontends.hama_log_posteriors(np.zeros(n, np.float32)).shape == (n // 320 + 1, 191)


@pytest.mark.parametrize("make", [_logmel, pytest.param(_hama, marks=needs_hama)])
def test_padding_is_masked_out(make):
    encoder = make()
    long_clip, short_clip = speech_like(0.8, seed=3), speech_like(0.45, seed=4)
    batch = torch.zeros(2, len(long_clip))
    batch[0], batch[1, : len(short_clip)] = torch.from_numpy(long_clip), torch.from_numpy(short_clip)
    batch[1, len(short_clip):] = 5.0  # whatever lies under the mask must not matter
    mask = torch.zeros_like(batch, dtype=torch.long)
    mask[0], mask[1, : len(short_clip)] = 1, 1
    out = _run(encoder, batch, mask)
    alone = _run(encoder, torch.from_numpy(short_clip)[None])
    n = encoder.num_features(len(short_clip))
    assert out.shape[1] == encoder.num_features(len(long_clip)) and alone.shape[1] == n
    torch.testing.assert_close(out[1, :n], alone[0], atol=1e-5, rtol=0)
    assert (out[1, n:] == 0).all()
    torch.testing.assert_close(out[0], _run(encoder, torch.from_numpy(long_clip)[None])[0], atol=1e-5, rtol=0)


def test_spec_augment_only_in_training():
    encoder = _logmel(spec_augment={"freq_masks": 2, "freq_width": 20, "time_masks": 2, "time_width": 20})
    x = torch.from_numpy(speech_like(1.0, seed=5))[None].repeat(4, 1)
    clean = encoder.features(x)[0]
    torch.testing.assert_close(encoder.features(x)[0], clean)  # eval: deterministic, no masking
    encoder.train()
    torch.manual_seed(0)
    masked = encoder.features(x)[0]
    assert not torch.equal(masked, clean)
    changed = masked != clean
    assert (masked[changed] == 0).all()  # masking only zeroes
    encoder.eval()
    torch.testing.assert_close(encoder.features(x)[0], clean)
    plain = _logmel(spec_augment=False).train()
    torch.testing.assert_close(plain.features(x)[0], clean)


def test_the_log_mel_encoder_trains_inside_diffspeaker():
    torch.manual_seed(0)
    model = DiffSpeaker(tiny_config(encoder=logmel_encoder_config(hidden_size=32, layers=1))).train()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.05)  # zero at initialisation
    audio = torch.from_numpy(np.stack([speech_like(1.0, seed=6), speech_like(1.0, seed=7)]))
    audio_mask = torch.ones_like(audio, dtype=torch.long)
    audio_mask[1, 12000:] = 0
    batch = TrainingBatch(audio=audio, audio_mask=audio_mask, offsets=torch.randn(2, 30, 60),
                          frame_mask=torch.ones(2, 30), style=torch.tensor([0, 2]))
    model.training_loss(batch)["total"].backward()
    assert model.audio_encoder.conv_in.weight.grad.abs().sum() > 0


# ---- weights and checkpoints ----------------------------------------------------------------


def test_load_weights_is_strict():
    encoder, other = _logmel(0), _logmel(1)
    state = other.state_dict()
    assert all(not k.startswith(("model.", "_")) for k in state)
    encoder.load_weights(state, "other")
    x = torch.randn(1, 4000)
    torch.testing.assert_close(_run(encoder, x), _run(other, x))
    missing = {k: v for k, v in state.items() if k != "blocks.1.fc1.weight"}
    with pytest.raises(ValueError, match=r"missing \['blocks.1.fc1.weight'\]"):
        encoder.load_weights(missing, "f")
    with pytest.raises(ValueError, match=r"unknown \['extra'\]"):
        encoder.load_weights({**state, "extra": torch.zeros(1)}, "f")
    with pytest.raises(ValueError, match=r"wrong shape \['conv_in.weight"):
        encoder.load_weights({**state, "conv_in.weight": torch.zeros(32, 80, 5)}, "f")
    with torch.device("meta"):
        empty = build_encoder(logmel_encoder_config(hidden_size=32, layers=2))
    empty.load_weights(state, "other", assign=True)
    torch.testing.assert_close(_run(empty.eval(), x), _run(other, x))


@pytest.mark.parametrize("make_encoder", [
    lambda: logmel_encoder_config(hidden_size=32, layers=2),
    pytest.param(lambda: hama_encoder_config(hidden_size=32, layers=2), marks=needs_hama),
])
def test_bundle_round_trip_gives_the_same_motion(tmp_path, make_encoder):
    torch.manual_seed(0)
    model = DiffSpeaker(tiny_config(encoder=make_encoder())).eval()
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=0.05)
    model.audio_encoder.freeze_feature_extractor()
    state = model.export_state_dict()
    assert all(k.startswith(("audio_encoder.", "denoiser.")) for k in state)
    path = save_bundle(ModelBundle(model, None, ("a", "b", "c")), tmp_path / "m.safetensors")
    loaded = load_bundle(path)
    assert loaded.cfg == model.cfg and type(loaded.model.audio_encoder) is type(model.audio_encoder)
    for key, value in state.items():
        assert torch.equal(loaded.model.export_state_dict()[key], value), key
    audio = speech_like(0.7, seed=8)
    sampler = SamplerConfig(steps=3, seed=1, guidance=1.0)
    a = generate(model, audio, sample_rate=16000, sampler=sampler, device="cpu")
    b = generate(loaded.model, audio, sample_rate=16000, sampler=sampler, device="cpu")
    assert a.offsets.shape == (1, model.num_frames(len(audio)), 20, 3)
    # Bit-identical weights (above); BLAS may pick other kernels for differently aligned memory.
    np.testing.assert_allclose(a.offsets, b.offsets, atol=1e-6, rtol=0)


# ---- hama -----------------------------------------------------------------------------------


@needs_hama
def test_hama_posteriors_of_real_speech(spoken):
    encoder = _hama()
    x = torch.from_numpy(spoken)[None]
    post, frames = encoder.posteriors(x)
    n = encoder.num_features(len(spoken))
    assert post.shape == (1, n, 191) and frames.tolist() == [n]
    np.testing.assert_allclose(post[0].exp().sum(-1).numpy(), 1.0, atol=1e-4)
    best = post[0].argmax(-1)
    inventory = frontends.hama_phone_inventory()
    assert len(inventory) == 191 and inventory[-1] == "<blank>"
    phones = {inventory[i] for i in best.tolist()} - {"<blank>", "<wb>"}
    assert len(set(best.tolist())) > 5 and len(phones) >= 5, phones
    assert _run(encoder, x).shape == (1, n, 32)


@pytest.fixture
def hama_runs(monkeypatch) -> list:
    """Every run of hama's native session from now on appends to this list."""
    calls = []
    recogniser = frontends._hama_session()
    real_forward = recogniser.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(recogniser, "forward", counting)
    return calls


@needs_hama
def test_hama_runs_once_per_distinct_waveform(spoken, hama_runs):
    clip = spoken[:16000].copy()
    first = frontends.hama_log_posteriors(clip)
    again = frontends.hama_log_posteriors(clip.copy())
    other = frontends.hama_log_posteriors(clip * 0.5)
    assert len(hama_runs) == 2  # the repeat came from the cache; a different waveform did not
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not first.flags.writeable  # shared with the cache: callers cannot corrupt it


def test_a_clear_error_when_hama_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "hama", None)  # makes `import hama` raise ImportError
    with pytest.raises(HamaUnavailableError, match="not installed.*logmel"):
        build_encoder(hama_encoder_config())
    assert not frontends.hama_available()


@needs_hama
def test_bilabial_probability_is_hamas_p_b_m_share_and_hears_them(tmp_path):
    def say(text: str) -> torch.Tensor:
        path = tmp_path / "say.wav"
        subprocess.run([shutil.which("espeak-ng") or pytest.skip("espeak-ng is not installed"), "-w", str(path), text],
                       check=True, capture_output=True)
        return torch.from_numpy(normalize_waveform(load_audio(str(path))))[None]

    encoder = _hama()
    lips = say("bob may buy a map")
    heard = encoder.bilabial_probability(lips)
    post, frames = encoder.posteriors(lips)
    classes = [i for i, s in enumerate(frontends.hama_phone_inventory()) if frontends.is_bilabial(s)]
    assert heard.shape == (int(frames[0]),)
    np.testing.assert_allclose(heard, post[0, :, classes].exp().sum(-1).numpy(), rtol=1e-6)
    assert (heard > 0.5).sum() >= 3  # of b, m, b, m, p: most heard clearly (4 today)
    assert encoder.bilabial_probability(say("she sees the sea, high and far")).max() < 0.3


@needs_hama
def test_lip_closure_reuses_the_posteriors_the_model_heard(spoken, hama_runs):
    from vendor_model.lip_closure import LipClosure

    torch.manual_seed(0)
    model = DiffSpeaker(tiny_config(encoder=hama_encoder_config(hidden_size=32, layers=1))).eval()
    lips = LipClosure(np.zeros((model.cfg.n_vertices, 3)), (0,), (1,))
    clip = spoken[:-800]  # a waveform no other test has put in the cache (scaling would not do: it is normalised)
    generate(model, clip, sample_rate=16000, sampler=SamplerConfig(steps=2), lip_closure=lips)
    assert len(hama_runs) == 1
