"""Map each TTS engine's phoneme symbols to the ARPAbet set of `synth.segments`.

A symbol maps to a tuple of ARPAbet phones: usually one, none for zero-length
modifiers whose time belongs to the previous phone, two where the engine packs a
vowel and a following r or schwa into one symbol (the caller splits that time evenly).

Symbols missing from a table are guessed, never fatal: the nearest entry after
stripping espeak's variant suffixes ('l/2' -> 'l', 'I2#' -> 'I'), else 'sil'. Each
guess is counted in `unmapped_symbols()` and logged once, so a new engine version
that emits new symbols shows up in the logs and the coverage tests instead of
silently corrupting the labels.
"""
from __future__ import annotations

import logging
from collections import Counter

from synth.segments import ARPABET, SILENCE

__all__ = [
    "ESPEAK_TO_ARPABET",
    "ESPEAK_AMERICAN",
    "RADIO_TO_ARPABET",
    "espeak_to_arpabet",
    "espeak_is_american",
    "flite_to_arpabet",
    "festival_to_arpabet",
    "unmapped_symbols",
]

log = logging.getLogger(__name__)

# espeak-ng English mnemonics (phsource/ph_english* plus the base consonants English
# uses), as espeak_TextToPhonemes / `espeak-ng -x` print them and as phoneme events
# report them. Values follow the British tables ('en', 'en-gb-x-rp'); American
# voices override the r-coloured vowels below.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    # pauses: word gaps, clause and sentence breaks
    "_": (SILENCE,), "_:": (SILENCE,), "_::": (SILENCE,), "_!": (SILENCE,), "_|": (SILENCE,),
    "_;_": (SILENCE,), "_^_": (SILENCE,), "||": (SILENCE,),
    # zero-length modifiers (';' palatalises, ':' lengthens the previous phoneme)
    ";": (), ":": (),
    # plosives and affricates; t# is the American flap, '?' the glottal stop that
    # stands for /t/ ("button"). t[ and d[ are the dental stops of Caribbean English
    # ("thing" = t[IN): the tongue touches the teeth as for th, so they map there
    "p": ("p",), "b": ("b",), "t": ("t",), "t#": ("t",), "t2": ("t",), "t[": ("th",),
    "?": ("t",), "d": ("d",), "d#": ("d",), "d[": ("dh",), "k": ("k",), "g": ("g",),
    "tS": ("ch",), "dZ": ("jh",),
    # fricatives; 'x' (loch) shares the velar place of k, 'C' (huge) is a palatal h
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "z#": ("z",), "z/2": ("z",), "S": ("sh",), "Z": ("zh",), "h": ("hh",), "C": ("hh",),
    "x": ("k",),
    # nasals, liquids, glides; '@L' is the syllabic l of "simple", 'n-' the
    # syllabic n of "mountain" (no vowel is articulated, so none is added)
    "m": ("m",), "n": ("n",), "n-": ("n",), "m-": ("m",), "N": ("ng",), "l": ("l",), "l/": ("l",), "l/2": ("l",),
    "l/3": ("l",), "@L": ("ah", "l"), "r": ("r",), "r-": ("r",), "r/": ("r",),
    "j": ("y",), "w": ("w",), "w#": ("w",),
    # reduced vowels
    "@": ("ah",), "@2": ("ah",), "@5": ("ah",), "@#": ("ah",), "3": ("ah",),
    "a#": ("ah",), "a#2": ("ah",), "E#": ("ah",), "0#": ("ah",), "e#": ("ih",),
    # short vowels
    "a": ("ae",), "a2": ("ae",), "a/": ("ae",), "aa": ("ae",), "E": ("eh",), "E2": ("eh",),
    "I": ("ih",), "I2": ("ih",), "I#": ("ih",), "I2#": ("ih",), "i": ("iy",),
    "0": ("aa",), "02": ("aa",), "O2": ("ao",), "V": ("ah",), "U": ("uh",),
    # long vowels and diphthongs
    "A:": ("aa",), "A@": ("aa",), "A#": ("aa",), "A~": ("aa",), "3:": ("er",),
    "i:": ("iy",), "O:": ("ao",), "O": ("ao",), "O@": ("ao",), "o@": ("ao",), "O~": ("ao",),
    "o:": ("ow",), "u:": ("uw",), "e:": ("ey",), "aU": ("aw",), "oU": ("ow",), "oU#": ("ow",),
    "aI": ("ay",), "aI2": ("ay",), "eI": ("ey",), "OI": ("oy",), "e@": ("eh",),
    # centring diphthongs and the r-vowels of Scottish English
    "i@": ("ih", "ah"), "i@3": ("ih", "ah"), "U@": ("uh", "ah"), "aI@": ("ay", "ah"),
    "aI3": ("ay", "ah"), "aU@": ("aw", "ah"), "IR": ("er",), "VR": ("ah", "r"),
}

# American tables (en-us, en-us-nyc) use the same mnemonics for r-coloured vowels:
# "start" is s t A@ t with no separate r, so the r lives inside the vowel symbol.
ESPEAK_AMERICAN: dict[str, tuple[str, ...]] = {
    "3": ("er",), "02": ("ah",), "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"),
    "e@": ("eh", "r"), "i@3": ("ih", "r"), "U@": ("uh", "r"), "aI3": ("ay", "er"),
    "aU@": ("aw", "er"),
}

# The 'radio' phone set: flite's cmu_us voices and festival's kal_diphone both use
# it. It is ARPAbet plus a few allophones that CMUdict folds into their base phone.
RADIO_TO_ARPABET: dict[str, tuple[str, ...]] = {
    **{p: (p,) for p in ARPABET},
    "pau": (SILENCE,), "h#": (SILENCE,), "brth": (SILENCE,),
    "ax": ("ah",), "axr": ("er",), "dx": ("t",), "nx": ("n",), "hv": ("hh",),
    "el": ("ah", "l"), "em": ("ah", "m"), "en": ("ah", "n"),
}

# espeak stress and syllable marks carried in front of a mnemonic in -x output
_ESPEAK_STRESS = "',%="
# What espeak appends to a base phoneme to make a variant ('l/2', 'I2#', 't['), and
# the length mark (':'), stripped one by one to find the nearest known symbol
_ESPEAK_VARIANT = "#/-[;:0123456789"

_unmapped: Counter[tuple[str, str]] = Counter()


def unmapped_symbols() -> Counter[tuple[str, str]]:
    """How often each (engine, symbol) had no table entry and was guessed."""
    return Counter(_unmapped)


def _fallback(engine: str, symbol: str, guess: tuple[str, ...]) -> tuple[str, ...]:
    key = (engine, symbol)
    if not _unmapped[key]:
        log.warning("%s phoneme %r has no ARPAbet entry; using %s", engine, symbol, guess)
    _unmapped[key] += 1
    return guess


def espeak_is_american(voice: str) -> bool:
    """Whether an espeak-ng voice ('en-us+f1', 'en-us-nyc') uses the American tables."""
    return voice.split("+")[0].startswith("en-us")


def espeak_to_arpabet(symbol: str, *, american: bool = False) -> tuple[str, ...]:
    """ARPAbet phones for one espeak-ng mnemonic, e.g. "'aI@" -> ('ay', 'ah')."""
    bare = symbol.lstrip(_ESPEAK_STRESS)
    tables = (ESPEAK_AMERICAN, ESPEAK_TO_ARPABET) if american else (ESPEAK_TO_ARPABET,)
    for table in tables:
        if bare in table:
            return table[bare]
    stem = bare
    while stem and stem not in ESPEAK_TO_ARPABET:
        stem = stem[:-1] if stem[-1] in _ESPEAK_VARIANT else ""
    return _fallback("espeak-ng", bare, ESPEAK_TO_ARPABET[stem] if stem else (SILENCE,))


def _radio(engine: str, symbol: str) -> tuple[str, ...]:
    if symbol in RADIO_TO_ARPABET:
        return RADIO_TO_ARPABET[symbol]
    return _fallback(engine, symbol, (SILENCE,))


def flite_to_arpabet(symbol: str) -> tuple[str, ...]:
    """ARPAbet phones for one flite segment name ('pau', 'ax', 'hh', ...)."""
    return _radio("flite", symbol)


def festival_to_arpabet(symbol: str) -> tuple[str, ...]:
    """ARPAbet phones for one festival segment name (radio phone set, as kal_diphone)."""
    return _radio("festival", symbol)
