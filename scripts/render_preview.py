"""Render a quick Workbench preview of an animated object: PNG frames, a contact sheet
with frame numbers, and an MP4 with the speech muxed in.

From a shell, with the project's Python (bpy wheel, no Blender executable needed):

    .venv/bin/python scripts/render_preview.py face.blend --object Face --frames 1 120 \\
        --out out/preview --audio speech.wav

Inside Blender, on the open file:

    render_preview(bpy.context.scene, bpy.data.objects["Face"], "/tmp/preview", (1, 120),
                   audio="speech.wav")

The scene is left as it was found: every render setting touched is restored and the
temporary camera, world and sound strip are removed. A camera looking from Blender's front
(`view="FRONT"`, along +Y; `TOP` suits a raw Y-up face mesh) frames the object's bounding
box, sampled over the frame range; the look is Workbench studio lighting on a single
grey-beige colour against a dark background.

The MP4 is a second, cheap Workbench pass of the 3D scene with the scene's sound strips
(and `audio`, added as a temporary strip) muxed in. Audio is mixed only while
`render.use_sequencer` is on (with it off, bpy 5.0 writes a silent audio track), so the
sequencer stays on and any non-sound strips are muted meanwhile: the 3D scene is what
gets rendered.
"""
from __future__ import annotations

import argparse
import atexit
import math
import os
import shutil
import struct
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np


def _import_bpy():
    """bpy, with Blender's user resources in a temporary directory when we are the first to import it."""
    if "bpy" not in sys.modules and "BLENDER_USER_RESOURCES" not in os.environ:
        path = tempfile.mkdtemp(prefix="render-preview-user-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ["BLENDER_USER_RESOURCES"] = path
    import bpy

    return bpy


bpy = _import_bpy()

BACKGROUND = (0.02, 0.02, 0.025)  # linear world colour: a dark blue-grey
SURFACE = (0.8, 0.72, 0.66)  # Workbench single colour
FRAMING_MARGIN = 1.15  # bounding box half-size x margin fills the frame
CAMERA_FOV_DEG = 30.0  # a narrow lens: little perspective distortion on faces
MAX_SHEET_TILES = 24  # the default `every` keeps the contact sheet at most this big

# 5x7 bitmap digits for frame numbers on the contact sheet (no PIL needed).
_DIGITS = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
}


# ------------------------------------------------------------------ public API


def render_preview(
    scene,
    obj,
    out_dir: str | Path,
    frames: tuple[int, int] | range,
    audio: str | Path | None = None,
    every: int | None = None,
    resolution: tuple[int, int] = (256, 256),
    video: bool = True,
    audio_start_frame: int | None = None,
    view: str = "FRONT",
) -> dict:
    """Render `obj` in `scene` over `frames` into `out_dir`.

    frames: (first, last) inclusive, or a range (its step becomes the frame step).
    audio: a sound file added to the MP4 at `audio_start_frame` (default: the first frame);
        sound strips already in the scene are muxed in too.
    every: contact-sheet stride (default: at most MAX_SHEET_TILES tiles).
    view: camera direction, one of VIEWS (FRONT = Blender's front view, along +Y).
    Returns {"frames": [png paths], "contact_sheet": path, "video": path or None,
    "video_has_audio": whether an AAC track was muxed (audio given or sound strips present),
    "video_audio_peak": peak |sample| of that track (None without one or without `aud`)}.
    """
    frame_range = frame_range_of(frames)
    width, height = resolution
    if video and (width % 2 or height % 2):
        raise ValueError(f"H.264 needs even dimensions, got {width}x{height}")
    out_dir = Path(bpy.path.abspath(str(out_dir)))
    (out_dir / "frames").mkdir(parents=True, exist_ok=True)

    state = SceneState(scene)
    try:
        setup_workbench(state, resolution)
        setup_frames(state, frame_range)
        frame_camera(state, obj, frame_range, view)
        state.set(scene, "world", _temporary_world(state))
        has_sound = prepare_sequencer(state, audio, frame_range.start if audio_start_frame is None
                                      else audio_start_frame)
        pngs = render_frames(state, out_dir / "frames", frame_range)
        mp4 = render_video(state, out_dir / "preview.mp4", has_sound) if video else None
    finally:
        state.restore()

    every = every or max(1, math.ceil(len(pngs) / MAX_SHEET_TILES))
    sheet = contact_sheet(pngs[::every], list(frame_range)[::every], out_dir / "contact_sheet.png")
    return {
        "frames": pngs,
        "contact_sheet": sheet,
        "video": mp4,
        "video_has_audio": mp4 is not None and has_sound,
        "video_audio_peak": audio_peak(mp4) if mp4 is not None and has_sound else None,
    }


def frame_range_of(frames: tuple[int, int] | range) -> range:
    """(first, last) inclusive or a range -> a non-empty range."""
    if isinstance(frames, range):
        result = frames
    else:
        first, last = frames
        result = range(int(first), int(last) + 1)
    if len(result) == 0 or result.step < 1:
        raise ValueError(f"empty or backwards frame range: {frames}")
    return result


# ------------------------------------------------------------- scene settings


class SceneState:
    """Sets attributes while remembering their first value; `restore()` puts everything back
    (in the order first set, e.g. media_type before file_format) and runs cleanups."""

    def __init__(self, scene):
        self.scene = scene
        self._saved: dict[tuple[int, str], tuple[object, str, object]] = {}
        self._cleanups: list[Callable[[], None]] = []
        self._frame = scene.frame_current

    def set(self, owner, attr: str, value) -> None:
        self._saved.setdefault((owner.as_pointer(), attr), (owner, attr, getattr(owner, attr)))
        setattr(owner, attr, value)

    def on_restore(self, cleanup: Callable[[], None]) -> None:
        self._cleanups.append(cleanup)

    def restore(self) -> None:
        for owner, attr, value in self._saved.values():
            try:
                setattr(owner, attr, value)
            except (AttributeError, TypeError, ValueError) as exc:
                print(f"render_preview: could not restore {attr}: {exc}", file=sys.stderr)
        for cleanup in reversed(self._cleanups):
            cleanup()
        self.scene.frame_set(self._frame)


def setup_workbench(state: SceneState, resolution: tuple[int, int]) -> None:
    """Workbench, studio light, single colour, standard view transform, no compositing."""
    scene, render = state.scene, state.scene.render
    for owner, attr, value in (
        (render, "engine", "BLENDER_WORKBENCH"),
        (render, "resolution_x", int(resolution[0])),
        (render, "resolution_y", int(resolution[1])),
        (render, "resolution_percentage", 100),
        (render, "pixel_aspect_x", 1.0),
        (render, "pixel_aspect_y", 1.0),
        (render, "use_border", False),
        (render, "film_transparent", False),
        (render, "use_compositing", False),
        (render, "use_stamp", False),
        (render, "use_file_extension", True),
        (scene.display.shading, "light", "STUDIO"),
        (scene.display.shading, "color_type", "SINGLE"),
        (scene.display.shading, "single_color", SURFACE),
        (scene.display.shading, "show_cavity", False),
        (scene.view_settings, "view_transform", "Standard"),
        (scene.view_settings, "look", "None"),
        (scene.view_settings, "exposure", 0.0),
        (scene.view_settings, "gamma", 1.0),
    ):
        state.set(owner, attr, value)


def setup_frames(state: SceneState, frames: range) -> None:
    scene = state.scene
    state.set(scene, "frame_start", frames.start)
    state.set(scene, "frame_end", frames[-1])
    state.set(scene, "frame_step", frames.step)


def object_bounds(scene, obj, frames: range, samples: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """World-space (min, max) corners of the evaluated object over up to `samples` frames."""
    picks = sorted({frames[round(i * (len(frames) - 1) / max(samples - 1, 1))] for i in range(samples)})
    corners = []
    for frame in picks:
        scene.frame_set(frame)
        evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)  # (4, 4)
        local = np.array([tuple(c) for c in evaluated.bound_box], dtype=np.float64)  # (8, 3)
        corners.append(local @ matrix[:3, :3].T + matrix[:3, 3])
    points = np.concatenate(corners)  # (8 * len(picks), 3)
    return points.min(axis=0), points.max(axis=0)


# view name -> (camera euler XYZ in degrees, world axis the camera looks along (+1/-1, index),
#               world axis pointing right on screen, world axis pointing up on screen)
VIEWS: dict[str, tuple[tuple[float, float, float], tuple[int, int], int, int]] = {
    "FRONT": ((90, 0, 0), (+1, 1), 0, 2),     # Blender's front view (numpad 1): looks along +Y
    "BACK": ((90, 0, 180), (-1, 1), 0, 2),
    "RIGHT": ((90, 0, 90), (-1, 0), 1, 2),
    "LEFT": ((90, 0, -90), (+1, 0), 1, 2),
    "TOP": ((0, 0, 0), (-1, 2), 0, 1),        # e.g. a raw Y-up face mesh (looking along +Z)
    "BOTTOM": ((180, 0, 0), (+1, 2), 0, 1),
}


def frame_camera(state: SceneState, obj, frames: range, view: str = "FRONT"):
    """Add a temporary perspective camera that looks at the object from `view` (default:
    Blender's front view, along +Y) and fits its bounding box; make it the scene camera."""
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    euler, (sign, depth_axis), right_axis, up_axis = VIEWS[view]
    scene = state.scene
    low, high = object_bounds(scene, obj, frames)
    center = (low + high) / 2
    half = np.maximum((high - low) / 2, 1e-3) * FRAMING_MARGIN  # (x, y, z)
    aspect = scene.render.resolution_x / scene.render.resolution_y
    tan_wide = math.tan(math.radians(CAMERA_FOV_DEG) / 2)  # the FOV spans the longer side
    tan_x, tan_y = (tan_wide, tan_wide / aspect) if aspect >= 1 else (tan_wide * aspect, tan_wide)
    distance = max(half[right_axis] / tan_x, half[up_axis] / tan_y)  # from the box's near face

    data = bpy.data.cameras.new("DiffSpeakerPreviewCamera")
    data.lens_unit = "FOV"
    data.sensor_fit = "AUTO"
    data.angle = math.radians(CAMERA_FOV_DEG)
    data.clip_start = distance * 0.01
    data.clip_end = (distance + 2 * half[depth_axis]) * 4
    camera = bpy.data.objects.new("DiffSpeakerPreviewCamera", data)
    location = center.copy()
    location[depth_axis] -= sign * ((high - low)[depth_axis] / 2 + distance)
    camera.location = tuple(location)
    camera.rotation_euler = tuple(math.radians(a) for a in euler)
    scene.collection.objects.link(camera)

    def remove() -> None:
        bpy.data.objects.remove(camera)
        bpy.data.cameras.remove(data)

    state.on_restore(remove)
    state.set(scene, "camera", camera)
    return camera


def _temporary_world(state: SceneState):
    """A world whose colour is the dark Workbench render background."""
    world = bpy.data.worlds.new("DiffSpeakerPreviewWorld")
    world.color = BACKGROUND
    state.on_restore(lambda: bpy.data.worlds.remove(world))
    return world


def prepare_sequencer(state: SceneState, audio: str | Path | None, audio_start_frame: int) -> bool:
    """Add `audio` as a temporary sound strip and mute every non-sound strip, so renders show
    the 3D scene while the sequencer (needed for audio muxing) stays on.
    Returns whether any unmuted sound strip is left to mux."""
    scene = state.scene
    state.set(scene.render, "use_sequencer", True)
    if audio is None and scene.sequence_editor is None:
        return False
    created_editor = scene.sequence_editor is None
    editor = scene.sequence_editor_create()
    if created_editor:
        state.on_restore(scene.sequence_editor_clear)
    for strip in _all_strips(editor):
        if strip.type != "SOUND" and not strip.mute:
            state.set(strip, "mute", True)
    if audio is not None:
        strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # 4.4+ / 4.2
        channel = max((s.channel for s in _all_strips(editor)), default=0) + 1
        strip = strips.new_sound("DiffSpeakerPreviewAudio", str(Path(audio).resolve()),
                                 channel=channel, frame_start=int(audio_start_frame))
        sound = strip.sound

        def remove() -> None:
            strips.remove(strip)
            if sound is not None and sound.users == 0:
                bpy.data.sounds.remove(sound)

        state.on_restore(remove)
    return any(s.type == "SOUND" and not s.mute for s in _all_strips(editor))


def _all_strips(editor) -> Iterable:
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


# ---------------------------------------------------------------------- render


def render_frames(state: SceneState, frames_dir: Path, frames: range) -> list[Path]:
    """Render the frame range to `frames_dir/frame_####.png`; return the paths."""
    render = state.scene.render
    settings = render.image_settings
    if hasattr(settings, "media_type"):  # 5.0+: must come before file_format
        state.set(settings, "media_type", "IMAGE")
    state.set(settings, "file_format", "PNG")
    state.set(settings, "color_mode", "RGB")
    state.set(settings, "color_depth", "8")
    state.set(render, "filepath", str(frames_dir / "frame_####"))
    bpy.ops.render.render(animation=True, scene=state.scene.name)
    paths = [Path(render.frame_path(frame=f)) for f in frames]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"render wrote no {missing[0]}")
    return paths


def render_video(state: SceneState, path: Path, with_audio: bool) -> Path:
    """Render the frame range again to an H.264 MP4, with the scene's sound strips muxed in as AAC
    when `with_audio`."""
    render = state.scene.render
    settings = render.image_settings
    if hasattr(settings, "media_type"):
        state.set(settings, "media_type", "VIDEO")
    state.set(settings, "file_format", "FFMPEG")
    ffmpeg = render.ffmpeg
    for attr, value in (("format", "MPEG4"), ("codec", "H264"),
                        ("audio_codec", "AAC" if with_audio else "NONE"),
                        ("audio_channels", "MONO"), ("audio_mixrate", 48000), ("use_autosplit", False)):
        state.set(ffmpeg, attr, value)
    state.set(render, "filepath", str(path))
    if path.exists():
        path.unlink()
    bpy.ops.render.render(animation=True, scene=state.scene.name)
    if not path.is_file():
        raise RuntimeError(f"render wrote no {path}")
    return path


def audio_peak(path: Path) -> float | None:
    """Peak |sample| of a media file's audio via audaspace; None when `aud` is missing (bpy 4.2).

    Only for files that have an audio stream: on a file without one, bpy 5.0's audaspace
    aborts the whole process (an uncaught C++ aud::FileException), not a Python error."""
    try:
        import aud
    except ImportError:
        return None
    try:
        data = aud.Sound(str(path)).data()  # (samples, channels) float32
    except aud.error:  # e.g. a file without an audio stream
        return None
    return float(np.abs(data).max()) if data.size else 0.0


# --------------------------------------------------------------- contact sheet


def contact_sheet(pngs: Sequence[Path], numbers: Sequence[int], path: Path, columns: int | None = None) -> Path:
    """A grid of the given frames, each labelled with its frame number, written as PNG."""
    tiles = [read_png_rgb(p) for p in pngs]
    height, width = tiles[0].shape[:2]
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    gap = max(2, width // 64)
    sheet = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 12, np.uint8)
    scale = max(1, height // 96)
    for i, (tile, number) in enumerate(zip(tiles, numbers, strict=True)):
        tile = tile.copy()
        draw_label(tile, str(number), scale)
        top, left = gap + (i // columns) * (height + gap), gap + (i % columns) * (width + gap)
        sheet[top:top + height, left:left + width] = tile
    write_png(path, sheet)
    return path


def draw_label(image: np.ndarray, text: str, scale: int = 1) -> None:
    """Draw `text` (digits) in white on a black box at the top-left of an (H, W, 3) uint8 image."""
    pad = scale
    glyph_w, glyph_h = 5 * scale, 7 * scale
    box_w = min(image.shape[1], pad * 2 + len(text) * (glyph_w + scale) - scale)
    box_h = min(image.shape[0], pad * 2 + glyph_h)
    image[:box_h, :box_w] = 0
    for k, char in enumerate(text):
        bitmap = np.array([[c == "1" for c in row] for row in _DIGITS.get(char, _DIGITS["-"])])  # (7, 5)
        glyph = np.kron(bitmap, np.ones((scale, scale), bool))  # (7s, 5s)
        top, left = pad, pad + k * (glyph_w + scale)
        region = image[top:top + glyph_h, left:left + glyph_w]
        region[glyph[:region.shape[0], :region.shape[1]]] = 255


def read_png_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8, top row first, via bpy's image loader."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(pixels)  # byte images: stored value / 255, bottom row first
    finally:
        bpy.data.images.remove(image)
    rgba = pixels.reshape(height, width, 4)[::-1]
    return np.clip(rgba[..., :3] * 255 + 0.5, 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 array as an 8-bit RGB PNG (zlib only)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------- CLI


def _default_object(scene):
    """The active object, else the first mesh with shape keys, else the first mesh."""
    active = bpy.context.view_layer.objects.active if bpy.context.view_layer else None
    if active is not None and active.type == "MESH":
        return active
    meshes = [o for o in scene.objects if o.type == "MESH"]
    keyed = [o for o in meshes if o.data.shape_keys is not None]
    if not (keyed or meshes):
        raise SystemExit("no mesh object in the scene; pass --object")
    return (keyed or meshes)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: `[BLEND] --object NAME --frames FIRST LAST --out DIR [--audio FILE] ...`.
    Inside Blender (`blender -b f.blend --python render_preview.py -- ARGS`) the arguments
    after `--` are used and BLEND may be left out."""
    if argv is None:
        argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("blend", nargs="?", type=Path, help=".blend file (default: the open file)")
    parser.add_argument("--object", help="object to frame (default: active / first mesh with shape keys)")
    parser.add_argument("--scene", help="scene name (default: the active scene)")
    parser.add_argument("--frames", nargs=2, type=int, metavar=("FIRST", "LAST"),
                        help="inclusive frame range (default: the scene's)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--audio", type=Path, help="sound file to mux into the MP4")
    parser.add_argument("--audio-start", type=int, help="frame where the audio starts (default: FIRST)")
    parser.add_argument("--resolution", nargs=2, type=int, default=(256, 256), metavar=("W", "H"))
    parser.add_argument("--every", type=int, help="contact sheet: every Nth frame")
    parser.add_argument("--view", default="FRONT", choices=list(VIEWS), help="camera direction (default: FRONT)")
    parser.add_argument("--no-video", action="store_true", help="skip the MP4")
    args = parser.parse_args(argv)

    if args.blend is not None:
        bpy.ops.wm.open_mainfile(filepath=str(args.blend.resolve()))
    scene = bpy.data.scenes[args.scene] if args.scene else bpy.context.scene
    obj = bpy.data.objects[args.object] if args.object else _default_object(scene)
    frames = tuple(args.frames) if args.frames else (scene.frame_start, scene.frame_end)
    result = render_preview(scene, obj, args.out, frames, audio=args.audio, every=args.every,
                            resolution=tuple(args.resolution), video=not args.no_video,
                            audio_start_frame=args.audio_start, view=args.view)
    print(f"{len(result['frames'])} frames in {Path(result['frames'][0]).parent}")
    print(f"contact sheet: {result['contact_sheet']}")
    if result["video"] is not None:
        peak = result["video_audio_peak"]
        if not result["video_has_audio"]:
            audio_note = "no audio"
        else:
            audio_note = "audio, not checked (no aud)" if peak is None else f"audio peak {peak:.3f}"
        print(f"video: {result['video']} ({audio_note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
