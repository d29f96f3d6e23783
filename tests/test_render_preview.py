"""scripts/render_preview.py: a 3-frame 64x64 Workbench preview of an animated cube."""
from __future__ import annotations

import importlib.util

from pathlib import Path

import numpy as np
import pytest

from .bpy_env import import_bpy
from .conftest import tone, write_wav

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def preview():
    """The render_preview script as a module (bpy imported first, isolated)."""
    import_bpy()
    spec = importlib.util.spec_from_file_location("render_preview", ROOT / "scripts" / "render_preview.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def animated_cube(bpy):
    """An empty scene with a cube whose 'stretch' shape key goes 0 -> 1 -> 0 over frames 1-3,
    plus a colour strip that must not replace the 3D render."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    mesh = bpy.data.meshes.new("Cube")
    corners = [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(corners, [], faces)
    obj = bpy.data.objects.new("Cube", mesh)
    scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis", from_mix=False)
    key = obj.shape_key_add(name="stretch", from_mix=False)
    co = np.array(corners, np.float32) * (1.6, 1.0, 0.6)
    key.points.foreach_set("co", co.ravel())
    for frame, value in ((1, 0.0), (2, 1.0), (3, 0.0)):
        key.value = value
        key.keyframe_insert("value", frame=frame)
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences
    try:
        color = strips.new_effect("Red", "COLOR", channel=1, frame_start=1, length=10)  # Blender 5.0+
    except TypeError:
        color = strips.new_effect("Red", "COLOR", channel=1, frame_start=1, frame_end=11)  # 4.2-4.5
    color.color = (1.0, 0.0, 0.0)
    return scene, obj


def test_render_preview_frames_sheet_and_video(preview, tmp_path):
    bpy = preview.bpy
    scene, obj = animated_cube(bpy)
    engine, objects, worlds = scene.render.engine, len(bpy.data.objects), len(bpy.data.worlds)

    result = preview.render_preview(scene, obj, tmp_path / "out", (1, 3), audio=write_wav(tmp_path / "tone.wav", tone(0.5, 440, 48000), 48000),
                                    every=1, resolution=(64, 64))

    assert [p.name for p in result["frames"]] == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
    images = [preview.read_png_rgb(p) for p in result["frames"]]
    for image in images:
        assert image.shape == (64, 64, 3)
        assert image.astype(float).var() > 0
        assert abs(int(image[32, 32].sum()) - int(image[1, 1].sum())) > 60  # object in the middle, dark corner
        assert not (image[..., 0] > 200).all()  # the colour strip was muted, not rendered
    assert not np.array_equal(images[0], images[1])  # the shape key animates

    sheet = preview.read_png_rgb(result["contact_sheet"])
    assert sheet.shape[0] > 64 and sheet.shape[1] > 2 * 64  # 2x2 grid of 64 px tiles
    assert sheet.astype(float).var() > 0

    assert result["video"] is not None and result["video"].stat().st_size > 0
    assert result["video_has_audio"]
    if result["video_audio_peak"] is not None:  # aud exists in bpy 4.5+
        assert result["video_audio_peak"] > 0.1

    # The scene is as it was: settings restored, temporary camera/world/strip removed.
    assert scene.render.engine == engine and scene.camera is None and scene.world is None
    assert len(bpy.data.objects) == objects and len(bpy.data.worlds) == worlds
    assert [s.name for s in scene.sequence_editor.strips_all] == ["Red"]
    assert not scene.sequence_editor.strips_all["Red"].mute


def test_write_png_round_trips_through_blender(preview, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    preview.write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(preview.read_png_rgb(tmp_path / "x.png"), rgb)


def test_frame_range_of(preview):
    assert preview.frame_range_of((1, 3)) == range(1, 4)
    assert preview.frame_range_of(range(1, 10, 2)) == range(1, 10, 2)
    with pytest.raises(ValueError):
        preview.frame_range_of((5, 1))
