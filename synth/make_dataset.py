"""Generate the synthetic paired speech/motion set in the VOCASET/FaceFormer layout.

    .venv/bin/python -m synth.make_dataset --out data/synth --sentences 600

For each sentence of the project's own corpus: one training voice speaks it (with
a random speaking rate), the engine's phoneme timings drive the articulation rig in
one of the speaking styles, and the result is stored as

    vertices_npy/<style>_s<NNNN>.npy   (frames, V*3) float16 vertices at 30 fps (0.06 mm
                                       steps at head scale; halves the set's size)
    wav/<style>_s<NNNN>.wav            the speech
    segments/<style>_s<NNNN>.json      the phoneme timings (for evaluation)
    templates.npz                      style -> (V, 3) neutral head (the same head for all)
    dataset.json                       fps, styles and splits, read by vendor_model.data

The held-out voices never speak a training sentence: they get their own sentences
in split "test". Generated data is not committed (data/ is git-ignored).
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

from . import corpus, tts
from .head import build_head
from .rig import STYLES, animate

MOTION_FPS = 30
TEST_OFFSET = 5000  # sentence numbers of the held-out-voice test split start here


def _write_item(out: Path, name: str, utterance, vertices: np.ndarray) -> None:
    np.save(out / "vertices_npy" / f"{name}.npy", vertices.reshape(len(vertices), -1).astype(np.float16))
    soundfile.write(out / "wav" / f"{name}.wav", utterance.audio, utterance.sample_rate, subtype="PCM_16")
    segments = [asdict(s) for s in utterance.segments]
    meta = {"text": utterance.text, "engine": utterance.engine, "voice": utterance.voice, "segments": segments}
    (out / "segments" / f"{name}.json").write_text(json.dumps(meta))


def _speak(text: str, engine: str, voice: str, rng: random.Random, augment: bool):
    utterance = tts.synthesize(text, engine, voice, rate=rng.uniform(0.85, 1.2))
    if augment:
        from .augment import augment as apply_augmentation

        utterance = apply_augmentation(utterance, np.random.default_rng(rng.randrange(2**32)))
    return utterance


def make_dataset(out: Path, n_sentences: int, n_test: int, seed: int = 0, augment: bool = False, log=print) -> Path:
    out = Path(out)
    for folder in ("vertices_npy", "wav", "segments"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    head = build_head()
    styles = list(STYLES)
    available = set(tts.list_voices())
    train_voices = [v for v in tts.training_voices() if v in available]
    test_voices = sorted(v for v in tts.HELD_OUT_VOICES if v in available)
    if not train_voices or not test_voices:
        raise RuntimeError(f"need training and held-out voices; found {sorted(available)}")
    rng = random.Random(seed)
    texts = corpus.sentences(n_sentences + n_test, seed=seed)
    counts = {style: 0 for style in styles}

    jobs = []
    for i, text in enumerate(texts[:n_sentences]):
        style = styles[i % len(styles)]
        counts[style] += 1
        jobs.append((f"{style}_s{counts[style]:04d}", text, train_voices[(i // len(styles)) % len(train_voices)], style, augment))
    for i, text in enumerate(texts[n_sentences:]):  # held-out voices, clean speech
        style = styles[i % len(styles)]
        jobs.append((f"{style}_s{TEST_OFFSET + i:04d}", text, test_voices[i % len(test_voices)], style, False))

    for k, (name, text, (engine, voice), style, augmented) in enumerate(jobs):
        utterance = _speak(text, engine, voice, rng, augmented)
        offsets = animate(utterance.segments, fps=MOTION_FPS, style=STYLES[style], head=head, duration=utterance.duration)
        _write_item(out, name, utterance, head.vertices[None] + offsets)
        if k % 50 == 0:
            log(f"{k}/{len(jobs)} {name} {engine}:{voice} {utterance.duration:.1f}s")

    per_style = min(counts.values())
    n_val = max(1, per_style // 10)
    np.savez(out / "templates.npz", **{style: head.vertices for style in styles})
    dataset = {
        "fps": MOTION_FPS,
        "subsample": 1,
        "templates": "templates.npz",
        "styles": styles,
        "splits": {
            "train": {"subjects": styles, "sentences": list(range(1, per_style - n_val + 1))},
            "val": {"subjects": styles, "sentences": list(range(per_style - n_val + 1, per_style + 1))},
            "test": {"subjects": styles, "sentences": list(range(TEST_OFFSET, TEST_OFFSET + n_test))},
        },
        "voices": {"train": [list(v) for v in train_voices], "test": [list(v) for v in test_voices]},
        "regions": {name: idx.tolist() for name, idx in head.regions.items()},
    }
    (out / "dataset.json").write_text(json.dumps(dataset))
    log(f"wrote {len(jobs)} utterances to {out} ({per_style - n_val} train / {n_val} val sentences per style, {n_test} test)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synth")
    parser.add_argument("--sentences", type=int, default=600)
    parser.add_argument("--test-sentences", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", action="store_true", help="augment the training speech (speed, pitch, noise, reverb, band-limit, loudness)")
    args = parser.parse_args()
    make_dataset(Path(args.out), args.sentences, args.test_sentences, args.seed, args.augment)


if __name__ == "__main__":
    main()
