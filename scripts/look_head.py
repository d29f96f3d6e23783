"""Look at the synthetic head: render it neutral, with the jaw open and in a few visemes.

    .venv/bin/python scripts/look_head.py [--out out/look_head] [--size 384]

Builds `synth.head.build_head()` into an empty bpy scene, colours the faces by material
group (skin, lips, mouth, teeth, tongue, eye, iris) and renders Workbench stills from
the front, at three-quarters and close on the mouth, for each pose: one PNG per
(pose, view) plus `sheet.png`, a grid with one row per pose (columns: the views).
Poses are rig parameter vectors (`synth.rig.PARAMETERS`), deformed with `synth.rig.deform`.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.bpy_env import import_bpy  # noqa: E402

bpy = import_bpy()
from scripts.render_preview import read_png_rgb, write_png  # noqa: E402
from synth import rig  # noqa: E402
from synth.head import MATERIAL_COLORS, MATERIALS, build_head  # noqa: E402

# pose name -> parameter values (others 0)
POSES = {
    "neutral": {},
    "jaw_open": {"jaw_open": 1.0},
    "aa": {"jaw_open": 0.85, "spread": 0.1},
    "p_closure": {"jaw_open": 0.4, "lip_close": 1.0, "lip_press": 0.7},
    "f": {"jaw_open": 0.3, "lower_lip_tuck": 1.0},
    "uw": {"jaw_open": 0.2, "round": 0.9, "protrude": 0.7},
    "iy_smile": {"jaw_open": 0.25, "spread": 0.7, "smile": 0.6},
    "t_tongue": {"jaw_open": 0.55, "tongue_up": 1.0},
}
# view name -> (camera direction from the target: azimuth deg from front, elevation deg, distance m, target)
VIEWS = {
    "front": (0.0, 3.0, 0.62, (0.0, -0.02, -0.005)),
    "three_quarter": (-38.0, 8.0, 0.62, (0.0, -0.01, -0.005)),
    "profile": (-90.0, 0.0, 0.62, (0.0, -0.01, -0.005)),
    "mouth": (-12.0, 4.0, 0.22, (0.0, -0.09, -0.05)),
}


def head_object(head):
    mesh = bpy.data.meshes.new("SynthHead")
    mesh.from_pydata(head.vertices.tolist(), [], head.polygons())
    for name in MATERIALS:
        material = bpy.data.materials.new(name)
        material.diffuse_color = (*MATERIAL_COLORS[name], 1.0)
        mesh.materials.append(material)
    mesh.polygons.foreach_set("material_index", head.polygon_material().astype(np.int32))
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.validate()
    obj = bpy.data.objects.new("SynthHead", mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def setup_scene(size: int):
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.image_settings.file_format = "PNG"
    scene.display.shading.light = "STUDIO"
    scene.display.shading.color_type = "MATERIAL"
    scene.display.shading.show_cavity = True
    scene.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("World")
    world.color = (0.05, 0.05, 0.06)
    scene.world = world
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.angle = math.radians(30.0)
    camera.data.clip_start = 0.01
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene, camera


def aim(camera, azimuth: float, elevation: float, distance: float, target) -> None:
    """Put the camera `distance` from `target`, `azimuth` degrees round from the front (-Y)."""
    az, el = math.radians(azimuth), math.radians(elevation)
    direction = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    camera.location = tuple(np.asarray(target) + distance * direction)
    # Blender cameras look down their local -Z: point -Z at the target, keep +Y up.
    forward = -direction
    camera.rotation_euler = (math.acos(-forward[2]), 0.0, math.atan2(-forward[0], forward[1]))


def pose_vertices(head, values: dict, model) -> np.ndarray:
    params = np.zeros((1, len(rig.PARAMETERS)), np.float32)
    for name, value in values.items():
        params[0, rig.PARAMETERS.index(name)] = value
    return head.vertices + rig.deform(model, params)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "look_head")
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--poses", nargs="*", default=list(POSES), choices=list(POSES))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    head = build_head()
    model = rig.build_rig(head)
    scene, camera = setup_scene(args.size)
    obj = head_object(head)
    rows = []
    for pose in args.poses:
        obj.data.vertices.foreach_set("co", pose_vertices(head, POSES[pose], model).ravel())
        obj.data.update()
        tiles = []
        for view, (azimuth, elevation, distance, target) in VIEWS.items():
            aim(camera, azimuth, elevation, distance, target)
            path = args.out / f"{pose}_{view}.png"
            scene.render.filepath = str(path)
            bpy.ops.render.render(write_still=True)
            print(path)
            tiles.append(read_png_rgb(path))
        rows.append(np.concatenate(tiles, axis=1))
    write_png(args.out / "sheet.png", np.concatenate(rows, axis=0))
    print(args.out / "sheet.png")


if __name__ == "__main__":
    main()
