"""Offline speech synthesis with phoneme timings: espeak-ng, flite and festival.

Every engine returns an `Utterance`: the waveform and ARPAbet segments that are
contiguous and cover exactly [0, duration], with silence labelled 'sil'. That is the
contract the rig and the training data rely on; the engines' own outputs need
per-engine fixes to meet it, each noted where it is made:

* espeak-ng runs in-process through libespeak-ng so that phoneme events carry
  sample-exact positions. espeak emits the silent closure of a stop *before* the
  stop's event, so the closure would be labelled with the preceding vowel while the
  lips are already shut; we hand that silence back to the stop.
* flite prints each phone's end time; a voice name it does not know silently falls
  back to kal, so voices are checked against `flite -lv` first.
* festival saves end times in a .segs file next to the wave.

Voices in `HELD_OUT_VOICES` are listed by `list_voices()` but never returned by
`training_voices()`, so evaluation can measure generalisation to an unseen speaker.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import soundfile as sf

from synth.phonemes import espeak_is_american, espeak_to_arpabet, festival_to_arpabet, flite_to_arpabet
from synth.segments import SILENCE, PhonemeSegment, validate_segments

__all__ = [
    "Utterance",
    "EngineUnavailable",
    "SynthesisError",
    "ENGINES",
    "ESPEAK_VOICES",
    "FLITE_VOICES",
    "FESTIVAL_VOICES",
    "HELD_OUT_VOICES",
    "synthesize",
    "espeak_transcribe",
    "list_voices",
    "training_voices",
]

ESPEAK, FLITE, FESTIVAL = "espeak-ng", "flite", "festival"
ENGINES = (ESPEAK, FLITE, FESTIVAL)

# language+variant. Only variants without the 'echo' setting: echo fills a stop's
# closure with a copy of earlier sound, so the closure could not be found and handed
# back to the stop. Reverberation comes later, from synth.augment, on top of labels
# that are already right.
ESPEAK_VOICES = (
    "en-us",
    "en-us+f1",
    "en+Annie",
    "en-gb-x-rp+m3",
    "en-gb-scotland+m7",
    "en-us+klatt4",
    "en-029+linda",
    "en-us-nyc+steph",
)
# awb_time is a limited-domain talking clock; it can only say times of day.
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone",)
HELD_OUT_VOICES = frozenset({(FLITE, "rms"), (ESPEAK, "en-us-nyc+steph")})

_STOPS = frozenset({"p", "b", "t", "d", "k", "g", "ch", "jh"})
_ESPEAK_RATE_WPM = 175  # espeak's default speaking rate


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise is not equality
class Utterance:
    """Speech and its phoneme timings; `segments` cover [0, duration] without gaps."""

    audio: np.ndarray  # float32, mono, in [-1, 1]
    sample_rate: int
    segments: tuple[PhonemeSegment, ...]
    text: str
    engine: str
    voice: str

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


class EngineUnavailable(RuntimeError):
    """The engine or voice is not installed on this machine."""


class SynthesisError(RuntimeError):
    """The engine ran but did not produce audio and timings for this text."""


def synthesize(text: str, engine: str, voice: str, *, rate: float = 1.0, pitch: int | None = None) -> Utterance:
    """Speak `text` with one engine and voice.

    `rate` scales the speaking rate (> 1 is faster), through the engine's own duration
    model, so phone lengths vary naturally rather than uniformly. `pitch` is espeak-ng's
    0-100 pitch setting (50 is the voice's own); the other engines have no equivalent,
    so vary their pitch with `synth.augment` instead.
    """
    if not text.strip():
        raise SynthesisError("nothing to say: the text is empty")
    if not 0.5 <= rate <= 2.0:
        raise ValueError(f"rate must be within [0.5, 2], got {rate}")
    if engine not in _SYNTHESIZERS:
        raise EngineUnavailable(f"unknown engine {engine!r}; expected one of {ENGINES}")
    if pitch is None:
        return _SYNTHESIZERS[engine](text, voice, rate)
    if engine != ESPEAK or not 0 <= pitch <= 100:
        raise ValueError(f"pitch must be an espeak-ng setting within [0, 100], got {pitch} for {engine}")
    return _espeak_synth(text, voice, rate, pitch)


@functools.cache
def list_voices() -> tuple[tuple[str, str], ...]:
    """(engine, voice) pairs that synthesise here, held-out voices included."""
    working = []
    for engine, voices in ((ESPEAK, ESPEAK_VOICES), (FLITE, FLITE_VOICES), (FESTIVAL, FESTIVAL_VOICES)):
        for voice in voices:
            try:
                synthesize("a test", engine, voice)
            except (EngineUnavailable, SynthesisError):
                continue
            working.append((engine, voice))
    return tuple(working)


def training_voices() -> tuple[tuple[str, str], ...]:
    return tuple(v for v in list_voices() if v not in HELD_OUT_VOICES)


# --- shared segment clean-up -------------------------------------------------------


def _segments(
    labels: Iterable[tuple[tuple[str, ...], float, float]], duration: float
) -> tuple[PhonemeSegment, ...]:
    """Contiguous ARPAbet segments covering [0, duration] from mapped engine labels.

    Labels are (phones, start, end) in time order; a label with several phones is
    split evenly, one with none (a zero-length modifier) extends the previous phone.
    """
    spans: list[list] = []
    for phones, start, end in labels:
        start, end = max(0.0, start), min(duration, end)
        if not phones:
            if spans:
                spans[-1][2] = max(spans[-1][2], end)
            continue
        step = (end - start) / len(phones)
        for i, phone in enumerate(phones):
            spans.append([phone, start + i * step, start + (i + 1) * step])
    # Close every gap: leading and trailing audio is silence, and an engine's end
    # time is the next phone's start.
    spans.insert(0, [SILENCE, 0.0, spans[0][1] if spans else duration])
    spans.append([SILENCE, spans[-1][2], duration])
    merged: list[list] = []
    for phone, start, end in spans:
        if end <= start:
            continue
        if merged:
            start = merged[-1][2]
            if end <= start:
                continue
            if merged[-1][0] == phone:
                merged[-1][2] = end
                continue
        merged.append([phone, start, end])
    merged[-1][2] = duration
    return validate_segments(PhonemeSegment(p, float(s), float(e)) for p, s, e in merged)


def _utterance(audio: np.ndarray, rate: int, labels, text: str, engine: str, voice: str) -> Utterance:
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.size == 0 or not np.any(audio):
        raise SynthesisError(f"{engine} voice {voice!r} produced no sound for {text!r}")
    audio.setflags(write=False)
    segments = _segments(labels, len(audio) / rate)
    return Utterance(audio, rate, segments, text, engine, voice)


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


# --- espeak-ng through libespeak-ng ------------------------------------------------


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT in speak_lib.h
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples since the start of this espeak_Synth call
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_EVENT_LIST_TERMINATED, _EVENT_PHONEME = 0, 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3


class _Espeak:
    """The process-wide libespeak-ng instance. The library keeps global state, so every
    call holds `lock`; the callback writes into the lists of the call in progress."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise EngineUnavailable(f"espeak-ng: cannot load libespeak-ng ({exc}); install libespeak-ng1") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EngineUnavailable("espeak-ng: espeak_Initialize failed (is espeak-ng-data installed?)")
        self.lib, self.sample_rate, self.lock = lib, rate, threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # must outlive every Synth call
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, count, events) -> int:
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (count,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_PHONEME:
                # the mnemonic is packed into id.string; latin-1 cannot fail, and an
                # odd symbol is then reported by the phoneme map
                self._phonemes.append((events[i].sample, events[i].id.string.decode("latin-1")))
            i += 1
        return 0  # continue synthesis

    def _set_voice(self, voice: str) -> None:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EngineUnavailable(f"espeak-ng has no voice {voice!r}")

    def synth(self, text: str, voice: str, wpm: int, pitch: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        with self.lock:
            self._set_voice(voice)
            # set after the voice: SetVoiceByName resets them to the voice's defaults
            self.lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            self._chunks, self._phonemes = [], []
            data = text.encode("utf-8")
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise SynthesisError(f"espeak_Synth failed with code {err}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return samples, self._phonemes

    def transcribe(self, text: str, voice: str) -> list[str]:
        with self.lock:
            self._set_voice(voice)
            buffer = ctypes.create_string_buffer(text.encode("utf-8"))
            cursor = ctypes.c_char_p(ctypes.addressof(buffer))
            symbols: list[str] = []
            # one clause per call; bits 8-23 of the mode are the separator character
            while cursor.value:
                clause = self.lib.espeak_TextToPhonemes(ctypes.byref(cursor), _CHARS_UTF8, ord(" ") << 8)
                symbols.extend((clause or b"").decode("utf-8").split())
            return symbols


@functools.cache
def _espeak() -> _Espeak:
    return _Espeak()


def espeak_transcribe(text: str, voice: str = "en-us") -> list[str]:
    """espeak-ng's phoneme mnemonics for `text`, stress marks included ("h @ l 'oU")."""
    return _espeak().transcribe(text, voice)


def _closure_start(samples: np.ndarray, event: int, floor: int) -> int:
    """Start of the run of digital silence that ends at `event` (not before `floor`)."""
    silent = samples[floor:event] == 0
    if not silent.size or not silent[-1]:
        return event
    loud = np.flatnonzero(~silent)
    return floor + (int(loud[-1]) + 1 if loud.size else 0)


def _espeak_synth(text: str, voice: str, rate: float, pitch: int = 50) -> Utterance:
    engine = _espeak()
    samples, events = engine.synth(text, voice, round(_ESPEAK_RATE_WPM * rate), pitch)
    american = espeak_is_american(voice)
    starts = [s for s, _ in events]
    phones = [espeak_to_arpabet(sym, american=american) for _, sym in events]
    # espeak writes a stop's closure silence just before the stop's event. Move the
    # boundary back to where that silence starts, but never past the previous event.
    for i, ph in enumerate(phones):
        if ph and ph[0] in _STOPS:
            starts[i] = _closure_start(samples, starts[i], starts[i - 1] if i else 0)
    ends = starts[1:] + [len(samples)]
    sr = engine.sample_rate
    labels = [(ph, s / sr, e / sr) for ph, s, e in zip(phones, starts, ends)]
    return _utterance(samples / 32768.0, sr, labels, text, ESPEAK, voice)


# --- flite and festival through their command lines ----------------------------------


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise EngineUnavailable(f"{what}: `{cmd[0]}` is not on PATH; install the {cmd[0]} package")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise SynthesisError(f"{what} did not finish within {exc.timeout} s") from exc
    if done.returncode != 0:
        raise SynthesisError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done


@functools.cache
def _flite_voices() -> frozenset[str]:
    listing = _run(["flite", "-lv"], "flite").stdout
    return frozenset(listing.split(":", 1)[-1].split())


def _end_times_to_labels(ends: list[tuple[str, float]], to_arpabet: Callable[[str], tuple[str, ...]]):
    labels, start = [], 0.0
    for symbol, end in ends:
        labels.append((to_arpabet(symbol), start, end))
        start = end
    return labels


def _flite_synth(text: str, voice: str, rate: float) -> Utterance:
    if voice not in _flite_voices():
        raise EngineUnavailable(f"flite has no voice {voice!r} (flite -lv: {sorted(_flite_voices())})")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        cmd = ["flite", "-voice", voice, "--setf", f"duration_stretch={1 / rate:.4f}", "-psdur"]
        done = _run(cmd + ["-t", text, "-o", str(wav)], f"flite {voice}")
        if not wav.exists():
            raise SynthesisError(f"flite {voice} wrote no audio: {done.stderr.strip()[-500:]}")
        audio, sr = _read_wav(wav)
    # -psdur prints "phone:end_time" pairs. Text given with -t is one utterance; were
    # flite to split it, each part's times would restart at 0 and could not be placed.
    ends = [(tok.rsplit(":", 1)[0], float(tok.rsplit(":", 1)[1])) for tok in done.stdout.split() if ":" in tok]
    if any(b[1] < a[1] for a, b in zip(ends, ends[1:])):
        raise SynthesisError(f"flite {voice} split {text[:40]!r}... into several utterances")
    return _utterance(audio, sr, _end_times_to_labels(ends, flite_to_arpabet), text, FLITE, voice)


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_segs(segs: str) -> list[tuple[str, float]]:
    # EST label file: header lines, a line '#', then "end_time colour phone" per line
    lines = segs.splitlines()
    body = lines[lines.index("#") + 1 :] if "#" in lines else []
    return [(f[2], float(f[0])) for f in map(str.split, body) if len(f) >= 3]


@functools.cache
def _festival_voices() -> frozenset[str]:
    listing = _run(["festival", "-b", "(print (voice.list))"], "festival").stdout
    return frozenset(listing.strip().strip("()").split())


def _festival_synth(text: str, voice: str, rate: float) -> Utterance:
    # checked against the list also because the name is spliced into Scheme code
    if voice not in _festival_voices():
        raise EngineUnavailable(f"festival has no voice {voice!r} (voice.list: {sorted(_festival_voices())})")
    with tempfile.TemporaryDirectory() as tmp:
        wav, segs, script = (Path(tmp) / n for n in ("out.wav", "out.segs", "say.scm"))
        script.write_text(
            f"(voice_{voice})\n"
            f"(Parameter.set 'Duration_Stretch {1 / rate:.4f})\n"
            f"(set! utt (utt.synth (Utterance Text {_scheme_string(text)})))\n"
            f"(utt.save.wave utt {_scheme_string(str(wav))} 'riff)\n"
            f"(utt.save.segs utt {_scheme_string(str(segs))})\n"
        )
        done = _run(["festival", "-b", str(script)], f"festival {voice}")
        if not (wav.exists() and segs.exists()):
            raise SynthesisError(f"festival {voice} wrote no audio: {(done.stderr or done.stdout).strip()[-500:]}")
        audio, sr = _read_wav(wav)
        ends = _parse_segs(segs.read_text())
    return _utterance(audio, sr, _end_times_to_labels(ends, festival_to_arpabet), text, FESTIVAL, voice)


_SYNTHESIZERS: dict[str, Callable[[str, str, float], Utterance]] = {
    ESPEAK: _espeak_synth,
    FLITE: _flite_synth,
    FESTIVAL: _festival_synth,
}
