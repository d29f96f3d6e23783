"""Audio input: read a clip, mix it to mono, resample it to 16 kHz, normalise it.

Everything the speech encoder sees goes through `load_audio` and then
`normalize_waveform`. Bad input raises `AudioError` with a message an artist can act on.
The resampler is our own (no scipy/librosa): a Kaiser-windowed sinc low-pass run as a
polyphase filter with a single strided `conv1d` per chunk.
"""
from __future__ import annotations

import functools
import math
import os
from fractions import Fraction
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from .config import SAMPLE_RATE

__all__ = ["AudioError", "MIN_DURATION_S", "SILENCE_PEAK", "resample", "load_audio", "normalize_waveform"]

MIN_DURATION_S = 0.1  # shorter clips give the encoder less than 5 feature frames
SILENCE_PEAK = 1e-4  # peak amplitude below this is treated as "no sound" (about -80 dBFS)

# Filter design. The cutoff sits a little below the lower Nyquist rate so the transition
# band ends near Nyquist; 24 zero crossings per side with beta 8 give > 75 dB stop band.
_ROLLOFF = 0.95
_ZERO_CROSSINGS = 24
_KAISER_BETA = 8.0
# Upper bound on the elements one conv1d call touches (input window x taps), so that
# minutes-long clips are processed in pieces and memory stays bounded.
_CHUNK_ELEMENTS = 1 << 23
# The filter bank holds about L x M taps. Every common rate (8k ... 192k, the 11.025k
# family, 47.952k) is exact well within this; an odd rate such as 44101 Hz would need
# gigabytes, so its ratio is approximated instead. The error is typically < 1e-6 and at
# worst ~2e-4 (rates within 0.03% of 16 kHz), the same order as a sound card's clock error.
_MAX_BANK = 1 << 22

AudioSource = Union[str, "os.PathLike[str]", np.ndarray]


class AudioError(ValueError):
    """The audio given to the model cannot be used; the message says why and what to do."""


@functools.lru_cache(maxsize=4)
def _filter_bank(up: int, down: int) -> tuple[torch.Tensor, int]:
    """Polyphase taps for resampling by up/down, shape [up, 1, K], and the left padding.

    Output sample n = q*up + p lies at input time t = q*down + p*down/up. Phase p is
    therefore the same low-pass kernel evaluated at offsets p*down/up - j, and the
    integer part of each offset is folded into that phase's taps, so one strided conv
    over the padded input yields all phases at once.
    """
    cutoff = min(1.0, up / down) * _ROLLOFF  # in units of the input Nyquist rate
    half_width = _ZERO_CROSSINGS / cutoff  # kernel half length, in input samples
    pad = math.ceil(half_width)
    last_offset = (up - 1) * down / up
    taps = pad + math.floor(last_offset + half_width) + 1

    offsets = np.arange(up)[:, None] * down / up  # [up, 1]
    j = np.arange(taps)[None, :] - pad  # input sample relative to q*down
    t = offsets - j  # distance from output time to input sample, in input samples
    u = np.clip(t / half_width, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - u * u)) / np.i0(_KAISER_BETA)
    kernel = cutoff * np.sinc(cutoff * t) * window * (np.abs(t) < half_width)
    # Each phase must pass DC with unit gain; normalising removes the tiny per-phase
    # ripple that would otherwise show up as a faint tone at the input rate.
    kernel /= kernel.sum(axis=1, keepdims=True)
    return torch.from_numpy(kernel.astype(np.float32))[:, None, :], pad


def _check_rate(name: str, rate: object) -> int:
    if isinstance(rate, (int, np.integer)) and not isinstance(rate, bool) and rate > 0:
        return int(rate)
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer() and rate > 0:
        return int(rate)  # 48000.0 is fine
    raise AudioError(f"{name} must be a positive whole number of Hz (e.g. 48000), got {rate!r}.")


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Resample a 1-D signal from `src_rate` to `dst_rate` Hz with an anti-aliasing filter.

    Returns float32 of length ceil(len(x) * dst_rate / src_rate); a copy when the rates match.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"resample expects a 1-D (mono) signal, got an array of shape {x.shape}.")
    src_rate, dst_rate = _check_rate("src_rate", src_rate), _check_rate("dst_rate", dst_rate)
    if src_rate == dst_rate:
        return x.copy()
    n_out = -(-len(x) * dst_rate // src_rate)  # ceil without float rounding
    if n_out == 0:
        return np.zeros(0, dtype=np.float32)

    ratio = Fraction(dst_rate, src_rate)  # = L / M in lowest terms (the gcd step)
    if ratio.numerator * ratio.denominator > _MAX_BANK:
        ratio = ratio.limit_denominator(math.isqrt(int(_MAX_BANK / ratio)))
    up, down = ratio.numerator, ratio.denominator

    weight, pad = _filter_bank(up, down)
    taps = weight.shape[-1]
    n_frames = -(-n_out // up)  # conv output positions; each yields `up` samples
    padded_len = (n_frames - 1) * down + taps
    padded = np.zeros(padded_len, dtype=np.float32)
    n_copy = min(len(x), padded_len - pad)
    padded[pad : pad + n_copy] = x[:n_copy]
    signal = torch.from_numpy(padded)

    # Frames per conv call: bound the unfolded input (frames x taps) and output (frames x up).
    frames_per_chunk = max(1, _CHUNK_ELEMENTS // max(taps, up))
    out = np.empty(n_frames * up, dtype=np.float32)
    with torch.inference_mode():
        for f0 in range(0, n_frames, frames_per_chunk):
            f1 = min(n_frames, f0 + frames_per_chunk)
            piece = signal[f0 * down : (f1 - 1) * down + taps]
            y = F.conv1d(piece[None, None], weight, stride=down)  # [1, up, frames]
            out[f0 * up : f1 * up] = y[0].T.reshape(-1).numpy()  # interleave the phases
    return out[:n_out]


def _to_float(a: np.ndarray) -> np.ndarray:
    """Integer PCM to float in [-1, 1]; float arrays pass through as float32."""
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise AudioError(f"Audio samples must be numbers (float or integer PCM), got dtype {a.dtype}.")
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    info = np.iinfo(a.dtype)
    if info.min == 0:  # unsigned PCM (e.g. 8-bit WAV) is centred on the mid value
        mid = (int(info.max) + 1) / 2
        return ((a.astype(np.float64) - mid) / mid).astype(np.float32)
    return (a.astype(np.float64) / -float(info.min)).astype(np.float32)


def _read_file(path: str) -> tuple[np.ndarray, int]:
    try:
        import soundfile as sf  # optional until a file is actually read
    except ImportError as exc:
        raise ImportError("Reading audio files needs the 'soundfile' package (pip install soundfile).") from exc
    if not os.path.exists(path):
        raise AudioError(f"Audio file not found: '{path}'. Check the path and that the file still exists.")
    if os.path.isdir(path):
        raise AudioError(f"'{path}' is a folder, not an audio file. Choose a WAV, FLAC or OGG file.")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise AudioError(f"Could not read audio file '{path}': {reason}. Use a WAV, FLAC or OGG file.") from exc
    return data, int(rate)


def load_audio(source: AudioSource, sample_rate: int | None = None) -> np.ndarray:
    """Load speech as float32 mono at 16 kHz.

    `source` is a path to any file soundfile reads (its header gives the rate;
    `sample_rate` is ignored) or an array, 1-D mono or 2-D [samples, channels], whose
    rate must be given as `sample_rate`. Channels are averaged; integer PCM is scaled
    to [-1, 1].
    """
    if isinstance(source, (str, os.PathLike)):
        name = f"Audio file '{os.fspath(source)}'"
        data, rate = _read_file(os.fspath(source))
    else:
        name = "Audio array"
        if sample_rate is None:
            raise AudioError("sample_rate is required when audio is passed as an array; pass the rate it was recorded at, e.g. sample_rate=48000.")
        rate = _check_rate("sample_rate", sample_rate)
        try:
            array = np.asarray(source)
        except (TypeError, ValueError) as exc:  # e.g. a ragged list of lists
            raise AudioError(f"{name} could not be turned into a numeric array: {exc}. Pass a numpy array.") from exc
        data = _to_float(array)
        if data.ndim == 1:
            data = data[:, None]
        elif data.ndim != 2:
            raise AudioError(f"{name} must be 1-D (mono) or 2-D [samples, channels], got shape {data.shape}.")
        elif data.shape[1] > data.shape[0] > 0:
            raise AudioError(f"{name} has shape {data.shape}, which looks like [channels, samples]; pass it transposed as [samples, channels].")

    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{name} is empty (it contains no samples). Choose a clip with speech in it.")
    if not np.isfinite(data).all():
        raise AudioError(f"{name} contains NaN or infinite values; re-export the clip.")

    mono = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1)
    if np.abs(mono).max() < SILENCE_PEAK:
        raise AudioError(f"{name} is silent (no sound above {SILENCE_PEAK:g} peak). Check the track or strip volume and that it is not muted.")
    mono = resample(mono, rate, SAMPLE_RATE)
    duration = len(mono) / SAMPLE_RATE
    if duration < MIN_DURATION_S:
        raise AudioError(f"{name} is too short: {duration:.3f} s long, but at least {MIN_DURATION_S} s of speech is needed.")
    return mono


def normalize_waveform(x: np.ndarray) -> np.ndarray:
    """wav2vec 2.0 feature-extractor normalisation: zero mean, unit (population) variance."""
    x64 = np.asarray(x, dtype=np.float64)
    if x64.size == 0:
        raise AudioError("Cannot normalise an empty waveform; it contains no samples.")
    return ((x64 - x64.mean()) / np.sqrt(x64.var() + 1e-7)).astype(np.float32)
