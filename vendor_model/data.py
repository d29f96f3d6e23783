"""Training data in the VOCASET/FaceFormer layout, and batching.

    <root>/vertices_npy/<subject>_<sentenceXX>.npy   (frames, V*3) at the stored fps
    <root>/wav/<same stem>.wav                        speech, any rate (resampled to 16 kHz)
    <root>/templates.pkl                              subject -> (V, 3) neutral mesh
                                                      (or templates.npz with the same keys)
    <root>/dataset.json                               optional: our own layouts (see layout_from_json)
    <root>/segments/<same stem>.json                  optional: phone timings, for the phone loss

The subject is the file stem up to its last underscore; the sentence id is the
stem's last two characters (FaceFormer's convention). The motion variable is
`vertices - template` per frame; no normalisation (spec §4).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import load_audio, normalize_waveform
from .config import OFFICIAL_STYLE_NAMES, SAMPLE_RATE
from .model import TrainingBatch
from .phones import IGNORE, frame_phones
from .untrusted import load_numpy_pickle

__all__ = [
    "DatasetError", "Split", "DatasetLayout", "vocaset_layout", "biwi_layout", "layout_from_json",
    "load_layout", "MotionItem", "SpeechMotionDataset", "collate", "load_templates",
]

SPLITS = ("train", "val", "test")


class DatasetError(ValueError):
    """The data folder does not have the expected layout; the message says what and where."""


@dataclass(frozen=True)
class Split:
    subjects: tuple[str, ...]
    sentences: tuple[int, ...]


@dataclass(frozen=True)
class DatasetLayout:
    """Where the files are, how fast the stored motion is, and who is in which split."""

    root: Path
    fps: int  # frame rate of the stored vertices (VOCASET 60, BIWI 25)
    subsample: int  # keep every n-th stored frame (VOCASET 2 -> 30 fps)
    splits: dict[str, Split]
    styles: tuple[str, ...]  # training subjects in one-hot order (the style index)
    vertices_dir: str = "vertices_npy"
    wav_dir: str = "wav"
    templates: str = "templates.pkl"
    segments_dir: str = "segments"  # <stem>.json phone timings, for the phone loss (synthetic sets have them)
    skip_missing_motion: bool = False  # True: a wav without its .npy is left out with a warning (FaceFormer)
    name: str = field(default="custom", compare=False)
    regions: dict[str, tuple[int, ...]] = field(default_factory=dict, compare=False)  # name -> vertex ids

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.fps < 1 or self.subsample < 1:
            raise DatasetError(f"fps ({self.fps}) and subsample ({self.subsample}) must be positive")
        if self.fps % self.subsample:
            raise DatasetError(f"stored fps {self.fps} is not a multiple of the subsample factor {self.subsample}")
        if not self.styles or len(set(self.styles)) != len(self.styles):
            raise DatasetError(f"the style list must name distinct subjects, got {list(self.styles)}")

    @property
    def motion_fps(self) -> int:
        """Frame rate the model sees (stored fps / subsample)."""
        return self.fps // self.subsample

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(f"unknown split {name!r}; this layout has {sorted(self.splits)}")
        return self.splits[name]


def _range(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


def vocaset_layout(root: str | Path) -> DatasetLayout:
    """Official VOCASET splits: 8 training subjects, 60 fps stored, every 2nd frame kept."""
    train = OFFICIAL_STYLE_NAMES["vocaset"]
    return DatasetLayout(
        root=Path(root), fps=60, subsample=2, styles=train, name="vocaset", skip_missing_motion=True,
        splits={
            "train": Split(train, _range(1, 40)),
            "val": Split(("FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"), _range(21, 40)),
            "test": Split(("FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"), _range(21, 40)),
        },
    )


def biwi_layout(root: str | Path) -> DatasetLayout:
    """Official BIWI splits (test = BIWI-Test-A): the same 6 subjects, split by sentence."""
    subjects = OFFICIAL_STYLE_NAMES["biwi"]
    return DatasetLayout(
        root=Path(root), fps=25, subsample=1, styles=subjects, name="biwi", skip_missing_motion=True,
        splits={
            "train": Split(subjects, _range(1, 32)),
            "val": Split(subjects, _range(33, 36)),
            "test": Split(subjects, _range(37, 40)),
        },
    )


def layout_from_json(root: str | Path) -> DatasetLayout:
    """Layout described by `<root>/dataset.json`:
    {"fps": 30, "subsample": 1, "styles": [...],
     "splits": {"train": {"subjects": [...], "sentences": [1, 2, ...]}, "val": ..., "test": ...}}
    Optional keys: "vertices_dir", "wav_dir", "templates", "skip_missing_motion", and
    "regions" ({name: [vertex ids]}, e.g. "lips", for TrainConfig.region_weights)."""
    root = Path(root)
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset.json in {root}; give the layout (vocaset or biwi) instead")
    try:
        spec = json.loads(path.read_text())
        splits = {
            name: Split(tuple(str(s) for s in part["subjects"]), tuple(int(i) for i in part["sentences"]))
            for name, part in spec["splits"].items()
        }
        fps, subsample = int(spec["fps"]), int(spec.get("subsample", 1))
        styles = tuple(str(s) for s in spec.get("styles", splits["train"].subjects))
        optional = {k: str(spec[k]) for k in ("vertices_dir", "wav_dir", "templates") if k in spec}
        if "skip_missing_motion" in spec:
            optional["skip_missing_motion"] = bool(spec["skip_missing_motion"])
        if "regions" in spec:
            optional["regions"] = {str(k): tuple(int(i) for i in v) for k, v in spec["regions"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path} is not a valid dataset description ({type(exc).__name__}: {exc})") from None
    return DatasetLayout(root=root, fps=fps, subsample=subsample, splits=splits, styles=styles, name="json", **optional)


def load_layout(root: str | Path, kind: str = "auto") -> DatasetLayout:
    """kind: vocaset, biwi, json, or auto (= json when dataset.json exists)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root}")
    if kind == "auto":
        if not (root / "dataset.json").is_file():
            raise DatasetError(f"{root} has no dataset.json; say which layout it follows (vocaset or biwi)")
        kind = "json"
    makers = {"vocaset": vocaset_layout, "biwi": biwi_layout, "json": layout_from_json}
    if kind not in makers:
        raise DatasetError(f"unknown layout {kind!r}; choose one of {sorted(makers)} or auto")
    return makers[kind](root)


def load_templates(layout: DatasetLayout) -> dict[str, np.ndarray]:
    """subject -> flat (V*3,) float32 template, from templates.pkl (restricted unpickler,
    never plain pickle) or, failing that, templates.npz."""
    pkl = layout.root / layout.templates
    npz = pkl.with_suffix(".npz")
    if pkl.suffix == ".pkl" and pkl.is_file():
        raw = load_numpy_pickle(pkl)
        source = pkl
    elif npz.is_file():
        with np.load(npz, allow_pickle=False) as f:
            raw = {k: f[k] for k in f.files}
        source = npz
    else:
        raise FileNotFoundError(f"no templates file in {layout.root}: expected {pkl.name} (or {npz.name})")
    if not isinstance(raw, dict):
        raise DatasetError(f"{source} should hold a dict subject -> (V, 3) array, found {type(raw).__name__}")
    templates = {}
    for subject, mesh in raw.items():
        mesh = np.asarray(mesh, dtype=np.float32)
        if mesh.size % 3:
            raise DatasetError(f"{source}: template of {subject!r} has {mesh.size} values, not a multiple of 3")
        templates[str(subject)] = mesh.reshape(-1)
    return templates


@dataclass
class MotionItem:
    audio: np.ndarray  # (S,) float32, 16 kHz, zero mean / unit variance
    offsets: np.ndarray  # (T, V*3) float32 vertices minus template, at the motion fps
    style: int  # index into layout.styles; -1 = not a training subject (validated with every style)
    name: str  # file stem, e.g. FaceTalk_170728_03272_TA_sentence01
    subject: str
    phones: np.ndarray | None = None  # (Tp,) int64 PHONES index per frame at the phone rate, IGNORE = unlabelled


def _parse_stem(stem: str) -> tuple[str, int] | None:
    """`FaceTalk_..._TA_sentence01` -> (subject, 1); the sentence number is the run of
    digits ending the stem (two in the official data, more in generated sets)."""
    subject, sep, tail = stem.rpartition("_")
    digits = len(tail) - len(tail.rstrip("0123456789"))
    if not sep or not subject or digits == 0:
        return None
    return subject, int(tail[-digits:])


class SpeechMotionDataset(torch.utils.data.Dataset):
    """The clips of one split; each item is read from disk when asked for. With
    `phone_fps`, each item also carries frame-wise phone labels at that rate, read from
    <root>/<segments_dir>/<stem>.json (every clip of the split must have one)."""

    def __init__(self, layout: DatasetLayout, split: str, phone_fps: float | None = None):
        self.layout = layout
        self.split_name = split
        self.phone_fps = phone_fps
        spec = layout.split(split)
        wav_dir, vert_dir = layout.root / layout.wav_dir, layout.root / layout.vertices_dir
        for folder in (wav_dir, vert_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"expected the folder {folder} ({layout.name} layout)")
        templates = load_templates(layout)
        subjects, sentences = set(spec.subjects), set(spec.sentences)
        self.entries: list[tuple[str, str, Path, Path]] = []  # (stem, subject, wav, npy)
        self.skipped: list[Path] = []  # wavs without motion, left out (skip_missing_motion)
        for wav in sorted(wav_dir.glob("*.wav")):
            parsed = _parse_stem(wav.stem)
            if parsed is None:
                raise DatasetError(
                    f"cannot read subject and sentence from the file name {wav} "
                    "(expected <subject>_<sentence>.wav ending in the sentence number)"
                )
            subject, sentence = parsed
            if subject not in subjects or sentence not in sentences:
                continue
            npy = vert_dir / f"{wav.stem}.npy"
            if not npy.is_file():
                if layout.skip_missing_motion:
                    self.skipped.append(wav)
                    continue
                raise FileNotFoundError(f"no motion for {wav.name}: expected {npy}")
            if subject not in templates:
                raise DatasetError(
                    f"{layout.root / layout.templates} has no template for subject {subject!r} "
                    f"(it has {sorted(templates)[:8]}{' ...' if len(templates) > 8 else ''})"
                )
            if phone_fps is not None and not self._segments_file(wav.stem).is_file():
                raise FileNotFoundError(
                    f"the phone loss needs phone timings for every clip, but {self._segments_file(wav.stem)} "
                    "does not exist; set phone_loss_weight to 0 for data without them (VOCASET and BIWI have none)"
                )
            self.entries.append((wav.stem, subject, wav, npy))
        if self.skipped:
            names = ", ".join(w.name for w in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"{len(self.skipped)} clip(s) of the {split!r} split have no motion in {vert_dir} and are left out: {names}", stacklevel=2)
        if not self.entries:
            raise DatasetError(
                f"the {split!r} split is empty: no {wav_dir}/<subject>_<XX>.wav for subjects "
                f"{sorted(subjects)} and sentences {sorted(sentences)}"
            )
        self.templates = {s: templates[s] for s in {e[1] for e in self.entries}}
        widths = {t.size for t in self.templates.values()}
        if len(widths) != 1:
            raise DatasetError(f"the templates of split {split!r} have different vertex counts: {sorted(w // 3 for w in widths)}")
        self.nfeats = widths.pop()

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> MotionItem:
        stem, subject, wav, npy = self.entries[index]
        try:
            vertices = np.load(npy, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise DatasetError(f"{npy} is not a plain numpy array file ({exc})") from None
        vertices = np.asarray(vertices[:: self.layout.subsample], dtype=np.float32)
        vertices = vertices.reshape(vertices.shape[0], -1)  # (T, V*3); (T, V, 3) files are accepted too
        if vertices.shape[1] != self.nfeats:
            raise DatasetError(f"{npy} has {vertices.shape[1] // 3} vertices per frame, but the template of {subject} has {self.nfeats // 3}")
        if vertices.shape[0] < 2:
            raise DatasetError(f"{npy} has {vertices.shape[0]} frame(s) after subsampling; at least 2 are needed")
        style = self.layout.styles.index(subject) if subject in self.layout.styles else -1
        audio = normalize_waveform(load_audio(wav))
        return MotionItem(
            audio=audio,
            offsets=vertices - self.templates[subject],
            style=style,
            name=stem,
            subject=subject,
            phones=None if self.phone_fps is None else self._phones(stem, len(audio)),
        )

    def _segments_file(self, stem: str) -> Path:
        return self.layout.root / self.layout.segments_dir / f"{stem}.json"

    def _phones(self, stem: str, num_samples: int) -> np.ndarray:
        path = self._segments_file(stem)
        try:
            segments = json.loads(path.read_text())["segments"]
            return frame_phones(segments, int(num_samples * self.phone_fps / SAMPLE_RATE) + 1, self.phone_fps)
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: cannot read its phone segments ({exc}); expected {{\"segments\": [{{\"phone\", \"start\", \"end\"}}, ...]}}") from None


def collate(items: list[MotionItem]) -> TrainingBatch:
    """Zero-pad audio and motion to the longest item, with masks (1 = real)."""
    if any(item.style < 0 for item in items):
        bad = [item.name for item in items if item.style < 0]
        raise DatasetError(f"cannot train on clips of subjects outside the style list: {bad[:3]}")
    batch, samples = len(items), max(len(item.audio) for item in items)
    frames, nfeats = max(len(item.offsets) for item in items), items[0].offsets.shape[1]
    audio = torch.zeros(batch, samples)
    audio_mask = torch.zeros(batch, samples, dtype=torch.long)
    offsets = torch.zeros(batch, frames, nfeats)
    frame_mask = torch.zeros(batch, frames, dtype=torch.bool)
    for i, item in enumerate(items):
        audio[i, : len(item.audio)] = torch.from_numpy(item.audio)
        audio_mask[i, : len(item.audio)] = 1
        offsets[i, : len(item.offsets)] = torch.from_numpy(item.offsets)
        frame_mask[i, : len(item.offsets)] = True
    style = torch.tensor([item.style for item in items], dtype=torch.long)
    return TrainingBatch(audio=audio, audio_mask=audio_mask, offsets=offsets, frame_mask=frame_mask, style=style, phones=_collate_phones(items))


def _collate_phones(items: list[MotionItem]) -> torch.Tensor | None:
    """(B, Tp) phone labels padded with IGNORE, or None when no item has labels."""
    labelled = [item.phones is not None for item in items]
    if not any(labelled):
        return None
    if not all(labelled):
        raise DatasetError("some clips of the batch have phone labels and some do not")
    phones = torch.full((len(items), max(len(item.phones) for item in items)), IGNORE, dtype=torch.long)
    for i, item in enumerate(items):
        phones[i, : len(item.phones)] = torch.from_numpy(item.phones)
    return phones
