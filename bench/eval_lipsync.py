"""Lip-sync of a model on real speech, scored against forced alignments (no 3D ground truth).

    .venv/bin/python bench/eval_lipsync.py model.safetensors               # all clips, 50 steps
    .venv/bin/python bench/eval_lipsync.py model.safetensors --clips librivox-0880 --steps 20
    .venv/bin/python bench/eval_lipsync.py --demo-random --clips cards-001 --steps 2   # plumbing only
    .venv/bin/python bench/eval_lipsync.py --ground-truth --heldout data/synth600       # the rig's own score

For every clip of bench/real_speech_clips.py the model generates one take, with the p/b/m lip
closure step the add-on applies where the model supports it (vendor_model/lip_closure.py;
--no-lip-closure scores the model's raw motion); the mouth opening
(lower-lip centre to upper-lip centre, minus the template's) is then compared with the phone
alignment (out/real_speech/alignments.json when present, otherwise aligned on the fly):

    closure   fraction of p/b/m whose opening drops below 1 mm (lips meet; --closure-mm)
    open      fraction of open vowels whose opening exceeds 3 mm (jaw drops; --open-mm)
    rest      fraction of frames in pauses > 0.3 s with every lip vertex within 1 mm of rest (--rest-mm)
    lag       audio-loudness -> mouth-opening lag, seconds (positive: the mouth is late; ±0.2 = no
              peak inside the search window)
    jitter    mean |second difference| of the opening, mm/frame²

and, to show how far from the thresholds the misses are, the median over segments of the
lowest opening in each p/b/m and of the highest in each open vowel (mm).

Caveat on closure: the official 3-tap output smoothing (VOCASET preset) lifts a closure held for
only 1-2 frames above 1 mm when the neighbouring vowels are wide open; a mouth must stay shut for
about 3 frames (100 ms at 30 fps) to score. Whole-lip centres are a poor closure measure: on
the project's head they stay 1-2 mm apart in a rig closure with the jaw slightly open (the rig's
own ground truth scores 41 % with them, 96 % on the seam). Try --closure-mm 2 to see how close a model comes.

The upper and lower lip vertex sets come from the model file's info["regions"] (keys
"upper_lip_seam" / "lower_lip_seam", the inner contour where the lips meet, else "upper_lip" /
"lower_lip"), or from --lips-upper / --lips-lower index files (whitespace- or
comma-separated integers, or .npy). --demo-random builds a tiny random-weight model on the
project's head in memory: its numbers are meaningless; it exercises the whole path.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.real_speech_clips import DEFAULT_OUTPUT as DEFAULT_ALIGNMENTS  # noqa: E402
from bench.real_speech_clips import Clip, list_clips, segments_from_json  # noqa: E402
from vendor_model.alignment import PhoneSegment, align  # noqa: E402
from vendor_model.config import SAMPLE_RATE, SamplerConfig  # noqa: E402
from vendor_model import metrics  # noqa: E402

UPPER_LIP_KEYS = ("upper_lip_seam", "upper_lip", "lips_upper", "lip_upper")
LOWER_LIP_KEYS = ("lower_lip_seam", "lower_lip", "lips_lower", "lip_lower")
RATES = (  # (rate, what it is a fraction of): pooled over clips by those counts
    ("closure_rate", "n_bilabials"),
    ("opening_rate", "n_open_vowels"),
    ("rest_in_silence", "n_silence_frames"),
)


# ---- lip regions ---------------------------------------------------------------------------------


def read_indices(path: Path) -> np.ndarray:
    """Vertex indices from .npy or text ("1, 2, 3" as BIWI's region files, or one per line)."""
    if path.suffix == ".npy":
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.int64).reshape(-1)
    return np.array([int(n) for n in re.findall(r"-?\d+", path.read_text())], dtype=np.int64)


def _first_region(regions: dict, keys: tuple[str, ...]) -> np.ndarray | None:
    for key in keys:
        if key in regions:
            return np.asarray(regions[key], dtype=np.int64)
    return None


def lip_regions(
    info: dict, upper_file: Path | None, lower_file: Path | None, n_vertices: int
) -> tuple[np.ndarray, np.ndarray]:
    """(upper lip, lower lip) vertex indices: files first, then the bundle's info['regions']."""
    regions = info.get("regions") or {}
    upper = read_indices(upper_file) if upper_file else _first_region(regions, UPPER_LIP_KEYS)
    lower = read_indices(lower_file) if lower_file else _first_region(regions, LOWER_LIP_KEYS)
    if upper is None or lower is None:
        raise SystemExit(
            "the model file has no upper/lower lip regions (info['regions'] with keys "
            f"{UPPER_LIP_KEYS[0]!r} and {LOWER_LIP_KEYS[0]!r}); pass --lips-upper and --lips-lower index files"
        )
    for name, idx in (("upper lip", upper), ("lower lip", lower)):
        if idx.size == 0 or idx.min() < 0 or idx.max() >= n_vertices:
            raise SystemExit(f"{name} indices must be non-empty and within 0..{n_vertices - 1}")
    return upper, lower


# ---- the random demo model -------------------------------------------------------------------


def demo_random_bundle():
    """A tiny random-weight model on the project's head, with its lip regions."""
    import torch

    from synth.head import build_head
    from vendor_model.checkpoint import ModelBundle
    from vendor_model.config import ModelConfig
    from vendor_model.frontends import logmel_encoder_config
    from vendor_model.model import DiffSpeaker

    head = build_head()
    torch.manual_seed(0)
    cfg = ModelConfig(n_vertices=len(head.vertices), fps=30, latent_dim=32, ff_size=64, num_styles=1,
                      encoder=logmel_encoder_config(hidden_size=32, layers=1))
    model = DiffSpeaker(cfg)
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=1e-3)
    regions = {name: head.regions[name].tolist() for name in ("upper_lip_seam", "lower_lip_seam")}
    return ModelBundle(model.eval(), head.vertices, ("random",), {"note": "random weights", "regions": regions})


# ---- one clip -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOutClip:
    """A test-split utterance of the synthetic set (held-out voice): its TTS phoneme
    timings are exact, so they serve as the ground-truth alignment."""

    name: str
    wav: Path
    meta: Path
    vertices: Path
    style: str

    def audio(self) -> np.ndarray:
        from vendor_model.audio import load_audio

        return load_audio(self.wav)

    def segments(self) -> list[PhoneSegment]:
        return [PhoneSegment(s["phone"], s["start"], s["end"], "") for s in json.loads(self.meta.read_text())["segments"]]

    def rig_offsets(self, template: np.ndarray) -> np.ndarray:
        """(T, V, 3) the rig's motion as offsets from its style's rest head template (V, 3)."""
        return np.load(self.vertices).reshape(-1, *template.shape) - template


def heldout_clips(data: Path, split: str = "test") -> list[HeldOutClip]:
    """The utterances of one split of a synthetic set (default: the held-out voices')."""
    spec = json.loads((data / "dataset.json").read_text())
    if split not in spec["splits"]:
        raise SystemExit(f"{data} has no {split!r} split (it has {', '.join(spec['splits'])})")
    chosen = spec["splits"][split]
    clips = []
    for wav in sorted((data / "wav").glob("*.wav")):
        style, _, number = wav.stem.rpartition("_")
        if style in chosen["subjects"] and int(number.lstrip("s")) in chosen["sentences"]:
            clips.append(HeldOutClip(wav.stem, wav, data / "segments" / f"{wav.stem}.json",
                                     data / "vertices_npy" / f"{wav.stem}.npy", style))
    return clips


def score_ground_truth(clip: HeldOutClip, template: np.ndarray, fps: float, upper: np.ndarray, lower: np.ndarray,
                       thresholds: Thresholds) -> dict:
    """The rig's own motion for a held-out clip (template (V, 3): its style's rest head),
    scored like a model's: the ceiling."""
    audio = clip.audio()
    scores = score_motion(clip.rig_offsets(template), fps, audio, clip.segments(), template, upper, lower, thresholds)
    return {"clip": clip.name, "duration_s": len(audio) / SAMPLE_RATE, "generate_s": 0.0, **scores}


def clip_segments(clip: Clip, cached: dict) -> list[PhoneSegment]:
    """The clip's phones from alignments.json, or a fresh alignment when it is not there."""
    record = cached.get(clip.name)
    if record is not None and record.get("transcript") == clip.transcript:
        return segments_from_json(record["phones"])
    return align(clip.path, clip.transcript)


@dataclass(frozen=True)
class Thresholds:
    """Metres; defaults and their reasoning in vendor_model.metrics."""

    closure: float = metrics.CLOSURE_THRESHOLD_M
    open: float = metrics.OPEN_THRESHOLD_M
    rest: float = metrics.REST_THRESHOLD_M


def score_motion(offsets: np.ndarray, fps: float, audio: np.ndarray, segments: list[PhoneSegment], template: np.ndarray,
                 upper: np.ndarray, lower: np.ndarray, thresholds: Thresholds = Thresholds()) -> dict:
    """The lip-sync numbers of one take: offsets (T, V, 3) at fps for audio (S,) at 16 kHz."""
    template = np.asarray(template, dtype=np.float64).reshape(-1, 3)
    opening = metrics.mouth_opening(offsets, template, upper, lower)  # (T,) metres
    lips = np.union1d(upper, lower)
    silence_frames = metrics.silence_frames(segments, fps, len(opening))
    return {
        "frames": len(opening),
        "fps": int(fps),
        "closure_rate": metrics.closure_rate(opening, segments, fps, threshold=thresholds.closure),
        "n_bilabials": metrics.count_segments(segments, metrics.BILABIALS),
        "opening_rate": metrics.opening_rate(opening, segments, fps, threshold=thresholds.open),
        "n_open_vowels": metrics.count_segments(segments, metrics.OPEN_VOWELS),
        "rest_in_silence": metrics.rest_in_silence(offsets[:, lips], segments, fps, threshold=thresholds.rest),
        "n_silence_frames": int(silence_frames.size),
        "lag_s": metrics.opening_loudness_lag(opening, audio, fps, SAMPLE_RATE),
        "jitter_mm_per_frame2": metrics.jitter(opening),
        "opening_max_mm": float(opening.max() * 1000),
        "opening_mean_mm": float(opening.mean() * 1000),
        # per segment: how far from a hit each one was (the mouth's range, not just the rates)
        "bilabial_min_mm": (metrics.segment_extremes(opening, segments, fps, metrics.BILABIALS, np.min) * 1000).tolist(),
        "open_vowel_max_mm": (metrics.segment_extremes(opening, segments, fps, metrics.OPEN_VOWELS, np.max) * 1000).tolist(),
    }


def score_clip(bundle, clip: Clip, segments: list[PhoneSegment], upper: np.ndarray, lower: np.ndarray,
               sampler: SamplerConfig, style: int, device: str, thresholds: Thresholds = Thresholds(),
               lip_closure=None) -> dict:
    from vendor_model.pipeline import generate

    audio = clip.audio()  # (S,) float32 at 16 kHz
    started = time.perf_counter()
    result = generate(bundle.model, audio, sample_rate=SAMPLE_RATE, style=style, sampler=sampler,
                      template=bundle.template, device=device, lip_closure=lip_closure)
    seconds = time.perf_counter() - started
    scores = score_motion(result.offsets[0], result.fps, audio, segments, bundle.template, upper, lower, thresholds)
    return {"clip": clip.name, "duration_s": len(audio) / SAMPLE_RATE, "generate_s": seconds,
            "lip_closures": result.lip_closures[0] if result.lip_closures else 0, **scores}


def pooled(rows: list[dict]) -> dict:
    """Rates pooled over clips (hits / segments, so a clip with one p counts once, not as 100 %),
    and the other numbers averaged over the clips where they are defined."""
    summary: dict = {"clips": len(rows)}
    for rate, count in RATES:
        total = sum(r[count] for r in rows if not math.isnan(r[rate]))
        hits = sum(r[rate] * r[count] for r in rows if not math.isnan(r[rate]))
        summary[rate] = hits / total if total else float("nan")
        summary[count] = total
    for key in ("lag_s", "jitter_mm_per_frame2", "opening_max_mm", "opening_mean_mm"):
        values = [r[key] for r in rows if not math.isnan(r[key])]
        summary[key] = float(np.mean(values)) if values else float("nan")
    for key in ("bilabial_min_mm", "open_vowel_max_mm"):  # median over all segments of all clips
        values = [v for r in rows for v in r[key]]
        summary[f"{key}_median"] = float(np.median(values)) if values else float("nan")
    return summary


# ---- report -------------------------------------------------------------------------------------


def _rate(value: float, count: int) -> str:
    return "   -   " if math.isnan(value) else f"{value:4.2f}/{count:<2d}"


def print_table(rows: list[dict], summary: dict) -> None:
    print(f"{'clip':<16} {'dur s':>5} {'closure':>7} {'open':>7} {'rest':>7} {'lag ms':>6} {'jitter':>7} {'max mm':>6}")
    for r in rows + [{**summary, "clip": "ALL (pooled)", "duration_s": sum(r["duration_s"] for r in rows)}]:
        lag = "  -  " if math.isnan(r["lag_s"]) else f"{r['lag_s'] * 1000:6.0f}"
        print(f"{r['clip']:<16} {r['duration_s']:5.1f} {_rate(r['closure_rate'], r['n_bilabials'])} "
              f"{_rate(r['opening_rate'], r['n_open_vowels'])} {_rate(r['rest_in_silence'], r['n_silence_frames'])} "
              f"{lag:>6} {r['jitter_mm_per_frame2']:7.3f} {r['opening_max_mm']:6.2f}")
    print("closure/open: rate/segments; rest: rate/frames; jitter: mm/frame² of the opening")
    print(f"median over segments: lowest opening in a p/b/m {summary['bilabial_min_mm_median']:.2f} mm, "
          f"highest in an open vowel {summary['open_vowel_max_mm_median']:.2f} mm")


def _json_safe(value):
    """NaN (no segment of that kind) becomes null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def lip_closure_step(args, bundle, upper: np.ndarray, lower: np.ndarray):
    """The model's p/b/m lip closure (what the add-on applies), on the lip rows being scored;
    None with --no-lip-closure or where the model cannot have one (no phoneme front-end)."""
    if args.no_lip_closure:
        return None
    regions = {"upper_lip_seam": upper.tolist(), "lower_lip_seam": lower.tolist()}
    closure = dataclasses.replace(bundle, info={**bundle.info, "regions": regions}).lip_closure()
    print(f"lip closure: {'on' if closure else 'not available for this model (needs the hama front-end)'}")
    return closure


def sampler_config(args) -> SamplerConfig:
    """One take per clip, as the command line asks."""
    return SamplerConfig(steps=args.steps, method=args.method, eta=args.eta, guidance=args.guidance,
                         guide_pauses=args.guide_pauses, seed=args.seed, takes=1)


def heldout_report(args, label: str, bundle) -> dict:
    """Score the synthetic set's held-out-voice clips: a model's takes, or (bundle None) the
    rig's own motion. The set's dataset.json supplies the lip regions."""
    spec = json.loads((args.heldout / "dataset.json").read_text())
    info = dict(bundle.info) if bundle is not None else {}
    info.setdefault("regions", spec["regions"])
    clips = heldout_clips(args.heldout)[: args.limit] if args.limit else heldout_clips(args.heldout)
    if not clips:
        raise SystemExit(f"no held-out clips in {args.heldout} (its dataset.json test split)")
    templates = None if bundle is not None else {k: v.reshape(-1, 3) for k, v in np.load(args.heldout / "templates.npz").items()}
    n_vertices = bundle.cfg.n_vertices if bundle is not None else len(templates[clips[0].style])
    upper, lower = lip_regions(info, args.lips_upper, args.lips_lower, n_vertices)
    thresholds = Thresholds(args.closure_mm / 1000, args.open_mm / 1000, args.rest_mm / 1000)
    closure = None
    if bundle is None:
        rows = [score_ground_truth(c, templates[c.style], spec["fps"], upper, lower, thresholds) for c in clips]
    else:
        sampler, closure = sampler_config(args), lip_closure_step(args, bundle, upper, lower)
        rows = [score_clip(bundle, c, c.segments(), upper, lower, sampler, bundle.style_index(c.style), args.device, thresholds,
                           closure)
                for c in clips]
    summary = pooled(rows)
    print_table(rows, summary)
    output = args.output or ROOT / "out" / "eval_lipsync" / f"{label}-heldout.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    report = {"model": label, "heldout": str(args.heldout), "lip_closure": repr(closure) if closure else None,
              "clips": rows, "summary": summary}
    output.write_text(json.dumps(_json_safe(report), indent=1))
    print(f"wrote {output}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="our .safetensors model file (or an official .ckpt)")
    parser.add_argument("--demo-random", action="store_true", help="a tiny random-weight model made on the fly")
    parser.add_argument("--ground-truth", action="store_true", help="with --heldout: score the rig's own motion instead of a model")
    parser.add_argument("--clips", nargs="+", help="clip names (default: all); see bench/real_speech_clips.py")
    parser.add_argument("--heldout", type=Path, help="score the held-out-voice test split of this synthetic set instead "
                        "(its dataset.json also supplies the head's lip regions)")
    parser.add_argument("--limit", type=int, help="only the first N clips")
    parser.add_argument("--alignments", type=Path, default=DEFAULT_ALIGNMENTS)
    parser.add_argument("--lips-upper", type=Path, help="upper-lip vertex index file")
    parser.add_argument("--lips-lower", type=Path, help="lower-lip vertex index file")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--method", choices=["official", "ddim"], help="sampling update (default: the model's own)")
    parser.add_argument("--eta", type=float, default=0.0, help="DDIM stochasticity (0 deterministic, 1 DDPM-like)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, help="audio-free guidance scale (default: the model's own)")
    parser.add_argument("--guide-pauses", action="store_true", help="guide the clip's pauses too, as the official code does "
                        "(default: guidance fades out where the clip is silent)")
    parser.add_argument("--no-lip-closure", action="store_true", help="score the model's own motion, without the p/b/m "
                        "lip closure step the add-on applies (vendor_model/lip_closure.py)")
    parser.add_argument("--style", default="0", help="style index or name")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--closure-mm", type=float, default=metrics.CLOSURE_THRESHOLD_M * 1000)
    parser.add_argument("--open-mm", type=float, default=metrics.OPEN_THRESHOLD_M * 1000)
    parser.add_argument("--rest-mm", type=float, default=metrics.REST_THRESHOLD_M * 1000)
    parser.add_argument("--output", type=Path, help="JSON report (default: out/eval_lipsync/<model>.json)")
    args = parser.parse_args(argv)

    if args.ground_truth:
        if args.heldout is None or args.model is not None or args.demo_random:
            parser.error("--ground-truth scores the held-out clips' own motion: give --heldout DATA and no model")
        return heldout_report(args, "ground-truth", None)
    if args.demo_random == (args.model is not None):
        parser.error("give a model file or --demo-random (not both)")
    if args.demo_random:
        bundle, label = demo_random_bundle(), "demo-random"
    else:
        from vendor_model.checkpoint import load_any

        bundle, label = load_any(args.model), args.model.stem
    if bundle.template is None:
        parser.error("the model has no template mesh; lip-sync metrics need the rest shape")
    if args.heldout is not None:
        return heldout_report(args, label, bundle)
    upper, lower = lip_regions(bundle.info, args.lips_upper, args.lips_lower, bundle.cfg.n_vertices)

    clips = list_clips()
    if args.clips:
        unknown = sorted(set(args.clips) - {c.name for c in clips})
        if unknown:
            parser.error(f"unknown clips {unknown}; available: {', '.join(c.name for c in clips)}")
        clips = [c for c in clips if c.name in args.clips]
    clips = clips[: args.limit] if args.limit else clips
    if not clips:
        parser.error("no clips (is Debian's pocketsphinx-testdata installed?)")
    cached = json.loads(args.alignments.read_text())["clips"] if args.alignments.is_file() else {}

    sampler = sampler_config(args)
    style = bundle.style_index(args.style)
    thresholds = Thresholds(args.closure_mm / 1000, args.open_mm / 1000, args.rest_mm / 1000)
    closure = lip_closure_step(args, bundle, upper, lower)
    rows = [score_clip(bundle, c, clip_segments(c, cached), upper, lower, sampler, style, args.device, thresholds, closure)
            for c in clips]
    summary = pooled(rows)
    if args.demo_random:
        print("DEMO MODEL WITH RANDOM WEIGHTS: the numbers below only show the evaluation runs.")
    print_table(rows, summary)

    report = {
        "model": label,
        "info_note": bundle.info.get("note"),
        "lip_closure": repr(closure) if closure else None,
        "sampler": {"steps": args.steps, "eta": args.eta, "guide_pauses": args.guide_pauses, "seed": args.seed, "style": style,
                    "guidance": bundle.cfg.diffusion.guidance_scale if args.guidance is None else args.guidance},
        "thresholds_m": asdict(thresholds),
        "lip_regions": {"upper": upper.tolist(), "lower": lower.tolist()},
        "clips": rows,
        "summary": summary,
    }
    output = args.output or ROOT / "out" / "eval_lipsync" / f"{label}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(_json_safe(report), indent=1))
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
