"""The generated text corpus (`synth.corpus`): deterministic, well-formed, and covering
every ARPAbet phoneme many times according to espeak-ng's transcription."""
from __future__ import annotations

import re

import pytest

from synth import corpus
from synth.segments import ARPABET

MIN_COUNT = 50  # occurrences of every phoneme in 500 sentences


def test_sentences_are_deterministic_distinct_and_extend_with_n():
    first = corpus.sentences(500, seed=0)
    assert first == corpus.sentences(500, seed=0)
    assert len(set(first)) == 500
    assert corpus.sentences(100, seed=0) == first[:100]
    assert corpus.sentences(100, seed=1) != first[:100]


def test_sentences_are_well_formed():
    for text in corpus.sentences(500, seed=2):
        assert text[0].isupper() and text[-1] in ".?!", text
        assert re.fullmatch(r"[A-Za-z ,.?!']+", text), text
        assert "{" not in text and "  " not in text, text
        for article, word in re.findall(r"\b(an?) (\w+)", text):
            assert (article == "an") == (word[0] in "aeio"), text


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp"])
def test_500_sentences_cover_every_phoneme_many_times(voice):
    counts = corpus.phoneme_coverage(corpus.sentences(500), voice)
    assert set(counts) == set(ARPABET)
    rare = {p: n for p, n in counts.items() if n < MIN_COUNT}
    assert not rare, f"phonemes under {MIN_COUNT} occurrences: {rare}"
    # what the face shows most: lip closures, lip-teeth contact, rounding, spreading
    assert counts["p"] + counts["b"] + counts["m"] > 1000
    assert counts["f"] + counts["v"] > 400
    assert counts["uw"] + counts["ow"] + counts["uh"] + counts["w"] > 1000
    assert counts["iy"] + counts["ih"] + counts["ey"] > 1000


def test_coverage_counts_transcribed_phonemes():
    counts = corpus.phoneme_coverage(["Papa"])
    assert counts["p"] == 2 and counts["aa"] == 1 and counts["ah"] == 1
    assert sum(counts.values()) == 4
