"""A phonetically balanced English corpus, generated here from our own word lists.

No downloaded text: a small sentence grammar fills templates with words chosen to
cover every ARPAbet phoneme, weighted towards what a face shows: bilabials (p b m)
that close the lips, labiodentals (f v) that tuck the lower lip, rounded vowels and
consonants (uw ow ao oy w r sh ch jh) and spread vowels (iy ih ey eh ae). The rare
phonemes (zh, oy, uh, aw, th) get their own words so they still occur dozens of
times per few hundred sentences. Generation is deterministic for a seed.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from typing import Iterable

from synth.phonemes import espeak_is_american, espeak_to_arpabet
from synth.segments import ARPABET, SILENCE
from synth.tts import espeak_transcribe

__all__ = ["WORDS", "VERBS", "TEMPLATES", "sentences", "phoneme_coverage"]

# A word spelt with a leading a, e, i or o takes "an". No word here starts with a
# vowel-sounding 'u' ("umbrella") or a silent 'h' ("hour"), so the rule is always right.
WORDS: dict[str, tuple[str, ...]] = {
    "noun": (
        # lips closing (p b m) and lip-to-teeth (f v)
        "baby", "puppy", "map", "pumpkin", "bubble", "mop", "pebble", "pipe", "plum",
        "bamboo", "ribbon", "muffin", "buffalo", "fever", "violin", "van", "fox", "vase",
        "oven", "waffle", "envelope", "pillow", "lamp", "mirror", "rabbit", "butterfly",
        # rounded vowels and glides
        "moon", "spoon", "boot", "goose", "juice", "shoe", "rope", "boat", "stove", "wolf",
        "book", "cookie", "hood", "sugar", "bull", "woman", "door", "ball", "window", "coat",
        "wool", "foot", "cushion", "pudding", "bush", "football",
        # spread vowels
        "cheese", "key", "beach", "tree", "queen", "sheep", "chicken", "kitten", "bed",
        "bell", "pen", "egg", "cat", "apple", "hat", "cake", "train", "table", "paper",
        "kite", "tiger", "knife", "island",
        # zh
        "treasure", "garage", "vision", "television", "decision", "leisure", "pleasure",
        "explosion", "collision", "measure", "massage", "version",
        # oy, aw, er
        "boy", "toy", "coin", "oyster", "voice", "noise", "toilet", "soil", "cowboy", "poison",
        "cow", "house", "mouse", "owl", "cloud", "mountain", "towel", "crown", "flower", "tower",
        "bird", "girl", "turtle", "shirt", "nurse", "purse", "burger", "worm", "circle", "church",
        # ng, th, dh, y, hh, ch, jh, sh
        "king", "ring", "swing", "song", "wing", "finger", "thumb", "thief", "path", "moth",
        "cloth", "feather", "mother", "brother", "father", "weather", "leather", "yogurt",
        "yacht", "yarn", "unicorn", "hammer", "helmet", "horse", "honey", "chair", "watch",
        "peach", "kitchen", "teacher", "jacket", "jelly", "giraffe", "judge", "bridge",
        "orange", "pigeon", "engine", "fish", "ship", "shell", "brush", "machine", "ocean",
    ),
    "adj": (
        "big", "small", "purple", "yellow", "beige", "brave", "happy", "muddy", "fluffy",
        "shiny", "rough", "smooth", "cozy", "huge", "tiny", "cheap", "pink", "blue", "brown",
        "green", "wooden", "frozen", "lovely", "usual", "casual", "joyful", "noisy", "thirsty",
        "hungry", "heavy", "quiet", "bright", "gloomy", "chubby", "pale", "warm", "cool",
        "sharp", "soft", "round", "loud", "young", "old", "awful", "easy", "empty", "odd",
        "visual", "moist", "foolish", "peaceful", "good", "proud", "thick", "other",
    ),
    "prep": (
        "over", "under", "behind", "beside", "near", "through", "above", "below", "beyond",
        "toward", "with", "without", "inside", "around", "across", "beneath", "among",
    ),
    "time": (
        "yesterday", "today", "this morning", "every Thursday", "at noon", "on Monday",
        "quickly", "slowly", "carefully", "quietly", "again", "twice", "three times",
        "before the storm", "in the evening", "last summer", "at the usual hour",
        "with pleasure", "without a word", "by mistake", "for a few moments", "at dawn",
    ),
    "name": (
        "Bob", "Maya", "Peter", "Vivian", "Joshua", "Thomas", "Ruth", "Hugo", "Zoe", "Oliver",
        "Beth", "Fiona", "Paul", "Molly", "Victor", "Julia", "George", "Cheryl", "Owen", "Ava",
        "Jasmine", "Sean", "Kathy", "Roy", "Howard", "Irene", "Boyd", "Ursula", "Woody", "Marge",
    ),
}

# (base, past) pairs so questions and imperatives can use the base form
VERBS: tuple[tuple[str, str], ...] = (
    ("find", "found"), ("buy", "bought"), ("push", "pushed"), ("pull", "pulled"),
    ("watch", "watched"), ("move", "moved"), ("throw", "threw"), ("love", "loved"),
    ("choose", "chose"), ("measure", "measured"), ("play with", "played with"),
    ("bring", "brought"), ("catch", "caught"), ("keep", "kept"), ("drop", "dropped"),
    ("paint", "painted"), ("wash", "washed"), ("shake", "shook"), ("take", "took"),
    ("fix", "fixed"), ("carry", "carried"), ("drag", "dragged"), ("grab", "grabbed"),
    ("visit", "visited"), ("borrow", "borrowed"), ("juggle", "juggled"), ("hug", "hugged"),
    ("toss", "tossed"), ("open", "opened"), ("touch", "touched"), ("chew", "chewed"),
    ("follow", "followed"), ("enjoy", "enjoyed"), ("view", "viewed"), ("soothe", "soothed"),
    ("spoil", "spoiled"), ("pour", "poured"), ("boil", "boiled"), ("shove", "shoved"),
)

# {noun} {adj} {prep} {time} {name} {base} {past}; {a_noun} and {a_adj_noun} add
# the article. Statements, questions and exclamations vary the intonation.
TEMPLATES: tuple[str, ...] = (
    "The {adj} {noun} {past} {prep} the {noun}.",
    "{name} {past} {a_adj_noun} {time}.",
    "Did {name} {base} the {noun} {time}?",
    "Please {base} the {adj} {noun} {prep} the {noun}.",
    "{name} said the {noun} was {adj}, but {name} {past} it anyway.",
    "Why would anyone {base} {a_noun} {prep} the {adj} {noun}?",
    "My {noun} and your {noun} were both {adj} {time}.",
    "After the {noun} {past} the {noun}, {name} {past} {a_noun}.",
    "Look at that {adj} {noun}! {name} {past} it {time}.",
    "We {past} {a_adj_noun} and {a_adj_noun} {prep} the {noun}.",
    "Could you {base} my {adj} {noun}, {name}?",
    "{name} and {name} {past} the {adj} {noun} {time}.",
    "If you {base} the {noun}, the {adj} {noun} will {base} you.",
    "Nobody {past} the {noun} {prep} the {adj} {noun} {time}.",
)

_SLOT = re.compile(r"\{(\w+)\}")


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeioAEIO" else "a ") + phrase


def _fill(template: str, rng: random.Random) -> str:
    def pick(match: re.Match) -> str:
        slot = match.group(1)
        if slot in ("base", "past"):
            return rng.choice(VERBS)[slot == "past"]
        if slot == "a_noun":
            return _article(rng.choice(WORDS["noun"]))
        if slot == "a_adj_noun":
            return _article(f"{rng.choice(WORDS['adj'])} {rng.choice(WORDS['noun'])}")
        return rng.choice(WORDS[slot])

    text = _SLOT.sub(pick, template)
    return text[0].upper() + text[1:]


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` distinct sentences; the same (n, seed) always gives the same list."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = _fill(rng.choice(TEMPLATES), rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def phoneme_coverage(texts: Iterable[str], voice: str = "en-us") -> Counter[str]:
    """How often each ARPAbet phoneme (every one listed, silence excluded) occurs in
    espeak-ng's transcription of `texts` with `voice`."""
    american = espeak_is_american(voice)
    counts: Counter[str] = Counter({p: 0 for p in ARPABET})
    for text in texts:
        for symbol in espeak_transcribe(text, voice):
            counts.update(p for p in espeak_to_arpabet(symbol, american=american) if p != SILENCE)
    return counts
