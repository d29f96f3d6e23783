"""build.py: staging, Blender's validator, zips with and without wheels, and installing
the built zip into bpy's extension system (tests that import bpy come last)."""
from __future__ import annotations

import importlib
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import build

from .bpy_env import import_bpy, user_resources

TRACKED_MANIFEST = build.ADDON_DIR / build.MANIFEST_NAME
EXT_ID = build.read_manifest()["id"]


def addon_version() -> str:
    """`diffspeaker_blender.manifest_version()`, imported once a bpy import would be isolated."""
    user_resources()
    return importlib.import_module("diffspeaker_blender").manifest_version()


@pytest.fixture(scope="module")
def blender_ext() -> Path:
    try:
        return build.find_blender_ext()
    except build.BuildError as exc:
        pytest.skip(str(exc))


def make_wheel(directory: Path, filename: str) -> Path:
    """A tiny but well-formed wheel: one module plus its .dist-info."""
    name, version, *_ = filename[:-len(".whl")].split("-")
    tag = "-".join(filename[:-len(".whl")].split("-")[-3:])
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": "VALUE = 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = directory / filename
    with zipfile.ZipFile(path, "w") as zf:
        for arcname, text in files.items():
            zf.writestr(arcname, text)
    return path


def zip_manifest(zip_path: Path) -> dict:
    with zipfile.ZipFile(zip_path) as zf:
        return tomllib.loads(zf.read(build.MANIFEST_NAME).decode())


# ----------------------------------------------------------------- pure Python


@pytest.mark.parametrize("filename, platforms", [
    ("foo-1.0-py3-none-any.whl", None),
    ("bar-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", {"linux-x64"}),
    ("cffi-2.1.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", {"linux-x64"}),
    ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", {"linux-x64"}),
    ("torch-2.13.0-cp311-none-macosx_11_0_arm64.whl", {"macos-arm64"}),
    ("x-1-cp311-cp311-macosx_10_9_universal2.whl", {"macos-arm64", "macos-x64"}),
    ("pyyaml-6.0.4-cp311-cp311-win_amd64.whl", {"windows-x64"}),
    ("x-1-cp311-cp311-musllinux_1_2_x86_64.whl", set()),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wheel_platforms(filename, platforms):
    assert build.WheelName.parse(filename).platforms() == platforms


@pytest.mark.parametrize("filename, py311, py313", [
    ("foo-1.0-py3-none-any.whl", True, True),
    ("soundfile-0.14.0-py2.py3-none-win_amd64.whl", True, True),
    ("bar-1.0-cp311-cp311-win_amd64.whl", True, False),
    ("bar-1.0-cp313-cp313-win_amd64.whl", False, True),
    ("tokenizers-0.23.3-cp39-abi3-win_amd64.whl", True, True),
    ("old-1.0-cp39-cp39-win_amd64.whl", False, False),
], ids=lambda v: v if isinstance(v, str) else None)
def test_wheel_python_versions(filename, py311, py313):
    name = build.WheelName.parse(filename)
    assert (name.supports_python((3, 11)), name.supports_python((3, 13))) == (py311, py313)


def test_select_wheels_filters_and_warns(tmp_path):
    files = [make_wheel(tmp_path, f) for f in (
        "foo-1.0-py3-none-any.whl",
        "bar-1.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "bar-1.0-cp313-cp313-manylinux_2_28_x86_64.whl",   # wrong Python: skipped
        "baz-1.0-cp311-cp311-musllinux_1_2_x86_64.whl",      # no target platform: skipped
    )]
    chosen, warnings = build.select_wheels(files, ("linux-x64", "windows-x64"))
    assert [p.name for p in chosen] == [files[1].name, files[0].name]
    assert any("cp313" in w for w in warnings)
    assert any("musllinux" in w for w in warnings)
    assert "no bar wheel for windows-x64" in warnings


def test_select_wheels_rejects_two_wheels_for_one_platform(tmp_path):
    files = [make_wheel(tmp_path, "bar-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"),
             make_wheel(tmp_path, "bar-1.1-cp311-cp311-manylinux_2_17_x86_64.whl")]
    with pytest.raises(build.BuildError, match="two bar wheels for linux-x64"):
        build.select_wheels(files)


def test_torch_wheel_replaces_linux_torch_only(tmp_path):
    (tmp_path / "local").mkdir()
    files = [make_wheel(tmp_path, f) for f in (
        "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl",
        "torch-2.13.0-cp311-cp311-win_amd64.whl",
    )]
    local = make_wheel(tmp_path / "local", "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    chosen, _ = build.select_wheels(files, torch_wheel=local)
    assert sorted(p.name for p in chosen) == sorted([local.name, files[1].name])
    with pytest.raises(build.BuildError, match="linux-x64 torch wheel"):
        build.select_wheels(files, torch_wheel=files[1])


def test_requirements_are_pinned_and_exclude_numpy():
    pins = dict(build._parse_pin(r) for r in build.REQUIREMENTS)
    assert "numpy" not in pins and "bpy" not in pins
    assert pins["torch"] == "2.13.0" and pins["transformers"] == "5.24.0"
    assert pins["safetensors"] == "0.8.0" and pins["soundfile"] == "0.14.0"
    assert {"cffi", "pycparser"} <= set(pins)


def test_stage_layout_leaves_tracked_manifest_alone(tmp_path):
    before = TRACKED_MANIFEST.read_bytes()
    package = build.stage(tmp_path)
    assert package == tmp_path / EXT_ID
    assert (package / "__init__.py").is_file()
    assert (package / "vendor_model" / "pipeline.py").is_file()
    assert not list(package.rglob("__pycache__")) and not list(package.rglob("*.pyc"))
    assert not (package / "tests").exists() and not (package / "wheels").exists()
    assert (package / build.MANIFEST_NAME).read_bytes() == before  # no wheels: copied verbatim
    if (build.ROOT / "README.md").is_file():
        assert (package / "README.md").is_file()
    assert TRACKED_MANIFEST.read_bytes() == before


def test_stage_keeps_bundled_models_and_drops_addon_tests(tmp_path, monkeypatch):
    addon = tmp_path / "addon"
    build.shutil.copytree(build.ADDON_DIR, addon, ignore=build.COPY_IGNORE)
    (addon / "models").mkdir(exist_ok=True)
    (addon / "models" / "default.safetensors").write_bytes(b"\0" * 64)
    (addon / "tests").mkdir()
    (addon / "tests" / "test_x.py").write_text("")
    (addon / "__pycache__").mkdir(exist_ok=True)
    (addon / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"")
    monkeypatch.setattr(build, "ADDON_DIR", addon)
    package = build.stage(tmp_path / "staging")
    assert (package / "models" / "default.safetensors").read_bytes() == b"\0" * 64
    assert not (package / "tests").exists() and not (package / "__pycache__").exists()


def test_write_platforms_and_wheels_rejects_tracked_keys(tmp_path):
    manifest = tmp_path / build.MANIFEST_NAME
    manifest.write_text('id = "x"\nplatforms = ["linux-x64"]\n')
    with pytest.raises(build.BuildError, match="platforms"):
        build.write_platforms_and_wheels(manifest, ["linux-x64"], ["a-1-py3-none-any.whl"])


# --------------------------------------------------- Blender's blender_ext.py


def test_tracked_manifest_validates(tmp_path, blender_ext):
    build.validate(build.stage(tmp_path), blender_ext)


def test_validate_reports_the_validator_message(tmp_path, blender_ext):
    package = build.stage(tmp_path)
    manifest = package / build.MANIFEST_NAME
    manifest.write_text(_break_tagline(manifest.read_text()))
    with pytest.raises(build.BuildError, match="tagline"):
        build.validate(package, blender_ext)


def _break_tagline(text: str) -> str:
    lines = [line if not line.startswith("tagline") else 'tagline = "Ends with a full stop."'
             for line in text.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def plain_build(tmp_path_factory, blender_ext):
    """One `--wheels none` build, with the tracked manifest's bytes before and after."""
    before = TRACKED_MANIFEST.read_bytes()
    zips = build.build(tmp_path_factory.mktemp("dist"), wheels="none", blender_ext=blender_ext)
    return zips, before, TRACKED_MANIFEST.read_bytes()


def test_build_without_wheels(plain_build):
    zips, before, after = plain_build
    version = addon_version()
    assert [z.name for z in zips] == [f"{EXT_ID}-{version}.zip"]
    with zipfile.ZipFile(zips[0]) as zf:
        names = zf.namelist()
    assert {"blender_manifest.toml", "__init__.py", "vendor_model/pipeline.py", "synth/head.py"} <= set(names)
    assert "synth/tts.py" not in names  # only the head generator ships
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("wheels/")]
    manifest = zip_manifest(zips[0])
    assert manifest["version"] == version
    assert "wheels" not in manifest and "platforms" not in manifest
    assert after == before
    assert not list(zips[0].parent.glob(".*"))  # no partial files left behind


def test_build_with_wheel_directory_lists_wheels_per_platform(tmp_path, blender_ext):
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    foo = make_wheel(wheel_dir, "foo-1.0-py3-none-any.whl").name
    bar = make_wheel(wheel_dir, "bar-1.0-cp311-cp311-manylinux_2_28_x86_64.whl").name
    baz = make_wheel(wheel_dir, "baz-1.0-cp311-cp311-win_amd64.whl").name
    make_wheel(wheel_dir, "bar-1.0-cp313-cp313-manylinux_2_28_x86_64.whl")  # for Blender 5.1+: skipped
    before = TRACKED_MANIFEST.read_bytes()

    zips = build.build(tmp_path / "dist", wheels=wheel_dir, blender_ext=blender_ext,
                       keep_staging=tmp_path / "staged")

    staged = tomllib.loads((tmp_path / "staged" / build.MANIFEST_NAME).read_text())
    assert staged["platforms"] == ["linux-x64", "windows-x64", "macos-arm64"]
    assert staged["wheels"] == [f"./wheels/{n}" for n in sorted([foo, bar, baz])]
    assert sorted(p.name for p in (tmp_path / "staged" / "wheels").iterdir()) == sorted([foo, bar, baz])
    assert TRACKED_MANIFEST.read_bytes() == before

    version = addon_version()
    expected = {"linux_x64": {foo, bar}, "windows_x64": {foo, baz}, "macos_arm64": {foo}}
    assert sorted(z.name for z in zips) == sorted(f"{EXT_ID}-{version}-{p}.zip" for p in expected)
    for zip_path in zips:
        platform = zip_path.stem.rsplit("-", 1)[1]
        with zipfile.ZipFile(zip_path) as zf:
            in_zip = {Path(n).name for n in zf.namelist() if n.startswith("wheels/")}
        generated = zip_manifest(zip_path)["build"]["generated"]
        assert in_zip == expected[platform], platform
        assert generated["platforms"] == [platform.replace("_", "-")]
        assert {Path(w).name for w in generated["wheels"]} == expected[platform]


def test_cli_validate(tmp_path, blender_ext, capsys):
    package = build.stage(tmp_path)
    assert build.main(["--blender-ext", str(blender_ext), "validate", str(package)]) == 0
    (package / build.MANIFEST_NAME).write_text(_break_tagline((package / build.MANIFEST_NAME).read_text()))
    assert build.main(["--blender-ext", str(blender_ext), "validate", str(package)]) == 1
    assert "tagline" in capsys.readouterr().err


# ------------------------------------------------------------ bpy (last: slow import)


@pytest.fixture(scope="module")
def bpy_module():
    """bpy, imported with BLENDER_USER_RESOURCES pointing at a per-process temporary directory."""
    return import_bpy()


def test_built_zip_installs_enables_and_uninstalls(bpy_module, plain_build):
    bpy = bpy_module
    import addon_utils

    zip_path = plain_build[0][0]
    module_name = f"bl_ext.user_default.{EXT_ID}"
    repos = bpy.context.preferences.extensions.repos
    repo_index = [r.module for r in repos].index("user_default")
    install_dir = Path(repos[repo_index].directory) / EXT_ID
    installed = False
    try:
        result = bpy.ops.extensions.package_install_files(
            filepath=str(zip_path), repo="user_default", enable_on_install=True)
        installed = True
        assert result == {"FINISHED"}
        assert install_dir.is_dir()
        assert addon_utils.check(module_name) == (True, True)
        assert module_name in bpy.context.preferences.addons
        addon = sys.modules[module_name]
        assert addon.manifest_version() == addon_version()
        pipeline = importlib.import_module(f"{module_name}.vendor_model.pipeline")
        assert Path(pipeline.__file__).is_relative_to(install_dir)
        assert callable(pipeline.generate)
    finally:
        if installed or install_dir.exists():
            result = bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id=EXT_ID)
    assert result == {"FINISHED"}
    assert not install_dir.exists()
    assert module_name not in bpy.context.preferences.addons
    assert addon_utils.check(module_name) == (False, False)
    assert module_name not in sys.modules


def test_generate_runs_through_the_installed_extension(bpy_module, plain_build, tmp_path):
    """The installed zip's own operator, preferences, model code and bake writer make
    shape keys from a sound strip, with nothing imported from the repository's add-on."""
    from diffspeaker_blender import compat
    from vendor_model.checkpoint import ModelBundle, save_bundle

    from .bpy_env import reset_scene
    from .conftest import speech_like, tiny_model, write_wav

    bpy = bpy_module
    reset_scene()
    model = save_bundle(ModelBundle(tiny_model(), None, ("a", "b", "c")), tmp_path / "tiny.safetensors")
    wav = write_wav(tmp_path / "line.wav", speech_like(1.2))
    module_name = f"bl_ext.user_default.{EXT_ID}"
    repos = bpy.context.preferences.extensions.repos
    repo_index = [r.module for r in repos].index("user_default")
    assert bpy.ops.extensions.package_install_files(
        filepath=str(plain_build[0][0]), repo="user_default", enable_on_install=True) == {"FINISHED"}
    try:
        prefs = bpy.context.preferences.addons[module_name].preferences
        prefs.model_source, prefs.model_path, prefs.device = "CHECKPOINT", str(model), "CPU"
        mesh = bpy.data.meshes.new("Face")
        mesh.from_pydata([(x * 0.01, 0.0, y * 0.01) for y in range(4) for x in range(5)], [], [])
        obj = bpy.data.objects.new("Face", mesh)
        bpy.context.scene.collection.objects.link(obj)
        bpy.context.view_layer.objects.active = obj
        scene = bpy.context.scene
        strip = compat.new_sound_strip(scene, "Line", str(wav), channel=1, frame_start=5)
        scene.diffspeaker.sound_strip, scene.diffspeaker.steps = strip.name, 3

        assert bpy.ops.diffspeaker.generate_animation() == {"FINISHED"}
        assert bpy.ops.diffspeaker.add_head() == {"FINISHED"}  # the bundled head generator works
        assert len(bpy.context.active_object.data.vertices) == 9277

        operator_module = sys.modules[type(scene.diffspeaker).__module__]
        assert operator_module.__name__.startswith(module_name)  # the installed copy did the work
        keys = [k.name for k in obj.data.shape_keys.key_blocks]
        assert keys[0] == "Basis" and all(k.startswith("DS_") for k in keys[1:]) and len(keys) > 1
        assert scene.diffspeaker.job.status.startswith("Done")
    finally:
        assert bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id=EXT_ID) == {"FINISHED"}
