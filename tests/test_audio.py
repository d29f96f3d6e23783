"""Audio input: what `load_audio`, `resample` and `normalize_waveform` promise."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vendor_model import audio
from vendor_model.audio import AudioError, load_audio, normalize_waveform, resample

sf = pytest.importorskip("soundfile")

SR = 16_000


def sine(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5, n: int | None = None) -> np.ndarray:
    n = round(rate * seconds) if n is None else n
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def amplitude_at(y: np.ndarray, freq: float, rate: int) -> float:
    """Least-squares amplitude of the `freq` component, away from the edges."""
    n = np.arange(len(y))
    keep = slice(len(y) // 8, len(y) - len(y) // 8)
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate)], axis=1)[keep]
    coef, *_ = np.linalg.lstsq(basis, y[keep].astype(np.float64), rcond=None)
    return float(np.hypot(*coef))


def rms_middle(y: np.ndarray) -> float:
    m = y[len(y) // 8 : len(y) - len(y) // 8].astype(np.float64)
    return float(np.sqrt(np.mean(m**2)))


# --- reading files -----------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, fmt, subtype, amp_tol",
    [(".wav", "WAV", "PCM_16", 1e-4), (".flac", "FLAC", "PCM_16", 1e-4), (".ogg", "OGG", "VORBIS", 1e-2)],
)
def test_reads_wav_flac_and_ogg(tmp_path, suffix, fmt, subtype, amp_tol):
    x = sine(440, SR)
    path = tmp_path / f"speech{suffix}"
    sf.write(path, x, SR, format=fmt, subtype=subtype)

    y = load_audio(path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert len(y) == len(x)
    assert abs(amplitude_at(y, 440, SR) - 0.5) < amp_tol  # Vorbis is lossy, hence its looser bound
    if fmt != "OGG":  # lossless formats give the samples back up to 16-bit rounding
        np.testing.assert_allclose(y, x, atol=1e-4)


def test_path_may_be_a_string(tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, sine(440, SR), SR)
    np.testing.assert_array_equal(load_audio(str(path)), load_audio(path))


def test_stereo_file_is_mixed_to_mono_by_the_channel_mean(tmp_path):
    left, right = sine(440, SR, amp=0.6), sine(440, SR, amp=0.2)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")

    np.testing.assert_allclose(load_audio(path), (left + right) / 2, atol=1e-6)


def test_stereo_array_is_mixed_to_mono_by_the_channel_mean():
    left, right = sine(440, SR, amp=0.6), sine(440, SR, amp=-0.2)
    y = load_audio(np.stack([left, right], axis=1), sample_rate=SR)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_rate_comes_out_at_16k_with_the_right_length(tmp_path, rate):
    n = round(0.77 * rate) + 3  # an awkward length, not a whole number of output samples
    path = tmp_path / f"speech_{rate}.wav"
    sf.write(path, sine(440, rate, n=n), rate, subtype="FLOAT")

    y = load_audio(path)
    assert len(y) == math.ceil(n * SR / rate)
    assert abs(amplitude_at(y, 440, SR) - 0.5) < 1e-3


# --- resampler quality ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [44100, 48000])
def test_downsampling_keeps_a_1khz_sine_within_1_percent(rate):
    y = resample(sine(1000, rate, amp=0.5), rate, SR)
    assert abs(amplitude_at(y, 1000, SR) / 0.5 - 1) < 0.01
    # and it is still a clean sine: nothing but the 1 kHz component is left
    residual = y - sine(1000, SR, amp=0.5, n=len(y))
    assert rms_middle(residual) < 1e-4


def test_content_above_the_output_nyquist_is_attenuated_by_60_db():
    x = sine(12_000, 48_000, amp=0.5)  # would alias to 4 kHz at 16 kHz
    y = resample(x, 48_000, SR)
    attenuation_db = 20 * np.log10(rms_middle(y) / rms_middle(x))
    assert attenuation_db < -60


def test_upsampling_8k_to_16k_reproduces_the_analytic_sine():
    y = resample(sine(1000, 8000, amp=0.5), 8000, SR)
    expected = sine(1000, SR, amp=0.5, n=len(y))
    assert len(y) == 2 * 8000
    middle = slice(len(y) // 8, len(y) - len(y) // 8)
    assert np.max(np.abs(y[middle] - expected[middle])) < 1e-4


@pytest.mark.parametrize("rate", [44101, 44056, 7999])
def test_odd_rates_work_with_a_bounded_filter_bank(rate):
    # 16000/44101 has no small L/M: an exact filter bank would take gigabytes, so the
    # ratio is approximated (here by < 2e-4, a sound card's clock tolerance).
    y = resample(sine(1000, rate, seconds=2), rate, SR)
    assert len(y) == 2 * SR
    assert abs(rms_middle(y) / (0.5 / math.sqrt(2)) - 1) < 0.01
    if rate != 7999:  # these two are approximated closely enough to stay phase-locked
        assert abs(amplitude_at(y, 1000, SR) / 0.5 - 1) < 0.01


def test_equal_rates_return_an_unchanged_copy():
    x = sine(440, SR)
    y = resample(x, SR, SR)
    np.testing.assert_array_equal(y, x)
    assert y is not x


def test_long_inputs_are_processed_in_chunks_with_the_same_result(monkeypatch):
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    whole = resample(x, 44100, SR)
    monkeypatch.setattr(audio, "_CHUNK_ELEMENTS", 5000)  # forces dozens of chunks
    np.testing.assert_allclose(resample(x, 44100, SR), whole, atol=1e-6)


# --- arrays ---------------------------------------------------------------------------


def test_int16_array_is_scaled_to_plus_minus_one():
    pcm = np.round(sine(440, SR, amp=1.0) * 16384).astype(np.int16)  # half of full scale
    y = load_audio(pcm, sample_rate=SR)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, pcm / 32768.0, atol=1e-7)
    assert abs(np.max(np.abs(y)) - 0.5) < 1e-3


def test_array_without_sample_rate_is_rejected():
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(sine(440, SR))


@pytest.mark.parametrize("bad_rate", [0, -16000, 44100.5, "fast", True])
def test_bad_sample_rate_is_rejected(bad_rate):
    with pytest.raises(AudioError, match="sample_rate must be a positive whole number"):
        load_audio(sine(440, SR), sample_rate=bad_rate)


def test_channels_first_array_is_rejected_with_a_hint():
    with pytest.raises(AudioError, match=r"\[samples, channels\]"):
        load_audio(np.stack([sine(440, SR)] * 2), sample_rate=SR)


# --- bad input -------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found") as err:
        load_audio(tmp_path / "nope.wav")
    assert "nope.wav" in str(err.value)


def test_garbage_file_is_reported_as_unreadable(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"this is not audio" * 100)
    with pytest.raises(AudioError, match="Could not read audio file") as err:
        load_audio(path)
    assert "junk.wav" in str(err.value) and "WAV, FLAC or OGG" in str(err.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="empty"):
        load_audio(path)


def test_empty_array():
    with pytest.raises(AudioError, match="empty"):
        load_audio(np.zeros(0, dtype=np.float32), sample_rate=SR)


def test_silent_clip(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SR, dtype=np.float32), SR)
    with pytest.raises(AudioError, match="silent") as err:
        load_audio(path)
    assert "volume" in str(err.value)


def test_too_short_clip_says_how_long_it_was_and_the_minimum():
    with pytest.raises(AudioError, match="too short") as err:
        load_audio(sine(440, 48_000, seconds=0.05), sample_rate=48_000)
    assert "0.050 s" in str(err.value) and str(audio.MIN_DURATION_S) in str(err.value)


def test_just_long_enough_clip_is_accepted():
    assert len(load_audio(sine(440, SR, seconds=audio.MIN_DURATION_S), sample_rate=SR)) == 1600


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(bad):
    x = sine(440, SR)
    x[100] = bad
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(x, sample_rate=SR)


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


# --- normalisation ---------------------------------------------------------------------


def test_normalisation_matches_the_wav2vec2_formula():
    x = (0.3 * np.random.default_rng(1).standard_normal(SR) + 0.1).astype(np.float32)
    y = normalize_waveform(x)
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean()) / np.sqrt(x64.var() + 1e-7)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    assert abs(float(y.mean())) < 1e-5
    assert abs(float(y.std()) - 1) < 1e-4
