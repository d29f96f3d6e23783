"""Retargeting inside Blender (bpy 5.0 module): Add Guide -> Bind -> Generate on a character
that is not the model's topology, with the artist's own keys, driver and animation.

The character is the project's head made differently: its mesh data turned (Y up, as an
import gives), scaled x2.5 and moved, plus a hat 10 cm above the skull (so the vertex count
differs from the model's and some vertices are far from any guide), on an object that is
itself moved and rotated. The model is a tiny random one on the head's 9277 vertices.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from vendor_model.checkpoint import ModelBundle, save_bundle

from .addon_env import addon_enabled, disable_addon, enable_addon, ready_to_generate
from .bpy_env import evaluated_co, import_bpy, key_co, mesh_co, reset_scene, select
from .conftest import speech_like, tiny_model, write_wav

bpy = import_bpy()
from mathutils import Matrix  # noqa: E402

from diffspeaker_blender import arkit_bake, compat, operators, retarget  # noqa: E402
from diffspeaker_blender.core import arkit  # noqa: E402
from diffspeaker_blender.core import retarget as retarget_math  # noqa: E402
from diffspeaker_blender.core.bake_math import is_tool_key  # noqa: E402
from synth import rig  # noqa: E402
from synth.arkit_keys import arkit_shapes  # noqa: E402
from synth.head import build_head  # noqa: E402

HEAD = build_head()
N_HEAD = len(HEAD.vertices)
SCALE = 2.5


def data_matrix() -> np.ndarray:
    """Template space -> the character's mesh space: Y up (x 90 deg), turned 30 deg, x2.5, moved."""
    a, b = math.radians(90), math.radians(30)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(b), -math.sin(b), 0], [math.sin(b), math.cos(b), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = SCALE * rz @ rx, (0.1, -0.2, 0.05)
    return m


def hat() -> tuple[np.ndarray, list]:
    """A box 10 cm (template size) above the crown: out of any guide's reach."""
    corners = np.array([[x, y, z] for z in (0.22, 0.26) for y in (-0.04, 0.04) for x in (-0.04, 0.04)])
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    return corners, [tuple(N_HEAD + i for i in f) for f in faces]


def make_character(name: str = "Character", arkit: bool = False, artist_rig: bool = True) -> bpy.types.Object:
    m = data_matrix()
    hat_co, hat_faces = hat()
    template = np.concatenate([HEAD.vertices, hat_co])
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata((template @ m[:3, :3].T + m[:3, 3]).tolist(), [], HEAD.polygons() + hat_faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location, obj.rotation_euler = (1.0, 2.0, 0.5), (0.0, 0.0, 0.4)
    if arkit:
        obj.shape_key_add(name="Basis", from_mix=False)
        basis = mesh_co(mesh)
        for arkit_name, delta in arkit_shapes(HEAD).items():
            block = obj.shape_key_add(name=arkit_name.replace("Left", "_L").replace("Right", "_R"), from_mix=False)
            full = np.concatenate([delta, np.zeros((len(hat_co), 3))]) @ m[:3, :3].T
            block.points.foreach_set("co", (basis + full).astype(np.float32).ravel())
            block.value = 0.0
    if artist_rig:
        add_artist_rig(obj)
    select(obj)
    return obj


def add_artist_rig(obj) -> None:
    """The artist's own work: a blink key keyed in their action, a driven key, object keys."""
    if obj.data.shape_keys is None:
        obj.shape_key_add(name="Basis", from_mix=False)
    blink = obj.shape_key_add(name="blink", from_mix=False)
    co = key_co(blink)
    co[:20] += 0.001
    blink.points.foreach_set("co", co.ravel())
    driven = obj.shape_key_add(name="brow_driven", from_mix=False)
    key = obj.data.shape_keys
    driver = key.driver_add(f'key_blocks["{driven.name}"].value').driver
    driver.type, driver.expression = "SCRIPTED", "0.25"
    key.animation_data.action = bpy.data.actions.new("ArtistBlinks")
    for frame, value in ((1, 0.0), (8, 1.0), (12, 0.0)):
        blink.value = value
        blink.keyframe_insert("value", frame=frame)
    blink.value = 0.0
    obj.animation_data_create().action = bpy.data.actions.new("ArtistMove")
    for frame, x in ((1, 1.0), (20, 1.5)):
        obj.location.x = x
        obj.keyframe_insert("location", frame=frame)


def curves(id_data) -> dict:
    out = {}
    for fc in compat.iter_fcurves(id_data):
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        out[fc.data_path] = co.reshape(-1, 2)
    return out


def artist_state(obj) -> dict:
    key = obj.data.shape_keys
    return {
        "blocks": {b.name: (b.mute, b.slider_min, b.slider_max, b.relative_key.name, key_co(b).tobytes())
                   for b in key.key_blocks if not is_tool_key(b.name)},
        "drivers": [(d.data_path, d.driver.expression) for d in key.animation_data.drivers],
        "key_curves": {p: v.tobytes() for p, v in curves(key).items() if "DS_" not in p and "blink" in p},
        "object_action": obj.animation_data.action.name,
        "object_curves": {p: v.tobytes() for p, v in curves(obj).items()},
        "mesh": mesh_co(obj.data).tobytes(),
    }


def run(name: str, **kwargs):
    """Operators as the UI runs them: with their undo step."""
    return getattr(bpy.ops.diffspeaker, name)("EXEC_DEFAULT", True, **kwargs)


def align_guide(character) -> None:
    """What the artist does after Add Guide: put the guide exactly on the face."""
    guide = retarget.guide_of(character)
    guide.matrix_basis = Matrix(data_matrix().tolist())
    bpy.context.view_layer.update()


def tool_keys(obj) -> list:
    return [b.name for b in obj.data.shape_keys.key_blocks if is_tool_key(b.name)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("retarget")
    model = root / "head.safetensors"
    save_bundle(ModelBundle(tiny_model(n_vertices=N_HEAD), HEAD.vertices.copy(), ("calm", "lively", "wide")), model)
    return {"model": model, "wav": write_wav(root / "line.wav", speech_like(1.2, rate=22050), 22050)}


@pytest.fixture
def scene(files):
    with addon_enabled(fps=30) as scene:
        ready_to_generate(scene, files["model"], files["wav"], strip_start=1, steps=2)
        bpy.ops.ed.undo_push(message="scene ready")
        yield scene
    reset_scene()


# ---------------------------------------------------------------------------------- guide


def test_add_guide_places_a_wire_guide_on_the_characters_head(scene):
    character = make_character()
    assert run("add_guide") == {"FINISHED"}
    guide = bpy.data.objects["DS_guide_Character"]
    assert retarget.guide_of(character) == guide and guide.diffspeaker_binding.character == character
    assert guide.parent == character and guide.display_type == "WIRE" and guide.hide_render
    assert len(guide.data.vertices) == N_HEAD
    assert bpy.context.active_object == character  # Bind and Generate work on it straight away
    # The rough fit: the guide's face lands within 1 mm (template size) of the character's.
    face = HEAD.regions["upper_face"]
    basis = np.array(guide.matrix_basis)
    placed = HEAD.vertices[face] @ basis[:3, :3].T + basis[:3, 3]
    truth = HEAD.vertices[face] @ data_matrix()[:3, :3].T + data_matrix()[:3, 3]
    error_mm = np.linalg.norm(placed - truth, axis=1).max() / SCALE * 1e3
    print(f"\nAdd Guide rough fit: face within {error_mm:.2f} mm (template size)")
    assert error_mm < 1.0
    with pytest.raises(RuntimeError, match="already has the guide"):
        run("add_guide")


def test_add_guide_and_bind_are_one_undo_step_each(scene):
    make_character()
    bpy.ops.ed.undo_push(message="artist work")
    assert run("add_guide") == {"FINISHED"}
    assert run("bind_guide") == {"FINISHED"}
    character = bpy.data.objects["Character"]
    assert character.diffspeaker_binding.bound and character.data.attributes.get("ds_bind_corner0")
    bpy.ops.ed.undo()  # Bind undone
    character = bpy.data.objects["Character"]
    assert not character.diffspeaker_binding.bound and character.data.attributes.get("ds_bind_corner0") is None
    assert "DS_guide_Character" in bpy.data.objects
    bpy.ops.ed.undo()  # Add Guide undone
    assert "DS_guide_Character" not in bpy.data.objects
    assert bpy.data.objects["Character"].diffspeaker_binding.guide is None


def test_the_stored_binding_moves_the_character_exactly_like_the_guide(scene):
    """Rig motion on the template, through the binding kept on the mesh: the head vertices get
    exactly the rotated, x2.5 motion (to 0.001 mm at template size), the hat none at all."""
    character = make_character(artist_rig=False)
    run("add_guide")
    align_guide(character)
    assert run("bind_guide") == {"FINISHED"}
    summary = character.diffspeaker_binding.summary
    print("\nBind:", summary)
    assert "of 9,285 vertices follow the guide" in summary and "stay still" in summary
    binding = retarget.stored_binding(character)
    assert binding.n_target == N_HEAD + 8 and binding.n_guide == N_HEAD
    params = np.zeros((3, len(rig.PARAMETERS)), np.float32)
    params[:, rig.P["jaw_open"]] = (0.2, 1.0, 0.5)
    params[:, rig.P["smile"]] = (0.5, 0.0, 1.0)
    params[:, rig.P["lip_close"]] = (0.0, 1.0, 0.0)
    motion = rig.deform(rig.build_rig(HEAD), params)
    out = retarget.motion_for(character, motion)
    expected = motion @ data_matrix()[:3, :3].T
    error_mm = np.linalg.norm(out[:, :N_HEAD] - expected, axis=-1).max() / SCALE * 1e3
    print(f"stored binding: max error {error_mm:.2e} mm (template size)")
    assert error_mm < 1e-3
    assert np.all(out[:, N_HEAD:] == 0)
    assert set(binding.regions) == {"jaw", "lips", "upper_face"} and binding.regions["lips"].sum() > 300


def test_moving_the_guide_after_bind_is_noticed(scene):
    character = make_character(artist_rig=False)
    run("add_guide")
    run("bind_guide")
    assert not retarget.guide_moved(character)
    retarget.guide_of(character).location.z += 0.01
    bpy.context.view_layer.update()
    assert retarget.guide_moved(character)


def test_a_guide_far_from_the_mesh_binds_nothing_and_says_so(scene):
    character = make_character(artist_rig=False)
    run("add_guide")
    retarget.guide_of(character).location.z += 5.0
    assert run("bind_guide") == {"FINISHED"}
    assert "nothing would move" in character.diffspeaker_binding.summary


def test_bind_without_a_guide_is_unavailable_and_says_why(scene):
    make_character(artist_rig=False)
    with pytest.raises(RuntimeError, match="Add a guide first"):
        run("bind_guide")


# ------------------------------------------------------------------------------- generate


def test_generate_on_a_bound_character_bakes_onto_it_and_keeps_the_artists_rig(scene):
    character = make_character()
    before = artist_state(character)
    run("add_guide")
    run("bind_guide")
    assert run("generate_animation") == {"FINISHED"}
    character = bpy.data.objects["Character"]
    assert tool_keys(character), "no shape keys were baked onto the character"
    assert not bpy.data.objects["DS_guide_Character"].data.shape_keys  # the guide is never animated
    after = artist_state(character)
    for part in ("blocks", "drivers", "key_curves", "object_action", "object_curves", "mesh"):
        assert after[part] == before[part], part
    assert scene.diffspeaker.job.status.startswith("Done")
    # Vertices with no share in the guide's motion (the hat: out of reach; most of the skull,
    # eyes and neck: still regions) never move; the mouth does. Frames after the artist's blink.
    binding = retarget.stored_binding(character)
    still = np.flatnonzero(np.all(binding.corner_weights == 0, axis=1))
    assert set(range(N_HEAD, N_HEAD + 8)) <= set(still) and len(still) > 4000
    rest = mesh_co(character.data)
    frames = [evaluated_co(character, f) - rest for f in (12, 20, 30)]
    assert max(np.abs(f[still]).max() for f in frames) < 1e-6
    assert max(np.abs(f[HEAD.regions["lips"]]).max() for f in frames) > 1e-4


def test_generate_is_one_undo_step_on_a_bound_character(scene):
    make_character()
    bpy.ops.ed.undo_push(message="artist work")
    run("add_guide")
    run("bind_guide")
    assert run("generate_animation") == {"FINISHED"}
    assert tool_keys(bpy.data.objects["Character"])
    bpy.ops.ed.undo()
    character = bpy.data.objects["Character"]
    assert tool_keys(character) == [] and character.diffspeaker_binding.bound


def test_an_unbound_character_is_told_how_to_retarget(scene):
    make_character()
    with pytest.raises(RuntimeError, match="9285 vertices but the model animates 9277.*Add Guide"):
        run("generate_animation")


def test_a_character_edited_after_binding_is_told_to_bind_again(scene):
    character = make_character(artist_rig=False)
    run("add_guide")
    run("bind_guide")
    character.data.vertices.add(1)
    with pytest.raises(RuntimeError, match="Click Bind again"):
        run("generate_animation")


# --------------------------------------------------------------------------------- ARKit


def test_generate_with_arkit_keyframes_the_existing_keys_and_adds_none(scene):
    character = make_character(arkit=True)
    key = character.data.shape_keys
    key.driver_add('key_blocks["mouthSmile_R"].value').driver.expression = "0.1"  # the artist drives this one
    before = artist_state(character)
    scene.diffspeaker_retarget.use_arkit = True
    run("add_guide")
    run("bind_guide")
    assert run("generate_animation") == {"FINISHED"}
    character = bpy.data.objects["Character"]
    key = character.data.shape_keys
    assert tool_keys(character) == []
    keyed = {p for p in curves(key) if "blink" not in p}
    assert 'key_blocks["jawOpen"].value' in keyed and 'key_blocks["mouthSmile_L"].value' in keyed
    assert 'key_blocks["mouthSmile_R"].value' not in keyed  # driven: left alone
    assert "mouthSmile_R (has a driver)" in scene.diffspeaker.job.last_result
    for path in keyed:
        values = curves(key)[path][:, 1]
        assert values.min() >= 0 and values.max() <= 1
    after = artist_state(character)
    for part in ("blocks", "drivers", "key_curves", "object_action", "object_curves", "mesh"):
        assert after[part] == before[part], part
    assert key.animation_data.action.name == "ArtistBlinks"  # bake.py's rule: the artist's action is used
    # generating again replaces exactly the tool's curves
    scene.diffspeaker.seed = 3
    assert run("generate_animation") == {"FINISHED"}
    assert {p for p in curves(key) if "blink" not in p} == keyed
    assert arkit_bake.remove_arkit_curves(character) == len(keyed)
    assert set(curves(key)) == {'key_blocks["blink"].value'}


def known_arkit_motion(character, n_frames: int = 40, seed: int = 4) -> tuple[list, np.ndarray, np.ndarray]:
    """(the character's ARKit key names, weights (T, K), motion (T, V, 3) = weights x those
    keys' own shapes)."""
    key = character.data.shape_keys
    names = list(retarget.arkit_key_names(character).values())
    rest = key_co(key.reference_key)
    deltas = np.stack([key_co(key.key_blocks[n]) - rest for n in names])
    rng = np.random.default_rng(seed)
    weights = rng.random((n_frames, len(names))) * (rng.random((n_frames, len(names))) < 0.6)
    weights[:, [arkit.canonical_arkit_name(n) for n in names].index("jawRight")] = 0.0  # = -jawLeft
    return names, weights, np.einsum("tk,kvc->tvc", weights, deltas)


def test_known_arkit_weights_come_back_as_keyframes(scene):
    """bake_arkit on motion = known weights x the character's own key shapes (30 fps scene,
    so keyframes are at model frames): every keyframe within 0.05 of its weight."""
    character = make_character(arkit=True, artist_rig=False)
    key = character.data.shape_keys
    names, weights, motion = known_arkit_motion(character)
    assert len(names) == len(key.key_blocks) - 1  # every ARKit key the character has
    result = arkit_bake.bake_arkit(character, motion, model_fps=30, scene=scene, start_frame=1)
    print("\nARKit bake:", result.summary())
    assert set(result.keys) == set(names)
    got = curves(key)
    for i, name in enumerate(names):
        frames, values = got[f'key_blocks["{name}"].value'].T
        assert np.array_equal(frames, np.arange(1, 41))
        assert np.abs(values - weights[:, i]).max() <= 0.05, name
    assert result.max_error_mm < 0.5


@pytest.mark.parametrize("artist_rig", [True, False], ids=["into the artist's action", "into the tool's action"])
def test_remove_after_an_arkit_bake_removes_the_tools_curves_and_keeps_the_artists(scene, artist_rig, capfd):
    character = make_character(arkit=True, artist_rig=artist_rig)
    key = character.data.shape_keys
    pucker = key.key_blocks["mouthPucker"]
    pucker.mute, pucker.value = True, 0.6  # the artist's muted ARKit key and its value: left alone
    if artist_rig:  # the artist's own curve on an ARKit key, in their action
        key.key_blocks["mouthFunnel"].value = 0.5
        key.key_blocks["mouthFunnel"].keyframe_insert("value", frame=5)
        before = artist_state(character)
    artist_curves = {path: co.tobytes() for path, co in curves(key).items()}
    key_names = [b.name for b in key.key_blocks]
    result = arkit_bake.bake_arkit(character, known_arkit_motion(character)[2], model_fps=30, scene=scene,
                                   start_frame=1)
    assert "mouthPucker (muted)" in result.summary()
    assert ("mouthFunnel (animated by you)" in result.summary()) == artist_rig
    assert len(curves(key)) == len(artist_curves) + len(result.keys)

    capfd.readouterr()
    assert run("remove_animation") == {"FINISHED"}
    assert f"Removed the keyframes of {len(result.keys)} ARKit keys" in capfd.readouterr().out  # the report
    character = bpy.data.objects["Character"]
    key = character.data.shape_keys
    assert {path: co.tobytes() for path, co in curves(key).items()} == artist_curves
    assert arkit_bake.ARKIT_CURVES_PROP not in key
    assert key.key_blocks["mouthPucker"].mute and key.key_blocks["mouthPucker"].value == pytest.approx(0.6)
    assert [b.name for b in key.key_blocks] == key_names
    if artist_rig:
        after = artist_state(character)
        for part in ("blocks", "drivers", "key_curves", "object_action", "object_curves", "mesh"):
            assert after[part] == before[part], part
        assert key.animation_data.action.name == "ArtistBlinks"
    else:  # the action the bake made for its curves went with them
        assert key.animation_data.action is None and not bpy.data.actions


def test_the_remove_message_names_both_counts():
    assert operators.removed_message(3, 0) == "Removed 3 generated shape keys"
    assert operators.removed_message(1, 12) == "Removed 1 generated shape key and the keyframes of 12 ARKit keys"
    assert operators.removed_message(0, 0) == "Nothing generated to remove"


def test_generate_on_a_guide_is_unavailable_and_says_to_select_the_character(scene):
    make_character(artist_rig=False)
    run("add_guide")
    guide = bpy.data.objects["DS_guide_Character"]
    select(guide)
    assert operators.disabled_reason(bpy.context) == \
        "'DS_guide_Character' is a guide: select the character 'Character' to animate it"
    with pytest.raises(RuntimeError, match="select the character 'Character'"):
        run("generate_animation")
    assert guide.data.shape_keys is None


def test_arkit_without_arkit_keys_bakes_new_keys_as_usual(scene):
    make_character()
    scene.diffspeaker_retarget.use_arkit = True
    run("add_guide")
    run("bind_guide")
    assert run("generate_animation") == {"FINISHED"}
    assert tool_keys(bpy.data.objects["Character"])


def test_the_addon_registers_and_unregisters_the_retarget_parts(scene):
    assert hasattr(bpy.types.Scene, "diffspeaker_retarget") and hasattr(bpy.types.Object, "diffspeaker_binding")
    assert hasattr(bpy.types, "DIFFSPEAKER_PT_retarget")
    disable_addon()
    assert not hasattr(bpy.types.Scene, "diffspeaker_retarget")
    assert not hasattr(bpy.types.Object, "diffspeaker_binding")
    enable_addon()


def test_retarget_math_and_blender_share_the_region_names():
    assert set(retarget.GUIDE_REGIONS) >= set(retarget_math.STATIC_REGIONS) | {"upper_lip", "lower_lip"}


@pytest.mark.parametrize("state", ["no mesh", "no guide", "guide", "bound", "moved", "edited", "arkit"])
def test_the_retarget_panel_draws_in_every_state(scene, state):
    from types import SimpleNamespace

    from diffspeaker_blender.panels import DIFFSPEAKER_PT_retarget

    from .test_addon_ui import RecordingLayout

    if state == "no mesh":
        bpy.context.view_layer.objects.active = None
    else:
        character = make_character(arkit=state == "arkit", artist_rig=False)
        if state != "no guide":
            run("add_guide")
        if state in ("bound", "moved", "edited", "arkit"):
            run("bind_guide")
        if state == "moved":
            retarget.guide_of(character).location.x += 0.01
            bpy.context.view_layer.update()
        if state == "edited":
            character.data.vertices.add(1)
        scene.diffspeaker_retarget.use_arkit = state == "arkit"
    log = []
    DIFFSPEAKER_PT_retarget.draw(SimpleNamespace(layout=RecordingLayout(log)), bpy.context)
    drawn = [text for _, text in log]
    if state == "no mesh":
        assert drawn == ["Select your character's mesh"]
        return
    assert "diffspeaker.add_guide" in drawn and "diffspeaker.bind_guide" in drawn and "use_arkit" in drawn
    assert ("No guide" in drawn) == (state == "no guide")
    assert any("follow the guide" in text for text in drawn) == (state in ("bound", "moved", "arkit"))
    assert any("guide moved since Bind" in text for text in drawn) == (state == "moved")
    assert any("Click Bind again" in text for text in drawn) == (state == "edited")
    assert ("18 ARKit mouth/jaw keys found" in drawn) == (state == "arkit")
