"""Publish a trained checkpoint as the add-on's built-in model.

    .venv/bin/python -m synth.publish runs/default/step-0003000.safetensors

Writes `diffspeaker_blender/models/default.safetensors` in float16 (half the size;
computed in float32 when loaded), with the head's lip and face regions in its info
so evaluation and retargeting find them, and the provenance of the training run.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from vendor_model.checkpoint import load_bundle, save_bundle

from .head import build_head

DEFAULT = Path(__file__).resolve().parents[1] / "diffspeaker_blender" / "models" / "default.safetensors"
REGIONS = ("lips", "upper_lip", "lower_lip", "upper_lip_seam", "lower_lip_seam", "jaw", "upper_face", "eyes", "teeth", "tongue")
MAX_BYTES = 50 * 2**20  # the repository's budget for shipped weights


def publish(checkpoint: Path, out: Path = DEFAULT, sample_method: str | None = None, guidance: float | None = None) -> Path:
    """sample_method and guidance set how the model is sampled unless the caller says
    otherwise (sampling choices, not part of the weights): the update (e.g. "ddim" for a run
    started before its config named it) and the audio-free guidance scale."""
    bundle = load_bundle(checkpoint)
    sampling = {"sample_method": sample_method, "guidance_scale": guidance}
    sampling = {k: v for k, v in sampling.items() if v is not None}
    if sampling:
        bundle.model.cfg = dataclasses.replace(bundle.cfg, diffusion=dataclasses.replace(bundle.cfg.diffusion, **sampling))
    head = build_head()
    if bundle.cfg.n_vertices != len(head.vertices):
        raise ValueError(f"{checkpoint} animates {bundle.cfg.n_vertices} vertices, the project's head has {len(head.vertices)}")
    bundle.template = head.vertices
    bundle.info = {
        **bundle.info,
        "name": "DiffSpeaker default (trained on the project's synthetic rig data)",
        "licence": "GPL-3.0-or-later",
        "checkpoint": Path(checkpoint).name,
        "regions": {name: head.regions[name].tolist() for name in REGIONS},
    }
    path = save_bundle(bundle, out, weights_dtype=torch.float16)
    if path.stat().st_size > MAX_BYTES:
        raise ValueError(f"{path} is {path.stat().st_size / 2**20:.1f} MB, over the {MAX_BYTES / 2**20:.0f} MB budget")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT)
    parser.add_argument("--sample-method", choices=["official", "ddim"], help="the model's default sampling update")
    parser.add_argument("--guidance", type=float, help="the model's default audio-free guidance scale")
    args = parser.parse_args()
    path = publish(args.checkpoint, args.out, args.sample_method, args.guidance)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")


if __name__ == "__main__":
    main()
