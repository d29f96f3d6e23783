"""Waveform augmentation (`synth.augment`): each step changes the sound as promised and
keeps the phoneme segments true to the audio."""
from __future__ import annotations

import numpy as np
import pytest

from synth import augment as aug
from synth import tts
from synth.segments import PhonemeSegment, SILENCE

SR = 16_000


@pytest.fixture(scope="module")
def speech() -> tts.Utterance:
    return tts.synthesize("Papa bought a purple umbrella and a beige vase.", tts.ESPEAK, "en-us")


def synthetic(audio: np.ndarray, segments) -> tts.Utterance:
    audio = audio.astype(np.float32)
    return tts.Utterance(audio, SR, tuple(PhonemeSegment(*s) for s in segments), "", "test", "synthetic")


def gated_tone(f0: float = 150.0) -> tts.Utterance:
    """A harmonic-rich tone that sounds for 0.3 s from 0.2 s, 0.7 s and 1.3 s."""
    t = np.arange(2 * SR) / SR
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))
    gate = sum(((t >= on) & (t < on + 0.3)).astype(float) for on in (0.2, 0.7, 1.3))
    return synthetic(0.3 * tone * gate, [(SILENCE, 0, 0.2), ("aa", 0.2, 0.5), (SILENCE, 0.5, 2.0)])


def edges(audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Onset and offset times (s) of the loud stretches, from a 5 ms RMS envelope."""
    w = int(0.005 * sr)
    env = np.sqrt(np.convolve(audio.astype(np.float64) ** 2, np.ones(w) / w, "same"))
    loud = np.concatenate([[0], (env > 0.5 * np.percentile(env, 95)).astype(int), [0]])
    d = np.diff(loud)
    return np.flatnonzero(d == 1) / sr, np.flatnonzero(d == -1) / sr


def f0_at(audio: np.ndarray, start: float, end: float) -> float:
    x = audio[int(start * SR) : int(end * SR)].astype(np.float64)
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    lo, hi = SR // 400, SR // 60
    return SR / (lo + int(np.argmax(ac[lo:hi])))


def band_energy(audio: np.ndarray, sr: int, lo: float, hi: float) -> float:
    # Hann window on the middle: a clip's abrupt ends would leak into every band
    middle = audio[len(audio) // 8 : -len(audio) // 8].astype(np.float64)
    power = np.abs(np.fft.rfft(middle * np.hanning(len(middle)))) ** 2
    freqs = np.fft.rfftfreq(len(middle), 1 / sr)
    return float(power[(freqs >= lo) & (freqs < hi)].sum())


def speech_power(u: tts.Utterance, audio: np.ndarray) -> float:
    parts = [audio[round(s.start * u.sample_rate) : round(s.end * u.sample_rate)] for s in u.segments if s.phone != SILENCE]
    return float(np.mean(np.concatenate(parts).astype(np.float64) ** 2))


def test_speed_shortens_audio_and_segments_by_the_factor(speech):
    fast = aug.change_speed(speech, 1.2)
    assert fast.duration == pytest.approx(speech.duration / 1.2, abs=1 / speech.sample_rate)
    scale = fast.duration / speech.duration
    assert [s.phone for s in fast.segments] == [s.phone for s in speech.segments]
    for a, b in zip(speech.segments, fast.segments):
        assert b.start == pytest.approx(a.start * scale, abs=1e-9)
        assert b.end == pytest.approx(a.end * scale, abs=1e-9)
    assert fast.segments[-1].end == fast.duration
    # the sounds moved with the labels: the energy envelope is the original's, compressed
    sr = speech.sample_rate
    t = np.arange(0.01, fast.duration - 0.01, 0.005)
    env = lambda x, times, s: np.array([np.sqrt(np.mean(x[int(v * sr) - 80 : int(v * sr) + 80] ** 2)) for v in times * s])
    assert np.corrcoef(env(speech.audio, t, 1 / scale), env(fast.audio, t, 1.0))[0, 1] > 0.95
    # a tone plays 1.2 times higher, like a tape
    tone = aug.change_speed(gated_tone(), 1.2)
    assert f0_at(tone.audio, 0.2, 0.35) == pytest.approx(180, rel=0.02)


def test_pitch_shift_changes_f0_and_keeps_timing():
    tone = gated_tone(150.0)
    on, off = edges(tone.audio, SR)
    for semitones in (-3.0, 4.0):
        shifted = aug.shift_pitch(tone, semitones)
        assert len(shifted.audio) == len(tone.audio) and shifted.segments == tone.segments
        assert f0_at(shifted.audio, 0.3, 0.45) == pytest.approx(150 * 2 ** (semitones / 12), rel=0.02)
        s_on, s_off = edges(shifted.audio, SR)
        assert np.abs(s_on[:3] - on).max() < 0.01 and np.abs(s_off[:3] - off).max() < 0.01, (s_on, s_off)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 30.0])
def test_noise_is_added_at_the_requested_snr(speech, snr_db):
    noisy = aug.add_noise(speech, np.random.default_rng(3), snr_db)
    noise = noisy.audio.astype(np.float64) - speech.audio
    measured = 10 * np.log10(speech_power(speech, speech.audio) / speech_power(speech, noise))
    # the noise is scaled by its power over the whole clip; stationary, it has the same
    # power under the speech up to chance
    assert measured == pytest.approx(snr_db, abs=0.5)
    assert noisy.segments == speech.segments


def test_band_limit_keeps_the_telephone_band_only():
    noise = synthetic(0.1 * np.random.default_rng(0).standard_normal(2 * SR), [(SILENCE, 0, 2.0)])
    phone = aug.band_limit(noise)
    ratio_db = lambda lo, hi: 10 * np.log10(band_energy(phone.audio, SR, lo, hi) / band_energy(noise.audio, SR, lo, hi))
    assert ratio_db(3400, 8000) < -60
    assert ratio_db(0, 300) < -50
    assert abs(ratio_db(500, 3200)) < 0.5
    assert len(phone.audio) == len(noise.audio)


def test_band_limit_adds_no_delay(speech):
    phone = aug.band_limit(speech)
    lag = np.argmax(np.correlate(phone.audio[4000:12000], speech.audio[4000 - 50 : 12000 + 50], "valid")) - 50
    assert lag == 0


def test_reverb_adds_a_tail_but_no_delay():
    tone = gated_tone()
    wet = aug.add_reverb(tone, np.random.default_rng(1), rt60=0.4)
    assert len(wet.audio) == len(tone.audio) and wet.segments == tone.segments
    onset = lambda x: np.flatnonzero(np.abs(x) > 1e-4)[0]
    assert onset(wet.audio) == onset(tone.audio)  # the direct path is at lag 0
    gap = slice(int(0.55 * SR), int(0.65 * SR))  # silent in the dry tone
    assert np.sqrt(np.mean(tone.audio[gap] ** 2)) == 0 and np.sqrt(np.mean(wet.audio[gap] ** 2)) > 0.01


def test_loudness_gains_then_soft_clips():
    tone = gated_tone()
    quiet = aug.loudness(tone, -6.0)
    np.testing.assert_allclose(quiet.audio, tone.audio * 10 ** (-6 / 20), atol=1e-6)
    loud = aug.loudness(tone, 20.0)
    assert np.abs(loud.audio).max() <= 1.0 and np.abs(loud.audio).max() > 0.95


def test_augment_is_deterministic_for_a_seed_and_keeps_segments_consistent(speech):
    everything = aug.AugmentConfig(
        speed_prob=1.0, pitch_prob=1.0, reverb_prob=1.0, noise_prob=1.0, telephone_prob=1.0, loudness_prob=1.0
    )
    a = aug.augment(speech, np.random.default_rng(7), everything)
    b = aug.augment(speech, np.random.default_rng(7), everything)
    c = aug.augment(speech, np.random.default_rng(8), everything)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.segments == b.segments
    assert a.duration != c.duration or not np.array_equal(a.audio, c.audio)
    for u in (a, c):
        assert u.audio.dtype == np.float32 and np.all(np.isfinite(u.audio))
        assert u.segments[0].start == 0 and u.segments[-1].end == pytest.approx(u.duration)
        assert all(x.end == y.start for x, y in zip(u.segments, u.segments[1:]))
        assert [s.phone for s in u.segments] == [s.phone for s in speech.segments]
        assert (u.text, u.engine, u.voice) == (speech.text, speech.engine, speech.voice)
    nothing = aug.AugmentConfig(
        speed_prob=0.0, pitch_prob=0.0, reverb_prob=0.0, noise_prob=0.0, telephone_prob=0.0, loudness_prob=0.0
    )
    assert aug.augment(speech, np.random.default_rng(7), nothing) is speech
