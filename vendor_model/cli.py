"""Command line: python -m vendor_model {info,convert,generate,train}."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .config import SamplerConfig
from .fileio import save_npz


def _official_options(args) -> dict:
    """Options that only matter when the model file is an official .ckpt."""
    from .mesh_io import load_template

    options = {}
    if getattr(args, "preset", None):
        options["preset_name"] = args.preset
    if getattr(args, "template", None):
        options["template"] = load_template(args.template, args.subject)
    if getattr(args, "encoder_config", None):
        options["encoder_hf_config"] = json.loads(Path(args.encoder_config).read_text())
    if getattr(args, "encoder_kind", None):
        options["encoder_kind"] = args.encoder_kind
    return options


def _add_official_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("official .ckpt files")
    group.add_argument("--preset", choices=["vocaset", "biwi"], help="dataset preset (default: from the vertex count)")
    group.add_argument("--template", help="template mesh: .ply, .obj, .npy or templates.pkl")
    group.add_argument("--subject", help="subject in templates.pkl, e.g. FaceTalk_170809_00138_TA")
    group.add_argument("--encoder-config", help="transformers config.json of the speech encoder, if not base-sized")
    group.add_argument("--encoder-kind", choices=["wav2vec2", "hubert"], help="label of the speech encoder")


def _progress_printer(label: str):
    last = [-1]

    def report(done: int, total: int) -> None:
        percent = int(100 * done / total)
        if percent != last[0]:
            last[0] = percent
            print(f"\r{label}: {percent:3d}%", end="" if done < total else "\n", file=sys.stderr, flush=True)

    return report


def cmd_info(args) -> int:
    from .checkpoint import load_any

    bundle = load_any(args.model, **_official_options(args))
    cfg = bundle.cfg
    encoder_params = sum(p.numel() for p in bundle.model.audio_encoder.parameters())
    denoiser_params = sum(p.numel() for p in bundle.model.denoiser.parameters())
    print(f"model:      {args.model}")
    print(f"topology:   {cfg.n_vertices} vertices, {cfg.fps} fps, template {'included' if bundle.template is not None else 'not included'}")
    print(f"denoiser:   width {cfg.latent_dim}, {cfg.num_layers} layer(s), {cfg.num_heads} heads, period {cfg.period}, {denoiser_params:,} parameters")
    print(f"encoder:    {cfg.encoder.kind}, width {cfg.audio_dim}, {encoder_params:,} parameters")
    print(f"styles:     {', '.join(f'{i}={n}' for i, n in enumerate(bundle.style_names))}")
    print(f"smoothing:  {'on' if cfg.smooth_output else 'off'}; longest single window {cfg.max_len} frames")
    for key, value in bundle.info.items():
        print(f"{key + ':':11s} {value}")
    return 0


def cmd_convert(args) -> int:
    from .checkpoint import import_official, save_bundle

    bundle = import_official(args.checkpoint, **_official_options(args))
    if args.styles:
        names = tuple(s.strip() for s in args.styles.split(","))
        if len(names) != bundle.cfg.num_styles:
            raise ValueError(f"--styles names {len(names)} styles but the checkpoint has {bundle.cfg.num_styles}")
        bundle.style_names = names
    save_bundle(bundle, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_generate(args) -> int:
    from .checkpoint import load_any
    from .pipeline import generate

    if Path(args.output).is_dir():
        raise ValueError(f"'{args.output}' is a folder; give a file name for the offsets (e.g. offsets.npz)")
    started = time.perf_counter()
    bundle = load_any(args.model, **_official_options(args))
    sampler = SamplerConfig(
        steps=args.steps, method=args.method, eta=args.eta, guidance=args.guidance,
        seed=args.seed, takes=args.takes, fast=not args.reference_sampler,
    )
    lip_closure = None if args.no_lip_closure else bundle.lip_closure()
    result = generate(
        bundle.model, args.audio, style=bundle.style_index(args.style), sampler=sampler,
        template=bundle.template, device=args.device, progress=_progress_printer("sampling"), lip_closure=lip_closure,
    )
    arrays = dict(
        offsets=result.offsets, fps=np.int64(result.fps), seeds=np.array(result.seeds, dtype=np.int64),
        style=np.int64(result.style), style_name=np.array(bundle.style_names[result.style]),
    )
    if bundle.template is not None:
        arrays["template"] = bundle.template.astype(np.float32)
    save_npz(args.output, **arrays)
    takes, frames = result.offsets.shape[:2]
    print(
        f"wrote {args.output}: {takes} take(s) x {frames} frames ({result.duration_s:.2f} s at {result.fps} fps), "
        f"style {bundle.style_names[result.style]}, seeds {list(result.seeds)}, {time.perf_counter() - started:.1f} s"
        + (f", lips shut on {list(result.lip_closures)} p/b/m" if result.lip_closures else "")
    )
    return 0


def _check_same_model(cfg, model_section: dict, config_path) -> None:
    """A resume continues the checkpoint's model: the config file may repeat the model
    section the run was started with (one file serves start and resume), not change it."""
    from .config import ModelConfig

    if model_section and ModelConfig.from_dict({**cfg.to_dict(), **model_section}) != cfg:
        raise ValueError(f"{config_path}: its \"model\" section differs from the model of the run being resumed; "
                         "a resume continues that model (drop the \"model\" section, or start a new run)")


def _read_configs(paths: list[str]) -> dict:
    """{"model": ..., "train": ...} from the --config files; a later file's keys replace an
    earlier one's, section by section."""
    merged: dict = {}
    for path in paths:
        spec = json.loads(Path(path).read_text())
        if not isinstance(spec, dict) or set(spec) - {"model", "train"}:
            raise ValueError(f"{path}: expected a JSON object with the sections \"model\" and/or \"train\"")
        for section, values in spec.items():
            merged[section] = {**merged.get(section, {}), **values}
    return merged


def cmd_train(args) -> int:
    import dataclasses
    import os

    from .checkpoint import load_bundle
    from .config import ModelConfig, preset
    from .data import load_layout
    from .model import DiffSpeaker
    from .train import TrainConfig, config_for_data, read_train_state, saved_train_options, train

    layout = load_layout(args.data, args.layout)
    overrides = _read_configs(args.config or [])
    options: dict = {}
    state = None
    if args.resume:  # the run keeps its own options; the config file and flags override them
        state = read_train_state(args.resume)
        options = saved_train_options(state)
        _check_same_model(state["bundle"].cfg, overrides.get("model") or {}, " + ".join(args.config or []))
        overrides = {"train": overrides.get("train", {})}  # the same model: nothing left to apply
    options.update(overrides.get("train", {}))
    flags = dict(max_steps=args.steps, epochs=args.epochs, batch_size=args.batch_size, audio_drop_prob=args.audio_drop, out_dir=args.out, device=args.device)
    options.update({k: v for k, v in flags.items() if v is not None})
    train_cfg = TrainConfig.from_dict(options)
    starts = [name for name, given in (("--resume", args.resume), ("--init", args.init), ("--preset", args.preset)) if given]
    if len(starts) > 1 or (overrides.get("model") and (args.resume or args.init)) or (args.encoder and (args.resume or args.init)):
        raise ValueError("start from one of: --preset (with optional model overrides and --encoder), --init or --resume")
    if args.resume:
        model = None
    elif args.init:
        model = load_bundle(args.init)
    else:
        base = config_for_data(preset(args.preset or ("biwi" if layout.name == "biwi" else "vocaset")), layout)
        model_cfg = ModelConfig.from_dict({**base.to_dict(), **overrides.get("model", {})})
        if args.encoder:
            from .encoders import load_encoder_dir

            encoder = load_encoder_dir(args.encoder)
            model = DiffSpeaker(dataclasses.replace(model_cfg, encoder=encoder.cfg), encoder=encoder)
        else:
            if model_cfg.encoder.kind in ("wav2vec2", "hubert"):
                print("note: the speech encoder starts from random weights; give --encoder DIR (e.g. wav2vec2-base-960h) "
                      "to start from a pretrained one, as the official training does", file=sys.stderr)
            model = model_cfg
    path = train(model, layout, train_cfg, resume=state)  # the state read once, above
    if os.environ.get("RANK", "0") == "0":
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vendor_model", description="DiffSpeaker: speech-driven 3D facial animation")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="describe a model file (.safetensors or official .ckpt)")
    info.add_argument("model")
    _add_official_arguments(info)
    info.set_defaults(func=cmd_info)

    convert = sub.add_parser("convert", help="official .ckpt -> our .safetensors (weights, config, template, style names)")
    convert.add_argument("checkpoint")
    convert.add_argument("output")
    convert.add_argument("--styles", help="comma-separated style names (default: official subject names)")
    _add_official_arguments(convert)
    convert.set_defaults(func=cmd_convert)

    gen = sub.add_parser("generate", help="speech file -> vertex offsets (.npz)")
    gen.add_argument("model")
    gen.add_argument("audio")
    gen.add_argument("-o", "--output", default="offsets.npz")
    gen.add_argument("--style", default="0", help="style index or name")
    gen.add_argument("--steps", type=int, default=50, help="sampling steps (quality vs speed)")
    gen.add_argument("--method", choices=["official", "ddim"], help="sampling update (default: the model's own)")
    gen.add_argument("--eta", type=float, default=0.0)
    gen.add_argument("--guidance", type=float, help="audio-free guidance scale (0 = off; default: the model's own)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--takes", type=int, default=1)
    gen.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    gen.add_argument("--reference-sampler", action="store_true", help="use the slow straightforward sampler")
    gen.add_argument("--no-lip-closure", action="store_true", help="keep the model's raw motion: do not shut the lips "
                     "where the speech front-end hears p, b or m (on by default where the model supports it)")
    _add_official_arguments(gen)
    gen.set_defaults(func=cmd_generate)


    trn = sub.add_parser(
        "train", help="train or fine-tune on VOCASET-layout data (multi-GPU: torchrun --nproc_per_node N -m vendor_model train ...)",
    )
    trn.add_argument("--data", required=True, help="folder with vertices_npy/, wav/, templates.pkl (and dataset.json)")
    trn.add_argument("--layout", choices=["auto", "vocaset", "biwi", "json"], default="auto",
                     help="subjects, splits and frame rate (auto = the folder's dataset.json)")
    start = trn.add_mutually_exclusive_group()
    start.add_argument("--preset", choices=["vocaset", "biwi"], help="new model from an official architecture (default: from the layout)")
    start.add_argument("--init", help="fine-tune this .safetensors model")
    trn.add_argument("--encoder", help="local transformers wav2vec2/hubert folder to start the speech encoder from")
    trn.add_argument("--config", action="append", help='JSON file {"model": {ModelConfig fields}, "train": {TrainConfig fields}}; '
                     "repeat it to combine files (a later file's keys win)")
    trn.add_argument("--steps", type=int, help="optimiser steps")
    trn.add_argument("--epochs", type=int, help="epochs (whichever of --steps/--epochs ends first)")
    trn.add_argument("--batch-size", type=int, help="clips per step and process (default 32)")
    trn.add_argument("--audio-drop", type=float, help="fraction of clips trained with silence, for guidance (official 0)")
    trn.add_argument("--out", help="folder for checkpoints and logs (default runs/train)")
    trn.add_argument("--device", help="auto, cpu, cuda or mps")
    trn.add_argument("--resume", help="continue from a *.train-state.pt file, with that run's options unless overridden")
    trn.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:  # bad input: say what and stop, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
