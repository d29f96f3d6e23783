"""Real English speech with transcripts, from Debian's `pocketsphinx-testdata`, force-aligned.

    .venv/bin/python bench/real_speech_clips.py            # writes out/real_speech/alignments.json

What /usr/share/pocketsphinx/test/data holds (package pocketsphinx-testdata 0.8+5prealpha+1-15):

| files                              | audio                               | transcript                                |
|------------------------------------|-------------------------------------|-------------------------------------------|
| librivox/*.wav (5)                 | 16 kHz 16-bit mono WAV, 3.0-7.1 s;  | librivox/transcription (Sphinx format:    |
|                                    | one female reader of Jane Austen's  | "<s> words </s> (utt-id)"); fileids lists |
|                                    | "Sense and Sensibility", ch. 1      | the 5 ids                                 |
| cards/00[1-5].wav (5)              | 16 kHz 16-bit mono WAV, 1.1-3.5 s,  | cards/cards.transcription (same format)   |
|                                    | playing-card names                  |                                           |
| goforward.raw                      | 16 kHz 16-bit LE mono raw, 2.8 s    | none as a file; "go forward ten meters"   |
|                                    |                                     | is goforward.gram's first rule and what   |
|                                    |                                     | PocketSphinx's own tests expect           |
| tidigits/dhd.2934z.raw             | 16 kHz 16-bit LE mono raw, 2.4 s    | TIDIGITS naming ("2934z" = two nine three |
|                                    |                                     | four zero, z = zero); tidigits.lsn has    |
|                                    |                                     | that line for the matching man.ah.2934za  |
| numbers.raw, something.raw         | 16 kHz raw, 4.0 s / 3.0 s           | none shipped: NOT used (an ASR guess is   |
|                                    |                                     | not ground truth)                         |
| tidigits/*.mfc, goforward.mfc      | cepstra only, no audio              | NOT used                                  |

Every clip is one utterance with a little leading and trailing silence; the LibriVox ones are
read speech at a natural rate, the others are short command/digit phrases.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vendor_model.alignment import PhoneSegment, align_full, read_speech_pcm16  # noqa: E402
from vendor_model.metrics import BILABIALS, OPEN_VOWELS, SILENCE  # noqa: E402

DATA = Path("/usr/share/pocketsphinx/test/data")
COPYRIGHT = Path("/usr/share/doc/pocketsphinx-testdata/copyright")
DEFAULT_OUTPUT = ROOT / "out" / "real_speech" / "alignments.json"

# Licences, from /usr/share/doc/pocketsphinx-testdata/copyright. Its only stanza that covers the
# test data is the catch-all:
#     Files: *
#     Copyright: 1995-2014 Carnegie Mellon University.  All rights reserved.
#                2014-2015 Alpha Cephei Inc.
#     License: BSD-2
# The file does NOT mention LibriVox or public domain anywhere (checked: no "librivox",
# "public domain" or "domain" in it). LibriVox publishes all its recordings as public domain
# (its own policy, librivox.org), which is where these excerpts come from, but that statement
# is not in the Debian file and is recorded below as unverified here.
_DEBIAN_LINE = "Files: * / Copyright: 1995-2014 Carnegie Mellon University, 2014-2015 Alpha Cephei Inc. / License: BSD-2"
LICENCES: dict[str, dict[str, str]] = {
    "librivox": {
        "source": "LibriVox recording of Jane Austen, 'Sense and Sensibility', chapter 1 "
                  "(sense_and_sensibility_01_austen_64kb), excerpts shipped in pocketsphinx-testdata",
        "licence": "BSD-2 as packaged (Debian copyright, Files: *); public domain at source per LibriVox's "
                   "policy (not stated in the Debian file, unverified here)",
        "debian_copyright": _DEBIAN_LINE,
    },
    "cards": {
        "source": "PocketSphinx test recordings (CMU), playing-card grammar test",
        "licence": "BSD-2 (Debian copyright, Files: *)",
        "debian_copyright": _DEBIAN_LINE,
    },
    "goforward": {
        "source": "PocketSphinx test recording (CMU), turtle-robot grammar test",
        "licence": "BSD-2 (Debian copyright, Files: *)",
        "debian_copyright": _DEBIAN_LINE,
    },
    "digits": {
        "source": "PocketSphinx test recording (CMU) named after the TIDIGITS convention; the audio is "
                  "not one of the TIDIGITS corpus files (those ship only as .mfc cepstra)",
        "licence": "BSD-2 (Debian copyright, Files: *)",
        "debian_copyright": _DEBIAN_LINE,
    },
}


@dataclass(frozen=True)
class Clip:
    name: str  # short unique id, e.g. "librivox-0880"
    path: Path
    transcript: str  # lowercase words
    collection: str  # key into LICENCES
    transcript_source: str  # where the transcript comes from

    def audio(self) -> np.ndarray:
        """(S,) float32 mono at 16 kHz in [-1, 1]."""
        return read_speech_pcm16(self.path).astype(np.float32) / 32768.0


_SPHINX_LINE = re.compile(r"^\s*(?:<s>)?(?P<text>.*?)(?:</s>)?\s*\((?P<id>[^)]+)\)\s*$")


def read_sphinx_transcription(path: Path) -> dict[str, str]:
    """{utterance id: words} from a Sphinx transcription file ("<s> words </s> (id)" per line)."""
    result = {}
    for line in path.read_text().splitlines():
        match = _SPHINX_LINE.match(line)
        if match:
            result[match["id"]] = " ".join(match["text"].split())
    return result


def list_clips(data: Path = DATA) -> list[Clip]:
    """Every clip in `data` with a ground-truth transcript (empty if the package is absent)."""
    clips: list[Clip] = []
    librivox = data / "librivox" / "transcription"
    if librivox.is_file():
        for utt, text in read_sphinx_transcription(librivox).items():
            short = "librivox-" + utt.rsplit("-", 1)[-1]
            clips.append(Clip(short, data / "librivox" / f"{utt}.wav", text, "librivox", "librivox/transcription"))
    cards = data / "cards" / "cards.transcription"
    if cards.is_file():
        for utt, text in read_sphinx_transcription(cards).items():
            clips.append(Clip(f"cards-{utt}", data / "cards" / f"{utt}.wav", text, "cards", "cards/cards.transcription"))
    if (data / "goforward.raw").is_file():
        clips.append(Clip("goforward", data / "goforward.raw", "go forward ten meters", "goforward",
                          "goforward.gram (first rule) and PocketSphinx's test expectations"))
    if (data / "tidigits" / "dhd.2934z.raw").is_file():
        clips.append(Clip("digits-2934z", data / "tidigits" / "dhd.2934z.raw", "two nine three four zero", "digits",
                          "file name (TIDIGITS convention) and tidigits/tidigits.lsn"))
    return [c for c in clips if c.path.is_file()]


def segments_from_json(rows: list[list]) -> list[PhoneSegment]:
    """PhoneSegments from the [phone, start, end, word] rows of alignments.json."""
    return [PhoneSegment(str(p), float(s), float(e), str(w)) for p, s, e, w in rows]


def align_clip(clip: Clip) -> dict:
    """One clip's JSON record: transcript, licence, words and phones in seconds."""
    result = align_full(clip.path, clip.transcript)
    return {
        "path": str(clip.path),
        "transcript": clip.transcript,
        "transcript_source": clip.transcript_source,
        "collection": clip.collection,
        **LICENCES[clip.collection],
        "duration": result.duration,
        "pronunciations": list(result.pronunciations),
        "words": [[w.word, round(w.start, 4), round(w.end, 4)] for w in result.words],
        "phones": [[p.phone, round(p.start, 4), round(p.end, 4), p.word] for p in result.phones],
    }


def summary_row(name: str, record: dict) -> dict:
    phones = segments_from_json(record["phones"])
    return {
        "clip": name,
        "duration_s": record["duration"],
        "words": len(record["words"]),
        "phones": sum(p.phone != SILENCE for p in phones),
        "pbm": sum(p.phone in BILABIALS for p in phones),
        "open_vowels": sum(p.phone in OPEN_VOWELS for p in phones),
        "silence_s": sum(p.end - p.start for p in phones if p.phone == SILENCE),
    }


def print_table(records: dict[str, dict]) -> None:
    print(f"{'clip':<16} {'dur s':>6} {'words':>5} {'phones':>6} {'p/b/m':>5} {'open V':>6} {'sil s':>6}")
    for name, record in records.items():
        r = summary_row(name, record)
        print(f"{r['clip']:<16} {r['duration_s']:6.2f} {r['words']:5d} {r['phones']:6d} {r['pbm']:5d} "
              f"{r['open_vowels']:6d} {r['silence_s']:6.2f}")


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="pocketsphinx test data folder")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    clips = list_clips(args.data)
    if not clips:
        parser.error(f"no clips found under {args.data} (install Debian's pocketsphinx-testdata)")
    records = {clip.name: align_clip(clip) for clip in clips}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"clips": records, "licences": LICENCES}, indent=1))
    print_table(records)
    print(f"wrote {args.output}")
    return records


if __name__ == "__main__":
    main()
