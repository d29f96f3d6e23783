"""Waveform augmentation that keeps the phoneme segments true to the audio.

Synthetic speech is cleaner and more uniform than what users record, so training
audio is varied along the axes real recordings vary: speaking rate, voice pitch,
background noise, room reverberation, a telephone-like band, and level/clipping.
Only the speed change moves sounds in time, and it scales the segments by exactly the
factor the audio was resampled by; every other step leaves timing alone (pitch shift
restores the length it changes and moves a sound by at most its 6 ms alignment
search; reverb and filters are aligned to add no delay).

numpy only: resampling is band-limited through the FFT, the time stretch is WSOLA
(overlap-add with a waveform-similarity search), filters are windowed-sinc FIRs
applied with FFT convolution. vendor_model.audio.resample is not used because it
needs torch, which the data pipeline's workers should not have to import.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from synth.segments import SILENCE, PhonemeSegment
from synth.tts import Utterance

__all__ = [
    "AugmentConfig",
    "augment",
    "change_speed",
    "shift_pitch",
    "add_noise",
    "add_reverb",
    "band_limit",
    "loudness",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Each step runs with its probability, its parameter drawn uniformly from its range."""

    speed_prob: float = 0.5
    speed_range: tuple[float, float] = (0.85, 1.15)  # > 1 is faster
    pitch_prob: float = 0.5
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)
    reverb_prob: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.7)  # seconds for a 60 dB decay
    noise_prob: float = 0.5
    snr_db_range: tuple[float, float] = (5.0, 35.0)
    telephone_prob: float = 0.1
    loudness_prob: float = 0.5
    gain_db_range: tuple[float, float] = (-20.0, 12.0)


def augment(utterance: Utterance, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> Utterance:
    """One random augmentation of `utterance`; the same rng state gives the same result."""
    out = utterance
    # Draw the on/off decisions up front, so whether a step runs does not depend on how
    # many random numbers earlier steps used. The order is a recording chain's: voice,
    # room, background, channel, input level.
    draws = rng.random(6)
    if draws[0] < config.speed_prob:
        out = change_speed(out, rng.uniform(*config.speed_range))
    if draws[1] < config.pitch_prob:
        out = shift_pitch(out, rng.uniform(*config.pitch_semitones))
    if draws[2] < config.reverb_prob:
        out = add_reverb(out, rng, rng.uniform(*config.rt60_range))
    if draws[3] < config.noise_prob:
        out = add_noise(out, rng, rng.uniform(*config.snr_db_range))
    if draws[4] < config.telephone_prob:
        out = band_limit(out)
    if draws[5] < config.loudness_prob:
        out = loudness(out, rng.uniform(*config.gain_db_range))
    return out


def _with_audio(utterance: Utterance, audio: np.ndarray, segments=None) -> Utterance:
    audio = np.asarray(audio, dtype=np.float32)
    audio.setflags(write=False)
    return dataclasses.replace(utterance, audio=audio, segments=segments or utterance.segments)


# --- speed and pitch ------------------------------------------------------------------


def _resample(x: np.ndarray, length: int) -> np.ndarray:
    """Band-limited resampling of `x` to `length` samples through the FFT."""
    # Zero padding keeps the FFT's circular wrap from leaking the end into the start.
    pad = max(64, len(x) // 16)
    padded_out = round((len(x) + pad) * length / len(x))
    spectrum = np.fft.rfft(np.concatenate([x, np.zeros(pad)]))
    bins = padded_out // 2 + 1
    kept = np.zeros(bins, dtype=complex)
    n = min(bins, len(spectrum))
    kept[:n] = spectrum[:n]
    y = np.fft.irfft(kept, padded_out) * (padded_out / (len(x) + pad))
    return y[:length]


def change_speed(utterance: Utterance, factor: float) -> Utterance:
    """Play `factor` times faster, like a tape: shorter, higher, segments scaled to match."""
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    n = len(utterance.audio)
    length = max(1, round(n / factor))
    scale = length / n  # the exact factor applied, after rounding to whole samples
    duration = length / utterance.sample_rate
    segments = tuple(PhonemeSegment(s.phone, s.start * scale, s.end * scale) for s in utterance.segments)
    last = segments[-1]
    segments = segments[:-1] + (PhonemeSegment(last.phone, last.start, duration),)
    return _with_audio(utterance, _resample(utterance.audio.astype(np.float64), length), segments)


def _time_stretch(x: np.ndarray, length: int, sample_rate: int) -> np.ndarray:
    """WSOLA: stretch `x` to `length` samples without changing its pitch.

    Output frames are laid at a fixed hop; each is read from near the proportional
    input position, shifted by up to `tolerance` to continue the previous frame's
    waveform, so pitch periods line up instead of beating. The shift bounds how far
    any sound moves from its proportional time.
    """
    frame = int(0.03 * sample_rate) // 2 * 2
    hop = frame // 2
    tolerance = int(0.006 * sample_rate)  # +-6 ms spans a pitch period down to 83 Hz
    window = np.hanning(frame + 2)[1:-1]  # periodic-style: overlapped at hop it sums to ~1
    ratio = len(x) / length
    lead = tolerance + hop  # room before x for the first frames' search
    padded = np.concatenate([np.zeros(lead), x, np.zeros(frame + 2 * tolerance + hop)])
    out = np.zeros(length + frame)
    norm = np.zeros(length + frame)
    previous = None
    for start in range(0, length, hop):
        # map frame centres, not frame starts: within a frame the sound runs at the
        # input's speed, so anchoring the start would shift sounds by up to half a frame
        nominal = int(round((start + hop) * ratio)) - hop + lead
        if previous is None:
            chosen = nominal
        else:
            target = padded[previous + hop : previous + hop + frame]
            region = padded[nominal - tolerance : nominal + tolerance + frame]
            score = np.correlate(region, target, mode="valid")
            chosen = nominal - tolerance + int(np.argmax(score))
        out[start : start + frame] += padded[chosen : chosen + frame] * window
        norm[start : start + frame] += window
        previous = chosen
    return out[:length] / np.maximum(norm[:length], 1e-3)


def shift_pitch(utterance: Utterance, semitones: float) -> Utterance:
    """Raise (or lower) the voice by `semitones` with every sound kept at its time."""
    if abs(semitones) > 12:
        raise ValueError(f"pitch shifts beyond an octave are not supported, got {semitones} semitones")
    ratio = 2.0 ** (semitones / 12.0)
    n = len(utterance.audio)
    higher = _resample(utterance.audio.astype(np.float64), max(1, round(n / ratio)))
    return _with_audio(utterance, _time_stretch(higher, n, utterance.sample_rate))


# --- room, noise, channel -------------------------------------------------------------


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    size = len(x) + len(h) - 1
    nfft = 1 << (size - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[:size]


def _speech_power(utterance: Utterance) -> float:
    """Mean power over the non-silent segments (the whole clip if there are none), so
    the SNR does not depend on how much leading and trailing silence a clip has."""
    sr, x = utterance.sample_rate, utterance.audio.astype(np.float64)
    spans = [x[round(s.start * sr) : round(s.end * sr)] for s in utterance.segments if s.phone != SILENCE]
    speech = np.concatenate(spans) if spans else x
    return float(np.mean(speech**2)) if speech.size else 0.0


def add_noise(utterance: Utterance, rng: np.random.Generator, snr_db: float) -> Utterance:
    """Add noise at `snr_db` relative to the speech; its colour is random, from white
    (hiss) to brown (rumble), as spectral slope 0..2 (power ~ 1/f^slope)."""
    x = utterance.audio.astype(np.float64)
    spectrum = np.fft.rfft(rng.standard_normal(len(x)))
    freqs = np.fft.rfftfreq(len(x), 1.0 / utterance.sample_rate)
    slope = rng.uniform(0.0, 2.0)
    spectrum *= np.maximum(freqs, 20.0) ** (-slope / 2)  # 20 Hz floor keeps DC finite
    noise = np.fft.irfft(spectrum, len(x))
    scale = np.sqrt(_speech_power(utterance) / (10 ** (snr_db / 10)) / max(np.mean(noise**2), 1e-20))
    return _with_audio(utterance, x + scale * noise)


def add_reverb(utterance: Utterance, rng: np.random.Generator, rt60: float) -> Utterance:
    """Convolve with a synthetic room: a direct path plus exponentially decaying noise
    (energy down 60 dB after `rt60` s). The direct path sits at lag 0, so nothing is
    delayed; the reverberant tail past the end of the clip is dropped."""
    sr = utterance.sample_rate
    t = np.arange(int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * np.exp(-3 * np.log(10) * t / rt60)  # amplitude -60 dB at rt60
    # direct-to-reverberant energy between 0 and 10 dB: from a large hall to a small room
    drr = 10 ** (rng.uniform(0.0, 10.0) / 10)
    tail *= np.sqrt(1.0 / (drr * np.sum(tail[1:] ** 2)))
    tail[0] = 1.0
    x = utterance.audio.astype(np.float64)
    y = _fft_convolve(x, tail)[: len(x)]
    y *= np.sqrt(np.mean(x**2) / max(np.mean(y**2), 1e-20))  # same level as the dry clip
    return _with_audio(utterance, y)


def _lowpass_taps(cutoff_hz: float, sample_rate: int, taps: int) -> np.ndarray:
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff_hz / sample_rate * np.sinc(2 * cutoff_hz / sample_rate * n)
    return h * np.blackman(taps)


def band_limit(utterance: Utterance, low_hz: float = 300.0, high_hz: float = 3400.0) -> Utterance:
    """Telephone band: a linear-phase band-pass FIR (Blackman-windowed sinc, > 70 dB
    stop band), applied centred so it adds no delay."""
    sr = utterance.sample_rate
    # transition band of about 120 Hz: Blackman needs ~5.5 / (width / rate) taps
    taps = int(5.5 * sr / 120) | 1
    edge = 60.0  # pass band edges sit half a transition inside the cut-offs
    high = min(high_hz - edge, sr / 2 - 2 * edge)
    h = _lowpass_taps(high, sr, taps) - _lowpass_taps(low_hz + edge, sr, taps)
    x = utterance.audio.astype(np.float64)
    y = _fft_convolve(x, h)[taps // 2 : taps // 2 + len(x)]
    return _with_audio(utterance, y)


def loudness(utterance: Utterance, gain_db: float, knee: float = 0.5) -> Utterance:
    """Apply `gain_db`, then soft-clip: linear up to `knee`, above it a tanh curve that
    meets the linear part smoothly and never exceeds 1, like an overdriven input."""
    y = utterance.audio.astype(np.float64) * 10 ** (gain_db / 20)
    over = np.abs(y) > knee
    y[over] = np.sign(y[over]) * (knee + (1 - knee) * np.tanh((np.abs(y[over]) - knee) / (1 - knee)))
    return _with_audio(utterance, y)
