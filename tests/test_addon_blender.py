"""The add-on inside Blender (bpy 5.0 module): Generate from a sound strip or a
file bakes shape keys on the timeline; bad input is explained and changes nothing;
one undo step restores the scene; re-generating replaces only the tool's keys."""
from __future__ import annotations

import pytest

from vendor_model.checkpoint import ModelBundle, save_bundle

from .addon_env import ADDON, addon_enabled, disable_addon, enable_addon, ready_to_generate
from .bpy_env import import_bpy
from .conftest import speech_like, tiny_model, write_wav

bpy = import_bpy()

from diffspeaker_blender import compat  # noqa: E402
from diffspeaker_blender.core.bake_math import compact_key_name, is_tool_key  # noqa: E402

GRID = (5, 4)  # 20 vertices: the tiny model's topology


def grid_mesh(name: str, nx: int = GRID[0], ny: int = GRID[1]):
    verts = [(x * 0.01, 0.0, y * 0.01) for y in range(ny) for x in range(nx)]
    faces = [(y * nx + x, y * nx + x + 1, (y + 1) * nx + x + 1, (y + 1) * nx + x) for y in range(ny - 1) for x in range(nx - 1)]
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("addon")
    model = root / "tiny.safetensors"
    save_bundle(ModelBundle(tiny_model(), None, ("calm", "lively", "wide")), model)
    return {"model": model, "wav": write_wav(root / "line.wav", speech_like(1.5, rate=22050), 22050), "root": root}


@pytest.fixture
def scene(files):
    with addon_enabled(fps=24) as scene:
        yield ready_to_generate(scene, files["model"], files["wav"], strip_start=10, steps=3)


def tool_keys(obj):
    keys = obj.data.shape_keys
    return [] if keys is None else [k.name for k in keys.key_blocks if is_tool_key(k.name)]


def keyed_frames(obj):
    frames = [p.co[0] for fc in compat.iter_fcurves(obj.data.shape_keys) for p in fc.keyframe_points]
    return min(frames), max(frames)


def generate():
    return bpy.ops.diffspeaker.generate_animation()


def test_generate_from_a_sound_strip_bakes_keys_starting_at_the_strip(scene):
    obj = grid_mesh("Face")
    assert generate() == {"FINISHED"}
    assert tool_keys(obj), "no shape keys were made"
    first, last = keyed_frames(obj)
    assert first == 10  # the strip's frame_start
    assert last == pytest.approx(10 + (44 - 1) / 30 * 24, abs=1.0)
    job = scene.diffspeaker.job
    assert job.status.startswith("Done") and "calm" in job.last_result and not job.running


def test_generate_from_a_file_starts_at_the_chosen_frame(scene, files):
    obj = grid_mesh("Face")
    scene.diffspeaker.audio_source, scene.diffspeaker.audio_file, scene.diffspeaker.start_frame = "FILE", str(files["wav"]), 100
    assert generate() == {"FINISHED"}
    assert keyed_frames(obj)[0] == 100


def test_a_sound_packed_into_the_blend_file_is_used(scene):
    obj = grid_mesh("Face")
    strip = compat.sound_strips(scene)[0]
    strip.sound.pack()
    assert strip.sound.packed_file is not None
    assert generate() == {"FINISHED"}
    assert tool_keys(obj)


def test_exact_mode_makes_one_key_per_model_frame(scene):
    obj = grid_mesh("Face")
    scene.diffspeaker.bake_mode = "EXACT"
    assert generate() == {"FINISHED"}
    assert len(tool_keys(obj)) == 44


def assert_refused(obj, status_fragment: str, scene):
    """In background mode an operator's error report raises, so scripts see it too."""
    with pytest.raises(RuntimeError, match=status_fragment):
        generate()
    assert tool_keys(obj) == []
    assert status_fragment in scene.diffspeaker.job.status
    assert not scene.diffspeaker.job.running


def test_a_mesh_with_another_vertex_count_is_explained(scene):
    obj = grid_mesh("Character", 6, 6)
    assert_refused(obj, "36 vertices but the model animates 20", scene)


def test_without_sound_strips_the_artist_is_told_what_to_do(scene):
    obj = grid_mesh("Face")
    strips = compat.sequencer_strips(scene, all_levels=False)
    strips.remove(strips[0])
    assert_refused(obj, "no sound strips", scene)


def test_an_unreadable_audio_file_is_explained(scene, files):
    obj = grid_mesh("Face")
    broken = files["root"] / "broken.wav"
    broken.write_bytes(b"RIFF....not really a wav")
    scene.diffspeaker.audio_source, scene.diffspeaker.audio_file = "FILE", str(broken)
    assert_refused(obj, "Could not read audio file", scene)


def test_a_missing_model_is_explained(scene, files):
    obj = grid_mesh("Face")
    bpy.context.preferences.addons[ADDON].preferences.model_path = str(files["root"] / "gone.safetensors")
    assert_refused(obj, "does not exist", scene)


def test_generate_is_unavailable_without_a_mesh_and_says_why(scene):
    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="Select the mesh to animate"):
        generate()


def test_one_undo_step_restores_the_scene_before_the_bake(scene):
    obj = grid_mesh("Face")
    obj.shape_key_add(name="Basis")
    obj.shape_key_add(name="blink")
    bpy.ops.ed.undo_push(message="artist work")
    # From a script, undo=True makes Blender push the operator's undo step, as the UI does.
    assert bpy.ops.diffspeaker.generate_animation("EXEC_DEFAULT", True) == {"FINISHED"}
    assert tool_keys(bpy.data.objects["Face"])
    bpy.ops.ed.undo()
    face = bpy.data.objects["Face"]
    assert tool_keys(face) == []
    assert [k.name for k in face.data.shape_keys.key_blocks] == ["Basis", "blink"]


def test_generating_again_replaces_only_what_the_tool_made(scene):
    obj = grid_mesh("Face")
    obj.shape_key_add(name="Basis")
    blink = obj.shape_key_add(name="blink")
    blink.value = 0.3
    assert generate() == {"FINISHED"}
    scene.diffspeaker.seed = 5
    assert generate() == {"FINISHED"}
    again = tool_keys(obj)
    assert again == [compact_key_name(i) for i in range(len(again))]  # a fresh set, no "DS_basis_000.001" leftovers
    names = [k.name for k in obj.data.shape_keys.key_blocks]
    assert names.count("blink") == 1 and obj.data.shape_keys.key_blocks["blink"].value == pytest.approx(0.3)
    assert bpy.ops.diffspeaker.remove_animation() == {"FINISHED"}
    assert [k.name for k in obj.data.shape_keys.key_blocks] == ["Basis", "blink"]


def test_the_addon_registers_and_unregisters_cleanly(scene):
    assert hasattr(bpy.types.Scene, "diffspeaker")
    assert hasattr(bpy.ops.diffspeaker, "generate_animation")
    disable_addon()
    assert not hasattr(bpy.types.Scene, "diffspeaker")
    enable_addon()


def test_add_head_creates_the_mesh_the_builtin_model_animates(scene):
    from synth.head import MATERIALS, build_head

    assert bpy.ops.diffspeaker.add_head() == {"FINISHED"}
    obj = bpy.context.active_object
    assert len(obj.data.vertices) == len(build_head().vertices)
    assert [m.name.rsplit("_", 1)[1] for m in obj.data.materials] == list(MATERIALS)
    assert obj.select_get()


def test_a_newcomer_presses_generate_on_the_head_with_the_builtin_model(scene, tmp_path):
    import re
    import shutil
    import subprocess

    from vendor_model.frontends import hama_available

    if not hama_available() or shutil.which("espeak-ng") is None:
        pytest.skip("needs the hama package and espeak-ng (./run test installs both)")
    wav = tmp_path / "line.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "bob may buy a map"], check=True, capture_output=True)
    bpy.context.preferences.addons[ADDON].preferences.model_source = "BUILTIN"
    scene.diffspeaker.audio_source, scene.diffspeaker.audio_file, scene.diffspeaker.start_frame = "FILE", str(wav), 1
    scene.diffspeaker.steps = 10
    assert bpy.ops.diffspeaker.add_head() == {"FINISHED"}
    head = bpy.context.active_object
    assert generate() == {"FINISHED"}
    assert tool_keys(head)
    closures = re.search(r"lips shut on (\d+) p/b/m", scene.diffspeaker.job.last_result)
    assert closures and int(closures.group(1)) >= 2, scene.diffspeaker.job.last_result  # of b, m, b, m, p
