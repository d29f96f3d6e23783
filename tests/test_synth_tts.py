"""Offline TTS engines (`synth.tts`) and their phoneme maps (`synth.phonemes`): audio plus
ARPAbet segments that cover the clip and line up with the sounds they label.

The engines are Debian packages that ./run and CI install, so these tests use them
rather than skip."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from synth import corpus, tts
from synth.phonemes import (
    ESPEAK_TO_ARPABET,
    espeak_is_american,
    espeak_to_arpabet,
    flite_to_arpabet,
    unmapped_symbols,
)
from synth.segments import PHONES, SILENCE

ALL_VOICES = (
    [(tts.ESPEAK, v) for v in tts.ESPEAK_VOICES]
    + [(tts.FLITE, v) for v in tts.FLITE_VOICES]
    + [(tts.FESTIVAL, v) for v in tts.FESTIVAL_VOICES]
)
VOWELS = {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"}


def vocabulary_text() -> str:
    """Every word the corpus grammar can produce, as short sentences: it exercises the
    engines' lexicons on the whole corpus with a fraction of the audio."""
    words = [w for group in corpus.WORDS.values() for w in group]
    words += [w for pair in corpus.VERBS for w in pair]
    words += re.sub(r"\{\w+\}|[^A-Za-z' ]", " ", " ".join(corpus.TEMPLATES)).split()
    return " ".join(" ".join(words[i : i + 8]) + "." for i in range(0, len(words), 8))


def frame_db(audio: np.ndarray, rate: int, hop_s: float = 0.002, win_s: float = 0.005):
    """Short-time energy in dB below the loudest frame, and the frame hop in seconds."""
    hop, win = int(rate * hop_s), int(rate * win_s)
    x = audio.astype(np.float64)
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    starts = np.arange(0, len(x) - win, hop)
    db = 10 * np.log10((c[starts + win] - c[starts]) / win + 1e-12)
    return db - db.max(), hop / rate


def check_segments(u: tts.Utterance) -> None:
    segs = u.segments
    assert segs[0].start == 0.0 and segs[-1].end == pytest.approx(u.duration, abs=1e-9)
    for a, b in zip(segs, segs[1:]):
        assert a.end == b.start, (a, b)  # contiguous, no gaps or overlaps
        assert a.phone != b.phone, (a, b)  # repeats are merged
    assert all(s.end > s.start and s.phone in PHONES for s in segs)


@pytest.mark.parametrize("engine, voice", ALL_VOICES, ids=[f"{e}:{v}" for e, v in ALL_VOICES])
def test_every_voice_speaks_with_contiguous_arpabet_segments(engine, voice):
    u = tts.synthesize("The brave fox jumped over my lazy dog.", engine, voice)
    assert (u.engine, u.voice, u.text) == (engine, voice, "The brave fox jumped over my lazy dog.")
    assert u.audio.dtype == np.float32 and u.audio.ndim == 1 and not u.audio.flags.writeable
    assert 1.0 < u.duration < 5.0
    assert np.sqrt(np.mean(u.audio**2)) > 0.01 and np.abs(u.audio).max() <= 1.0
    check_segments(u)
    speech = [s.phone for s in u.segments if s.phone != SILENCE]
    # the lip and lip-teeth closures are all there ("the" is "d@" in Caribbean English)
    for phone in ("b", "r", "f", "k", "s", "jh", "m", "p", "v", "z", "d", "g"):
        assert phone in speech, (phone, speech)
    assert u.segments[-1].phone == SILENCE


def test_voice_list_and_held_out_voices():
    voices = tts.list_voices()
    assert {engine for engine, _ in voices} == set(tts.ENGINES)
    assert set(voices) == set(ALL_VOICES)  # every voice we configure works here
    held_out = tts.HELD_OUT_VOICES
    assert len(held_out) >= 2 and len({engine for engine, _ in held_out}) >= 2
    assert held_out <= set(voices)
    assert not held_out & set(tts.training_voices())
    assert set(tts.training_voices()) | held_out == set(voices)


def test_unknown_engine_or_voice_is_reported_not_substituted():
    with pytest.raises(tts.EngineUnavailable):
        tts.synthesize("hello", "sapi", "david")
    # flite would silently speak an unknown voice with kal; we refuse instead
    for engine in tts.ENGINES:
        with pytest.raises(tts.EngineUnavailable, match="no voice"):
            tts.synthesize("hello", engine, "nosuchvoice")
    with pytest.raises(tts.SynthesisError):
        tts.synthesize("   ", tts.FLITE, "kal")
    with pytest.raises(ValueError):
        tts.synthesize("hello", tts.FLITE, "kal", pitch=60)


def test_rate_speaks_faster_and_pitch_changes_espeak():
    slow = tts.synthesize("Seven purple waves.", tts.FLITE, "kal16", rate=0.8)
    fast = tts.synthesize("Seven purple waves.", tts.FLITE, "kal16", rate=1.25)
    assert fast.duration < 0.85 * slow.duration
    fest = [tts.synthesize("Seven purple waves.", tts.FESTIVAL, "kal_diphone", rate=r).duration for r in (0.8, 1.25)]
    assert fest[1] < 0.85 * fest[0]
    low = tts.synthesize("Seven purple waves.", tts.ESPEAK, "en-us", pitch=20)
    high = tts.synthesize("Seven purple waves.", tts.ESPEAK, "en-us", pitch=80)
    assert not np.array_equal(low.audio[: len(high.audio)], high.audio[: len(low.audio)])
    assert [s.phone for s in low.segments] == [s.phone for s in high.segments]


def closure_and_release(u: tts.Utterance, segment, context_s: float = 0.04):
    """The stop closure near `segment`: the longest run of frames 30 dB below the
    surrounding speech, as (start, end) seconds, and the loudest frame (dB) between the
    closure's end and the segment's end, where the release burst should be."""
    db, hop = frame_db(u.audio, u.sample_rate)
    lo, hi = int((segment.start - context_s) / hop), int((segment.end + context_s) / hop)
    quiet = np.concatenate([[False], db[lo:hi] < np.percentile(db[lo:hi], 90) - 30, [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(int)))
    a, b = max(zip(edges[::2], edges[1::2]), key=lambda r: r[1] - r[0])
    start, end = (lo + a) * hop, (lo + b) * hop
    release = db[lo + b : int(segment.end / hop)]
    return (start, end), (release.max() - np.percentile(db[lo:hi], 90) if release.size else -np.inf)


@pytest.mark.parametrize("engine, voice", [(tts.ESPEAK, "en-us"), (tts.FLITE, "slt"), (tts.FESTIVAL, "kal_diphone")])
def test_p_segments_hold_the_lip_closure_and_burst(engine, voice):
    """Each p between vowels is a near-silent closure, then a burst. Whatever the engine,
    the closure lies in the p's segment (the lips are shut then) and so does the burst."""
    u = tts.synthesize("Papa, a puppy, a paper.", engine, voice)
    segs = u.segments
    checked = 0
    for before, p, after in zip(segs, segs[1:], segs[2:]):
        if p.phone != "p" or before.phone not in VOWELS or after.phone not in VOWELS:
            continue
        (start, end), release_db = closure_and_release(u, p)
        assert end - start > 0.02, (engine, p, (start, end))
        inside = max(0.0, min(end, p.end) - max(start, p.start)) / (end - start)
        assert inside > 0.9, (engine, p, (start, end))
        assert release_db > -25, (engine, p, "no release burst before the segment ends")
        checked += 1
    assert checked >= 4


def test_espeak_stop_boundaries_are_sample_exact():
    """espeak writes a voiceless stop's closure as digital silence. After our fix-up the
    segment starts on the first silent sample and the burst starts inside the segment."""
    u = tts.synthesize("Papa kept a pocket atop a teapot.", tts.ESPEAK, "en-us")
    sr, x = u.sample_rate, u.audio
    checked = 0
    for prev, stop in zip(u.segments, u.segments[1:]):
        if stop.phone not in ("p", "t", "k") or prev.phone not in VOWELS:
            continue
        first = round(stop.start * sr)
        assert x[first - 1] != 0 and x[first] == 0, stop
        closure = first + int(np.argmax(x[first:] != 0))
        assert 0.02 < (closure - first) / sr < 0.1 and closure < round(stop.end * sr), stop
        checked += 1
    assert checked >= 5


def test_maps_cover_every_symbol_the_engines_emit_on_the_corpus():
    before = unmapped_symbols()
    text = vocabulary_text() + " " + " ".join(corpus.sentences(60, seed=1))
    # espeak's transcription, every voice (cheap: no audio)
    for voice in tts.ESPEAK_VOICES:
        american = espeak_is_american(voice)
        for symbol in tts.espeak_transcribe(text, voice):
            espeak_to_arpabet(symbol, american=american)
    # phoneme events of a real synthesis, American and British tables; all flite voices
    # share the cmulex lexicon and phone set, and festival has one voice
    for engine, voice in [(tts.ESPEAK, "en-us"), (tts.ESPEAK, "en-gb-x-rp+m3"), (tts.FLITE, "kal16"),
                          (tts.FESTIVAL, "kal_diphone")]:
        u = tts.synthesize(text, engine, voice)
        check_segments(u)
        assert len({s.phone for s in u.segments}) == len(PHONES), (engine, set(PHONES) - {s.phone for s in u.segments})
    assert unmapped_symbols() == before


def test_espeak_table_follows_dialect():
    # "start": British a long open vowel, American the same vowel plus r
    assert espeak_to_arpabet("A@") == ("aa",)
    assert espeak_to_arpabet("'A@", american=True) == ("aa", "r")
    assert espeak_to_arpabet("@L") == ("ah", "l")
    assert espeak_to_arpabet(";") == ()
    assert all(p in PHONES for phones in ESPEAK_TO_ARPABET.values() for p in phones)


def test_unknown_symbols_fall_back_to_the_nearest_and_are_counted(caplog):
    before = unmapped_symbols()
    assert espeak_to_arpabet("l/9") == ("l",)  # a variant of l we have never seen
    assert espeak_to_arpabet("'I3#") == ("ih",)
    with caplog.at_level(logging.WARNING, logger="synth.phonemes"):
        assert espeak_to_arpabet("Q~") == (SILENCE,)
    assert "'Q~' has no ARPAbet entry" in caplog.text
    assert flite_to_arpabet("xx") == (SILENCE,)
    assert flite_to_arpabet("axr") == ("er",) and flite_to_arpabet("pau") == (SILENCE,)
    after = unmapped_symbols()
    assert after[("espeak-ng", "l/9")] == before[("espeak-ng", "l/9")] + 1
    assert after[("flite", "xx")] == before[("flite", "xx")] + 1
    assert ("flite", "axr") not in after
