"""Look at the timing: bake a known mouth motion against a sound strip and render it.

    .venv/bin/python scripts/look_timing.py [--fps 24] [--out out/look_timing]

Two 0.25 s syllables at audio times 1.0 s and 2.0 s open the lower lip by 8 mm
(motion made at the model's 30 fps). The strip starts at frame 10, so at 24 fps the
mouth must be open on frames 35-40 and 59-64. The script prints the evaluated
lower-lip displacement per scene frame and renders frames, a contact sheet and an
MP4 with the sound. It uses the FLAME sample mesh from ../shared when present
(research-only: read in place, the renders are not to be shipped), else a sphere.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bpy_env import import_bpy  # noqa: E402
from tests.conftest import TOPOLOGIES, write_wav  # noqa: E402

bpy = import_bpy()
from diffspeaker_blender import bake, compat  # noqa: E402

RATE, MODEL_FPS, STRIP_START = 16000, 30, 10


def face_mesh():
    """(vertices, faces, lower-lip vertex indices)."""
    flame = TOPOLOGIES / "FLAME_sample.ply"
    if flame.is_file():
        from vendor_model.mesh_io import read_ply
        from vendor_model.untrusted import load_numpy_pickle

        verts, faces = read_ply(flame)
        lips = load_numpy_pickle(TOPOLOGIES / "FLAME_masks.pkl")["lips"]
        return verts, faces, lips[verts[lips, 1] < np.median(verts[lips, 1])]
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.1)
    sphere = bpy.context.active_object
    verts = np.array([v.co[:] for v in sphere.data.vertices], np.float32)
    faces = [list(p.vertices) for p in sphere.data.polygons]
    bpy.data.objects.remove(sphere)
    return verts, faces, np.flatnonzero((verts[:, 1] < -0.05) & (verts[:, 2] < 0) & (verts[:, 2] > -0.04))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--out", default=str(ROOT / "out" / "look_timing"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)

    t = np.arange(3 * RATE) / RATE
    envelope = ((np.abs(t - 1.125) < 0.125) | (np.abs(t - 2.125) < 0.125)).astype(np.float32)
    wav = write_wav(out / "syllables.wav", 0.4 * envelope * np.sin(2 * np.pi * 180 * t), RATE)
    verts, faces, lower = face_mesh()
    opening = envelope[(np.arange(3 * MODEL_FPS) / MODEL_FPS * RATE).astype(int)]
    offsets = np.zeros((1, len(opening), len(verts), 3), np.float32)
    offsets[0][:, lower, 1] = -0.008 * opening[:, None]

    mesh = bpy.data.meshes.new("Face")
    mesh.from_pydata(np.asarray(verts).tolist(), [], np.asarray(faces).tolist() if len(faces) else [])
    obj = bpy.data.objects.new("Face", mesh)
    scene = bpy.context.scene
    scene.collection.objects.link(obj)
    scene.render.fps = args.fps
    strip = compat.new_sound_strip(scene, "syllables", str(wav), frame_start=STRIP_START)
    print(bake.bake_offsets(obj, offsets, model_fps=MODEL_FPS, scene=scene, start_frame=strip.frame_start).summary())

    open_frames = []
    for frame in range(STRIP_START, STRIP_START + 3 * args.fps):
        scene.frame_set(frame)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).to_mesh()
        co = np.empty(len(evaluated.vertices) * 3, np.float32)
        evaluated.vertices.foreach_get("co", co)
        if co.reshape(-1, 3)[lower, 1].mean() - verts[lower, 1].mean() < -0.001:
            open_frames.append(frame)
    print(f"mouth open (lower lip down > 1 mm) on scene frames: {open_frames}")
    seconds = {f: (f - STRIP_START) / args.fps for f in range(STRIP_START, STRIP_START + 3 * args.fps)}
    loud = [f for f, s in seconds.items() if 1.0 < s < 1.25 or 2.0 < s < 2.25]
    print(f"audio loud on scene frames:               {loud}")

    spec = importlib.util.spec_from_file_location("render_preview", ROOT / "scripts" / "render_preview.py")
    preview = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preview)
    first, last = STRIP_START + int(0.8 * args.fps), STRIP_START + int(2.4 * args.fps)
    paths = preview.render_preview(scene, obj, out, (first, last), audio=str(wav), every=2, resolution=(320, 320),
                                   view="TOP" if (TOPOLOGIES / "FLAME_sample.ply").is_file() else "FRONT")
    print(f"contact sheet: {paths['contact_sheet']}\nvideo: {paths['video']}")


if __name__ == "__main__":
    main()
