"""Look at retargeting: the project's head rebuilt as a different mesh, driven through a guide.

    .venv/bin/python scripts/look_retarget.py [--out out/look_retarget] [--size 320]

The character: the default head subdivided once (Catmull-Clark, so its vertices and
shape differ from the template), 15 % wider, with a 1.5 cm longer chin, then turned (as a
Y-up import would be), scaled x1.8 and moved, as a new mesh whose object transform turns
it back to face the front. Add Guide places the template on it (rough fit); the artist's
alignment is mimicked by giving the guide the known transform including the extra width
(the longer chin stays unmatched, as it would by hand); Bind; then rig speech motion made
on the template is baked onto the character through the binding, with the same code as
Generate. Renders with `render_preview` (guide hidden): the template and the character
side by side per frame, close on the mouth in <out>/contact_sheet.png, whole heads in
<out>/full_heads.png.
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
import addon_utils  # noqa: E402
from mathutils import Matrix  # noqa: E402

from diffspeaker_blender import bake, retarget  # noqa: E402
from diffspeaker_blender.core import retarget as retarget_math  # noqa: E402
from scripts.render_preview import (  # noqa: E402
    contact_sheet,
    read_png_rgb,
    render_preview,
    write_png,
)
from synth import rig  # noqa: E402
from synth.head import MOUTH_Z, build_head  # noqa: E402
from synth.segments import PhonemeSegment  # noqa: E402

WIDER = 1.15
CHIN = 0.015       # metres added at the bottom of the chin (template size)
SCALE = 1.8
# "pa, meet few sheep, oh you": closures, tuck, spread, rounding and a wide open jaw.
PHONES = ("sil", "p", "aa", "m", "iy", "t", "f", "y", "uw", "sh", "iy", "p", "ow", "y", "uw", "sil")


def speech_segments() -> list:
    out, t = [], 0.2
    for phone in PHONES:
        length = 0.2 if phone == "sil" else 0.11 if phone in ("p", "m", "t", "f", "sh", "y") else 0.17
        if phone != "sil":
            out.append(PhonemeSegment(phone, t, t + length))
        t += length
    return out


def construction() -> tuple[np.ndarray, np.ndarray]:
    """(4, 4) template -> character mesh space without the width (a similarity), and the
    (3, 3) rotation that the character object undoes."""
    a, b = math.radians(90), math.radians(-35)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = SCALE * rz @ rx, (0.3, -0.1, 0.2)
    return m, rz @ rx


def head_object(name: str, vertices: np.ndarray, polygons: list) -> bpy.types.Object:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], polygons)
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def build_character(head) -> bpy.types.Object:
    """The head subdivided (applied modifier), reshaped, turned and moved: a new mesh."""
    obj = head_object("Character", head.vertices.astype(np.float64), head.polygons())
    modifier = obj.modifiers.new("Subdivide", "SUBSURF")
    modifier.levels = 1
    depsgraph = bpy.context.evaluated_depsgraph_get()
    smooth = bpy.data.meshes.new_from_object(obj.evaluated_get(depsgraph))
    co = np.empty(3 * len(smooth.vertices), np.float32)
    smooth.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3).astype(np.float64)
    co[:, 0] *= WIDER
    below = np.clip((MOUTH_Z - 0.01 - co[:, 2]) / 0.06, 0.0, 1.0)           # 0 above the lower lip .. 1 at the chin
    co[:, 2] -= CHIN * below * (co[:, 1] < 0.0)                             # only the front: the neck stays
    m, turn = construction()
    co = co @ m[:3, :3].T + m[:3, 3]
    polygons = [tuple(p.vertices) for p in smooth.polygons]
    bpy.data.objects.remove(obj)
    bpy.data.meshes.remove(smooth)
    character = head_object("Character", co, polygons)
    world = np.eye(4)
    world[:3, :3] = turn.T / SCALE                                          # shown facing the front, at head size
    world[:3, 3] = (0.0, 0.0, 0.0)
    character.matrix_world = Matrix(world.tolist())
    bpy.context.view_layer.update()
    world[:3, 3] = -(world[:3, :3] @ m[:3, 3])                              # and centred where the template is
    character.matrix_world = Matrix(world.tolist())
    return character


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "look_retarget")
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("diffspeaker_blender", default_set=True, handle_error=None)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 30, 1.0
    head = build_head()

    character = build_character(head)
    for other in bpy.context.view_layer.objects:
        other.select_set(False)
    character.select_set(True)
    bpy.context.view_layer.objects.active = character
    print(f"character: {len(character.data.vertices)} vertices (template {len(head.vertices)})")
    assert bpy.ops.diffspeaker.add_guide() == {"FINISHED"}
    guide = retarget.guide_of(character)
    m, _ = construction()
    fitted = np.array([list(row) for row in guide.matrix_basis])
    face = head.vertices[head.regions["upper_face"]]
    wide = m @ np.diag([WIDER, 1.0, 1.0, 1.0])
    off = np.linalg.norm((face @ fitted[:3, :3].T + fitted[:3, 3]) - (face @ wide[:3, :3].T + wide[:3, 3]), axis=1)
    print(f"rough fit: upper face {off.mean() / SCALE * 1e3:.1f} mm off on average, {off.max() / SCALE * 1e3:.1f} mm "
          "at most (template size; the character is 15 % wider)")
    guide.matrix_basis = Matrix(wide.tolist())                              # the artist's alignment
    assert bpy.ops.diffspeaker.bind_guide() == {"FINISHED"}
    print("bind:", character.diffspeaker_binding.summary)

    motion = rig.animate(speech_segments(), fps=30, head=head)              # (T, V, 3) on the template
    binding = retarget.stored_binding(character)
    result = bake.bake_offsets(character, retarget_math.transfer(binding, motion), model_fps=30, scene=scene,
                               start_frame=1, regions=dict(binding.regions))
    print("bake:", result.summary())
    template = head_object("Template", head.vertices.astype(np.float64), head.polygons())
    bake.bake_offsets(template, motion, model_fps=30, scene=scene, start_frame=1)
    template.location.x = 0.0

    frames = range(1, len(motion) + 1)
    every = max(1, math.ceil(len(motion) / 16))
    args.out.mkdir(parents=True, exist_ok=True)
    # The camera frames a box (never rendered) round both heads, so the two sides match.
    mouth = framing_box("MouthFrame", (-0.045 * WIDER, -0.11, MOUTH_Z - 0.04 - CHIN), (0.045 * WIDER, -0.06, MOUTH_Z + 0.03))
    lo, hi = head.vertices.min(0), head.vertices.max(0)
    whole = framing_box("HeadFrame", (lo[0] * WIDER, lo[1], lo[2] - CHIN), (hi[0] * WIDER, hi[1], hi[2]))
    for box, name in ((mouth, "contact_sheet.png"), (whole, "full_heads.png")):
        pngs = []
        for obj, other in ((template, character), (character, template)):
            other.hide_render = True
            shots = render_preview(scene, box, args.out / f"{obj.name.lower()}_{name[:-4]}", frames,
                                   every=every, resolution=(args.size, args.size), video=False)
            other.hide_render = False
            pngs.append(shots["frames"][::every])
        pairs = []
        for left, right in zip(*pngs):
            path = args.out / f"pairs_{name[:-4]}" / Path(left).name
            path.parent.mkdir(exist_ok=True)
            write_png(path, np.concatenate([read_png_rgb(left), read_png_rgb(right)], axis=1))
            pairs.append(path)
        print(contact_sheet(pairs, list(frames)[::every], args.out / name, columns=4))


def framing_box(name: str, lo, hi) -> bpy.types.Object:
    """Eight unrendered points spanning lo..hi (world), for `render_preview` to frame."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    box = head_object(name, corners, [])
    box.hide_render = True
    return box


if __name__ == "__main__":
    main()
