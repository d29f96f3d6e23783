"""The main job on built-in defaults (`./run demo`): speech in, animated head out.

    .venv/bin/python scripts/demo.py [--out out/demo] [--audio FILE] [--frames N]

1. loads the built-in model (`diffspeaker_blender/models/*.safetensors`);
2. generates motion for the bundled speech clip (`assets/speech/`);
3. builds the project's own head in Blender, adds the clip as a sound strip and
   bakes the motion as shape keys through the add-on's bake code;
4. saves `demo.blend`, exports `demo.fbx` with the shape-key animation, and renders
   a Workbench preview `preview.mp4` (with the sound) and `contact_sheet.png`.

No downloads, nothing from outside the repository. When the build has no trained
model yet, a model with random weights and the head's topology stands in, and the
script says so: the pipeline then runs end to end but the mouth does not lip-sync.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bpy_env import import_bpy  # noqa: E402

bpy = import_bpy()

from diffspeaker_blender import bake, compat  # noqa: E402
from diffspeaker_blender.core.model_source import builtin_model_path  # noqa: E402
from diffspeaker_blender.export import export_fbx  # noqa: E402
from diffspeaker_blender.head_mesh import add_head  # noqa: E402
from synth.head import build_head  # noqa: E402
from vendor_model.checkpoint import ModelBundle, load_bundle  # noqa: E402
from vendor_model.config import SamplerConfig  # noqa: E402
from vendor_model.pipeline import generate  # noqa: E402

SPEECH = ROOT / "assets" / "speech" / "austen_married.wav"
UNTRAINED = "NO TRAINED MODEL IN THIS BUILD: using random weights; the pipeline runs, the mouth does not lip-sync."


def load_model(head) -> ModelBundle:
    path = builtin_model_path()
    if path is not None:
        print(f"model     {path.relative_to(ROOT)}")
        return load_bundle(path)
    import torch

    from vendor_model.config import ModelConfig
    from vendor_model.frontends import logmel_encoder_config
    from vendor_model.model import DiffSpeaker

    print(UNTRAINED)
    torch.manual_seed(0)
    cfg = ModelConfig(n_vertices=len(head.vertices), fps=30, latent_dim=64, ff_size=128, num_styles=1,
                      encoder=logmel_encoder_config(hidden_size=64, layers=1))
    model = DiffSpeaker(cfg)
    torch.nn.init.normal_(model.denoiser.motion_decoder.weight, std=1e-5)  # small: a calm head, visibly untrained
    return ModelBundle(model.eval(), head.vertices, ("random",), {"note": UNTRAINED})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"))
    parser.add_argument("--audio", default=str(SPEECH))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=6, help="contact sheet: every Nth frame")
    parser.add_argument("--render-frames", type=int, help="render only the first N frames (quick checks)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    head = build_head()
    bundle = load_model(head)
    if bundle.cfg.n_vertices != len(head.vertices):
        raise SystemExit(f"the built-in model animates {bundle.cfg.n_vertices} vertices, the head has {len(head.vertices)}")
    result = generate(bundle.model, args.audio, sampler=SamplerConfig(steps=args.steps, seed=0), lip_closure=bundle.lip_closure())
    closures = f", lips shut on {result.lip_closures[0]} p/b/m" if result.lip_closures else ""
    print(f"speech    {args.audio} ({result.duration_s:.2f} s) -> {result.num_frames} frames at {result.fps} fps{closures}")

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    obj = add_head(bpy.context)
    strip = compat.new_sound_strip(scene, "speech", str(Path(args.audio).resolve()), channel=1, frame_start=1)
    summary = bake.bake_offsets(obj, result.offsets, model_fps=result.fps, scene=scene, start_frame=strip.frame_start)
    scene.frame_start, scene.frame_end = 1, int(summary.last_frame)
    print(f"bake      {summary.summary()}")

    blend = out / "demo.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    for o in bpy.context.scene.objects:
        o.select_set(o == obj)
    bpy.context.view_layer.objects.active = obj
    fbx = out / "demo.fbx"
    export_fbx(str(fbx))
    print(f"files     {blend}\n          {fbx}")

    spec = importlib.util.spec_from_file_location("render_preview", ROOT / "scripts" / "render_preview.py")
    preview = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preview)
    # The scene's own sound strip is muxed into the MP4.
    last = scene.frame_end if args.render_frames is None else min(scene.frame_end, scene.frame_start + args.render_frames - 1)
    paths = preview.render_preview(scene, obj, out, (scene.frame_start, last), every=args.every, resolution=(320, 320))
    print(f"preview   {paths['video']}\n          {paths['contact_sheet']}")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
