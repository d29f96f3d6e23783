"""Forced alignment of English speech to its transcript, down to phones, with PocketSphinx 5.

    align("clip.wav", "he was not an ill disposed young man")
        -> [PhoneSegment('sil', 0.0, 0.21, ''), PhoneSegment('hh', 0.21, 0.27, 'he'), ...]

Two passes, as PocketSphinx 5 requires for sub-word timings: `Decoder.set_align_text` runs a
word-level alignment (optional silences between words, pronunciation variants chosen by the
decoder), then `Decoder.set_alignment` re-decodes the audio restricted to that word and phone
sequence and `get_alignment()` returns word -> phone -> HMM-state timings at 100 frames/s.
The US-English acoustic model and CMUdict ship inside the pocketsphinx wheel.

Segments come back contiguous, ordered and covering the whole clip: silences and fillers
('SIL', '+NSN+', '+SPN+', ...) become 'sil', adjacent silences are merged, and any gap (the
decoder may stop a frame before the end) is filled with silence.

pocketsphinx is an optional dependency (the `train` extra): it is imported only when aligning.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["AlignmentError", "PhoneSegment", "WordSegment", "ForcedAlignment", "normalize_transcript",
           "read_speech_pcm16", "align", "align_full"]

SAMPLE_RATE = 16_000  # the bundled acoustic model is trained on 16 kHz speech
SILENCE = "sil"
_WORD_VARIANT = re.compile(r"\(\d+\)$")  # CMUdict alternative pronunciations: "was(2)"
_SILENCE_WORDS = {"<s>", "</s>", "<sil>"}


class AlignmentError(RuntimeError):
    """The transcript could not be aligned to the audio (unknown words, or no path found)."""


@dataclass(frozen=True)
class PhoneSegment:
    phone: str  # ARPAbet, lowercase, no stress digits; 'sil' for silence and non-speech fillers
    start: float  # seconds
    end: float  # seconds
    word: str = ""  # transcript word this phone belongs to ('' for silence)


@dataclass(frozen=True)
class WordSegment:
    word: str  # as in the transcript (pronunciation variant suffix removed)
    start: float
    end: float


@dataclass(frozen=True)
class ForcedAlignment:
    words: tuple[WordSegment, ...]  # transcript words only, in order
    phones: tuple[PhoneSegment, ...]  # contiguous, covering [0, duration]
    duration: float  # seconds of audio aligned
    pronunciations: tuple[str, ...]  # dictionary entry chosen per word, e.g. "was(2)"


def normalize_transcript(text: str) -> list[str]:
    """Lowercase words for CMUdict: sentence markers and an utterance id in parentheses dropped,
    punctuation other than in-word apostrophes removed."""
    text = re.sub(r"\([^)]*\)\s*$", " ", text)  # "(utt-id)" at the end of a Sphinx transcription line
    words = []
    for token in text.lower().split():
        if token in ("<s>", "</s>"):
            continue
        token = re.sub(r"[^a-z0-9']", "", token).strip("'")
        if token:
            words.append(token)
    return words


def read_speech_pcm16(audio: str | os.PathLike) -> np.ndarray:
    """(S,) int16 mono at 16 kHz. Headerless `.raw` files are read as 16 kHz 16-bit little-endian
    mono (the Sphinx convention); anything soundfile reads is mixed down and resampled."""
    path = Path(audio)
    if path.suffix.lower() == ".raw":
        return np.fromfile(path, dtype="<i2")
    from .audio import load_audio  # torch-based resampler; only needed for headered files

    samples = load_audio(path)  # float32 mono at 16 kHz in [-1, 1]
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def _decoder():
    from pocketsphinx import Decoder, get_model_path

    return Decoder(
        hmm=get_model_path("en-us/en-us"),
        dict=get_model_path("en-us/cmudict-en-us.dict"),
        lm=None,  # alignment only: no language model to load
        samprate=SAMPLE_RATE,
        loglevel="ERROR",
    )


def _decode(decoder, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def _phone_name(name: str) -> str:
    """'SIL' and filler phones like '+NSN+' / '+SPN+' / '+BREATH+' are non-speech: 'sil'."""
    return SILENCE if name == "SIL" or name.startswith("+") else name.lower()


def _contiguous(raw: list[PhoneSegment], duration: float) -> list[PhoneSegment]:
    """Fill gaps with silence, merge neighbouring silences, and make the last segment end at
    `duration`: callers can then index frames without holes."""
    filled: list[PhoneSegment] = []
    cursor = 0.0
    for seg in raw:
        if seg.start > cursor + 1e-9:
            filled.append(PhoneSegment(SILENCE, cursor, seg.start))
        filled.append(PhoneSegment(seg.phone, max(seg.start, cursor), seg.end, seg.word))
        cursor = max(cursor, seg.end)
    if cursor < duration - 1e-9:
        filled.append(PhoneSegment(SILENCE, cursor, duration))
    merged: list[PhoneSegment] = []
    for seg in filled:
        if seg.end <= seg.start:
            continue
        if merged and seg.phone == SILENCE and merged[-1].phone == SILENCE:
            merged[-1] = PhoneSegment(SILENCE, merged[-1].start, seg.end)
        else:
            merged.append(seg)
    if merged and merged[-1].end > duration:  # an alignment frame past the last sample
        last = merged[-1]
        merged[-1] = PhoneSegment(last.phone, last.start, max(duration, last.start), last.word)
    return merged


def align_full(audio: str | os.PathLike, transcript: str) -> ForcedAlignment:
    """Word and phone timings of `transcript` in the speech file `audio` (wav/flac/... or
    16 kHz `.raw`). Raises AlignmentError for words missing from CMUdict or when the decoder
    finds no path (e.g. the transcript does not match the audio at all)."""
    words = normalize_transcript(transcript)
    if not words:
        raise AlignmentError("the transcript has no words")
    pcm = read_speech_pcm16(audio)
    duration = len(pcm) / SAMPLE_RATE
    decoder = _decoder()
    unknown = sorted({w for w in words if decoder.lookup_word(w) is None})
    if unknown:
        raise AlignmentError(f"words not in the pronunciation dictionary: {', '.join(unknown)}")

    data = pcm.astype("<i2").tobytes()
    decoder.set_align_text(" ".join(words))  # pass 1: words, optional silences, pronunciations
    _decode(decoder, data)
    if decoder.hyp() is None:
        raise AlignmentError(f"no word alignment found for {os.fspath(audio)}")
    decoder.set_alignment()  # pass 2: re-decode along that path, keeping phone and state timings
    _decode(decoder, data)
    alignment = decoder.get_alignment()
    if alignment is None:
        raise AlignmentError(f"no phone alignment found for {os.fspath(audio)}")

    frate = float(decoder.config["frate"])  # 100 frames per second by default
    word_segments, raw_phones, pronunciations = [], [], []
    for entry in alignment:
        start, end = entry.start / frate, (entry.start + entry.duration) / frate
        if entry.name in _SILENCE_WORDS or entry.name.startswith("["):  # silence, or a noise word
            raw_phones.append(PhoneSegment(SILENCE, start, end))
            continue
        word = _WORD_VARIANT.sub("", entry.name)
        word_segments.append(WordSegment(word, start, end))
        pronunciations.append(entry.name)
        for phone in entry:
            raw_phones.append(PhoneSegment(
                _phone_name(phone.name), phone.start / frate, (phone.start + phone.duration) / frate, word))
    if [w.word for w in word_segments] != words:
        raise AlignmentError(f"the alignment's words {[w.word for w in word_segments]} differ from the transcript {words}")
    return ForcedAlignment(tuple(word_segments), tuple(_contiguous(raw_phones, duration)), duration, tuple(pronunciations))


def align(audio: str | os.PathLike, transcript: str) -> list[PhoneSegment]:
    """Phone segments (ARPAbet lowercase, seconds) of `transcript` in `audio`; see align_full."""
    return list(align_full(audio, transcript).phones)
