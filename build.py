"""Build the DiffSpeaker Blender extension from a staging copy.

    python build.py                                 # dist/diffspeaker-<version>.zip, no wheels
    python build.py --wheels DIR                    # bundle the .whl files already in DIR
    python build.py --download --torch-wheel /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
    python build.py validate dist/diffspeaker-0.1.0.zip
    python build.py stage build/staging             # only assemble the staging copy

The tracked add-on (`diffspeaker_blender/`) is never modified. `stage()` copies it,
the model package (`vendor_model/`, which uses relative imports only, so it works as
`<addon>/vendor_model`) and the chosen wheels into a staging directory, and writes
`platforms` and `wheels` into the *staged* manifest only. Validation and the zip itself
come from Blender's own `blender_ext.py` (shipped with the `bpy` wheel; a standalone
stdlib-only script), so no Blender executable is needed.

Importable: `stage`, `validate`, `build`, `download_wheels`, `select_wheels`.
Runs on any Python >= 3.11 (tomllib); it never imports bpy.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "diffspeaker_blender"
MODEL_DIR = ROOT / "vendor_model"
MANIFEST_NAME = "blender_manifest.toml"
DEFAULT_OUTPUT_DIR = ROOT / "dist"          # git-ignored
DEFAULT_WHEEL_CACHE = ROOT / "build" / "wheels"  # git-ignored; --download puts wheels here
EXTRA_FILES = ("LICENSE", "LICENSE.txt", "COPYING", "README.md")
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "tests", ".*")

# Blender 4.2-5.0 embed Python 3.11 (cp311 wheels). Blender 5.1+ embeds Python 3.13:
# build for it with `--python-version 3.13` (cp313 wheels; no CPU-only torch for
# linux-x64 on PyPI there either, so pass a cp313 --torch-wheel).
DEFAULT_PYTHON_VERSION = "3.11"

# Blender platform -> wheel platform tags given to `pip download --platform`.
# Blender 4.2+ needs glibc 2.28 on Linux. On macOS, torch 2.13.0 ships only
# macosx_14_0_arm64 wheels, so the bundled extension needs macOS 14+ (Blender itself
# runs on 11.2+); pip expands the tag to older macOS versions and universal2.
PLATFORM_TAGS: Mapping[str, tuple[str, ...]] = {
    "linux-x64": tuple(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1))
    + ("manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"),
    "windows-x64": ("win_amd64",),
    "macos-arm64": ("macosx_14_0_arm64",),
}
DEFAULT_PLATFORMS = tuple(PLATFORM_TAGS)

# Everything the add-on imports at run time, pinned to the tested versions, with the
# dependencies pip would install, since Blender installs the listed wheels only and
# resolves nothing. Never numpy: Blender ships its own (1.26 in 4.2-5.0).
REQUIREMENTS: tuple[str, ...] = (
    # torch and its Requires-Dist
    "torch==2.13.0",
    "filelock==4.3.1",
    "fsspec==2026.9.0",
    "jinja2==3.1.6",
    "markupsafe==3.0.4",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "setuptools==84.2.1",
    "sympy==1.14.0",
    "typing_extensions==4.16.0",
    # transformers: what `from transformers import Wav2Vec2Model` needs (checked by
    # importing and running a tiny Wav2Vec2Model with only these on sys.path). Its
    # CLI-only requirements (typer -> click, rich, pydantic, shellingham) and
    # huggingface-hub's optional hf-xet are left out.
    "transformers==5.24.0",
    "huggingface_hub==2.4.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "regex==2026.11.19",
    "pyyaml==6.0.4",
    "packaging==26.4",
    "tqdm==4.70.1",
    "httpx2==2.16.2",
    "httpcore2==2.16.2",
    "anyio==4.16.0",
    "h11==0.16.0",
    "idna==3.20",
    "truststore==0.10.5",
    # the built-in model's phoneme recogniser: its weights and phone list (one pure wheel);
    # vendor_model/hama_asr.py runs the network in PyTorch, so Windows gets the default too
    "hama==1.7.0",
    # audio files
    "soundfile==0.14.0",
    "cffi==2.1.1",
    "pycparser==3.12",
)


class BuildError(RuntimeError):
    """A build step failed; the message says which and why."""


# --------------------------------------------------------------------------- wheels


@dataclass(frozen=True)
class WheelName:
    """The parts of a wheel filename: `{dist}-{version}(-{build})?-{python}-{abi}-{platform}.whl`."""

    dist: str  # normalised: lower case, runs of -_. as "_"
    version: str
    python_tags: tuple[str, ...]
    abi_tags: tuple[str, ...]
    platform_tags: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise BuildError(f"not a wheel file: {filename}")
        parts = filename[: -len(".whl")].split("-")
        if len(parts) not in (5, 6):
            raise BuildError(f"not a valid wheel filename: {filename}")
        return cls(
            dist=normalize_dist(parts[0]),
            version=parts[1],
            python_tags=tuple(parts[-3].split(".")),
            abi_tags=tuple(parts[-2].split(".")),
            platform_tags=tuple(parts[-1].split(".")),
        )

    def supports_python(self, version: tuple[int, int]) -> bool:
        """Whether CPython `version` (e.g. (3, 11)) can load this wheel."""
        for tag in self.python_tags:
            match = re.fullmatch(r"(py|cp)(\d)(\d*)", tag)
            if not match or int(match[2]) != version[0]:
                continue
            minor = int(match[3]) if match[3] else None
            if minor is None or minor == version[1]:
                return True
            if minor < version[1] and (match[1] == "py" or "abi3" in self.abi_tags):
                return True
        return False

    def platforms(self) -> set[str] | None:
        """Blender platforms this wheel runs on; None for a pure (`any`) wheel."""
        found: set[str] = set()
        for tag in self.platform_tags:
            if tag == "any":
                return None
            found |= _blender_platforms_of_tag(tag)
        return found


def normalize_dist(name: str) -> str:
    """PEP 503-style distribution name, with "_" as the separator (as in wheel filenames)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _blender_platforms_of_tag(tag: str) -> set[str]:
    """`manylinux_2_28_x86_64` -> {"linux-x64"}; `macosx_10_9_universal2` -> both macOS."""
    if tag.startswith("musllinux"):
        return set()  # Blender's Linux builds link glibc
    if tag.startswith(("manylinux", "linux")):
        system = "linux"
    elif tag.startswith("win"):
        system = "windows"
    elif tag.startswith("macosx"):
        system = "macos"
    else:
        return set()
    if tag == "win32":
        return {"windows-x86"}
    if tag.endswith("universal2"):
        return {"macos-x64", "macos-arm64"}
    for suffix, machine in (("x86_64", "x64"), ("amd64", "x64"), ("aarch64", "arm64"), ("arm64", "arm64")):
        if tag.endswith(suffix):
            return {f"{system}-{machine}"}
    return set()


def parse_python_version(text: str) -> tuple[int, int]:
    """"3.11" -> (3, 11)."""
    match = re.fullmatch(r"(\d+)\.(\d+)", text)
    if not match:
        raise BuildError(f"--python-version must look like 3.11, got {text!r}")
    return int(match[1]), int(match[2])


def select_wheels(
    wheel_files: Iterable[Path],
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    python_version: str = DEFAULT_PYTHON_VERSION,
    torch_wheel: Path | None = None,
) -> tuple[list[Path], list[str]]:
    """Choose the wheels to bundle: those for `python_version` that run on at least one of
    `platforms`. `torch_wheel` replaces any other torch for linux-x64.

    Returns (wheels, warnings). Two different wheels of one distribution for the same
    platform are an error; a distribution missing on some platform is a warning.
    """
    version = parse_python_version(python_version)
    files = sorted({Path(f) for f in wheel_files}, key=lambda p: p.name)
    if torch_wheel is not None:
        torch_wheel = Path(torch_wheel)
        name = WheelName.parse(torch_wheel.name)
        if name.dist != "torch" or "linux-x64" not in (name.platforms() or set()):
            raise BuildError(f"--torch-wheel must be a linux-x64 torch wheel, got {torch_wheel.name}")
        if not name.supports_python(version):
            raise BuildError(f"--torch-wheel {torch_wheel.name} does not support Python {python_version}")
        files = [f for f in files if not _is_linux_torch(f)] + [torch_wheel]

    warnings: list[str] = []
    chosen: list[Path] = []
    other_platforms: list[str] = []
    owner: dict[tuple[str, str], Path] = {}  # (dist, platform) -> wheel
    for path in files:
        name = WheelName.parse(path.name)
        if not name.supports_python(version):
            warnings.append(f"skipped {path.name}: not for Python {python_version}")
            continue
        runs_on = set(platforms) if name.platforms() is None else name.platforms() & set(platforms)
        if not runs_on:
            other_platforms.append(path.name)
            continue
        for platform in sorted(runs_on):
            other = owner.setdefault((name.dist, platform), path)
            if other != path:
                raise BuildError(f"two {name.dist} wheels for {platform}: {other.name} and {path.name}")
        chosen.append(path)

    if other_platforms:
        warnings.append(f"skipped {len(other_platforms)} wheel(s) for none of {', '.join(platforms)}: "
                        + ", ".join(other_platforms))
    for dist in sorted({dist for dist, _ in owner}):
        missing = [p for p in platforms if (dist, p) not in owner]
        if missing:
            warnings.append(f"no {dist} wheel for {', '.join(missing)}")
    return chosen, warnings


def _is_linux_torch(path: Path) -> bool:
    name = WheelName.parse(path.name)
    return name.dist == "torch" and "linux-x64" in (name.platforms() or set())


def download_wheels(
    dest: Path,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    python_version: str = DEFAULT_PYTHON_VERSION,
    requirements: Sequence[str] = REQUIREMENTS,
    torch_wheel: Path | None = None,
    pip: Sequence[str] = (sys.executable, "-m", "pip"),
) -> list[Path]:
    """`pip download --only-binary=:all: --no-deps` the pinned `requirements` for each platform
    into `dest` (already-present files are reused) and return the wheels that belong to them.

    With `torch_wheel`, torch is not downloaded for linux-x64 (PyPI's Linux torch is the CUDA
    build); the local file is copied into `dest` instead.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pins = [_parse_pin(r) for r in requirements]
    for platform in platforms:
        reqs = list(requirements)
        if platform == "linux-x64" and torch_wheel is not None:
            reqs = [r for r, (dist, _) in zip(requirements, pins) if dist != "torch"]
        cmd = [*pip, "download", "--only-binary=:all:", "--no-deps", "--python-version", python_version,
               "--dest", str(dest)]
        for tag in PLATFORM_TAGS[platform]:
            cmd += ["--platform", tag]
        print(f"downloading {len(reqs)} wheels for {platform} ...", flush=True)
        result = subprocess.run([*cmd, *reqs], check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"pip download for {platform} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    if torch_wheel is not None and "linux-x64" in platforms:
        target = dest / Path(torch_wheel).name
        if not target.exists():
            shutil.copy2(torch_wheel, target)

    wanted = set(pins)
    version = parse_python_version(python_version)
    found = []
    for path in sorted(dest.glob("*.whl")):
        name = WheelName.parse(path.name)
        if (name.dist, name.version.split("+")[0]) in wanted and name.supports_python(version):
            runs_on = name.platforms()
            if runs_on is None or runs_on & set(platforms):
                found.append(path)
    if torch_wheel is not None:
        found = [f for f in found if not _is_linux_torch(f)] + [dest / Path(torch_wheel).name]
    for path in found:
        if _is_linux_torch(path) and "+cpu" not in path.name:
            print(f"warning: {path.name} is PyPI's CUDA build of torch; it needs nvidia-* wheels that are "
                  "not bundled. Pass --torch-wheel with a +cpu wheel.", file=sys.stderr)
    return found


def _parse_pin(requirement: str) -> tuple[str, str]:
    """"torch==2.13.0" -> ("torch", "2.13.0")."""
    name, sep, version = requirement.partition("==")
    if not sep:
        raise BuildError(f"requirements must be pinned with ==, got {requirement!r}")
    return normalize_dist(name.strip()), version.strip()


# ------------------------------------------------------------------------ staging


def read_manifest(path: Path | None = None) -> dict:
    """The parsed manifest (tomllib); by default the tracked one."""
    with open(path or ADDON_DIR / MANIFEST_NAME, "rb") as f:
        return tomllib.load(f)


def stage(
    staging_dir: Path,
    wheels: Sequence[Path] = (),
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> Path:
    """Assemble `staging_dir/<id>/`: the add-on (no caches, no tests; any bundled files
    such as `models/` included), `vendor_model/` inside it, LICENSE/README.md, and the
    given wheels in `wheels/`, listed with `platforms` in the staged manifest.

    Returns the staged package directory. The tracked manifest is only read.
    """
    manifest = read_manifest()
    package = Path(staging_dir) / manifest["id"]
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(ADDON_DIR, package, ignore=COPY_IGNORE)
    if (package / "vendor_model").exists():
        raise BuildError(f"{ADDON_DIR / 'vendor_model'} exists; the model package is copied from {MODEL_DIR}")
    shutil.copytree(MODEL_DIR, package / "vendor_model", ignore=COPY_IGNORE)
    (package / "synth").mkdir()  # only the head generator: the built-in model's mesh (numpy only)
    for name in ("__init__.py", "head.py"):
        shutil.copy2(ROOT / "synth" / name, package / "synth" / name)
    for name in EXTRA_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, package / name)
    if wheels:
        (package / "wheels").mkdir()
        for wheel in wheels:
            shutil.copy2(wheel, package / "wheels" / Path(wheel).name)
        write_platforms_and_wheels(package / MANIFEST_NAME, platforms, [Path(w).name for w in wheels])
    return package


def write_platforms_and_wheels(manifest_path: Path, platforms: Sequence[str], wheel_names: Sequence[str]) -> None:
    """Add top-level `platforms` and `wheels` keys to a (staged) manifest, before its first table."""
    text = manifest_path.read_text(encoding="utf-8")
    existing = tomllib.loads(text)
    for key in ("platforms", "wheels"):
        if key in existing:
            raise BuildError(f'the tracked manifest must not set "{key}"; build.py writes it into the staged copy')
    lines = ["# Written by build.py into the staged copy only.",
             "platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]",
             "wheels = ["]
    lines += [f'  "./wheels/{name}",' for name in sorted(wheel_names)]
    lines += ["]", "", ""]
    block = "\n".join(lines)
    first_table = re.search(r"^\s*\[", text, flags=re.MULTILINE)
    at = first_table.start() if first_table else len(text)
    if not first_table and not text.endswith("\n"):
        block = "\n" + block
    new_text = text[:at] + block + text[at:]
    parsed = tomllib.loads(new_text)
    assert parsed["platforms"] == list(platforms) and len(parsed["wheels"]) == len(wheel_names)
    manifest_path.write_text(new_text, encoding="utf-8")


# -------------------------------------------------------------- Blender's own tool


def find_blender_ext(explicit: Path | None = None) -> Path:
    """Blender's `blender_ext.py`: `explicit`, else the one in the installed bpy wheel
    (`<site>/bpy/<ver>/scripts/addons_core/bl_pkg/cli/`), located without importing bpy."""
    if explicit is not None:
        if not Path(explicit).is_file():
            raise BuildError(f"--blender-ext {explicit} does not exist")
        return Path(explicit)
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("bpy is not installed in this Python; pass --blender-ext PATH/blender_ext.py")
    bpy_dir = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"),
                   key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.parts[-6])))
    if not found:
        raise BuildError(f"no scripts/addons_core/bl_pkg/cli/blender_ext.py under {bpy_dir}")
    return found[-1]


def valid_tags_file(blender_ext: Path) -> Path | None:
    """`scripts/modules/_bpy_internal/extensions/tags.py` next to `blender_ext.py`, if present."""
    scripts = Path(blender_ext).resolve().parents[3]
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return tags if tags.is_file() else None


def run_blender_ext(args: Sequence[str], blender_ext: Path | None = None) -> str:
    """Run `blender_ext.py ARGS` (with --valid-tags where known); return its output or raise."""
    tool = find_blender_ext(blender_ext)
    cmd = [sys.executable, str(tool), *args]
    tags = valid_tags_file(tool)
    if tags is not None:
        cmd.append(f"--valid-tags={tags}")
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise BuildError(f"blender_ext.py {args[0]} failed:\n{output}")
    return output


def validate(path: Path, blender_ext: Path | None = None) -> None:
    """Validate an extension directory or zip with Blender's validator; raise BuildError on failure."""
    run_blender_ext(["validate", str(path)], blender_ext)


# -------------------------------------------------------------------------- build


def build(
    output_dir: Path = DEFAULT_OUTPUT_DIR,
    wheels: str | Path | None = None,
    download: bool = False,
    torch_wheel: Path | None = None,
    python_version: str = DEFAULT_PYTHON_VERSION,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    blender_ext: Path | None = None,
    keep_staging: Path | None = None,
) -> list[Path]:
    """Stage, validate and build the extension zip(s) into `output_dir`; return their paths.

    `wheels`: None or "none" bundles nothing (the Blender Python must already provide
    torch etc.); a directory bundles the wheels in it. `download` first fetches the pinned
    REQUIREMENTS into that directory (default build/wheels/py<ver>). With wheels, one zip
    per platform is built (`--split-platforms`). The zips are built in a temporary
    directory and moved into `output_dir` at the end; `keep_staging` keeps a copy of the
    staged package there for inspection.
    """
    chosen: list[Path] = []
    wheel_files = _gather_wheels(wheels, download, torch_wheel, python_version, platforms)
    if wheel_files or torch_wheel is not None:
        chosen, warnings = select_wheels(wheel_files, platforms, python_version, torch_wheel)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="diffspeaker-build-") as tmp:
        package = stage(Path(tmp) / "staging", chosen, platforms)
        if keep_staging is not None:
            shutil.rmtree(keep_staging, ignore_errors=True)
            shutil.copytree(package, keep_staging)
        validate(package, blender_ext)
        built_dir = Path(tmp) / "dist"
        built_dir.mkdir()
        args = ["build", "--source-dir", str(package), "--output-dir", str(built_dir)]
        if chosen:
            args.append("--split-platforms")
        run_blender_ext(args, blender_ext)
        zips = sorted(built_dir.glob("*.zip"))
        if not zips:
            raise BuildError("blender_ext.py build produced no zip")
        for zip_path in zips:
            validate(zip_path, blender_ext)
        results = [_move_into(zip_path, output_dir) for zip_path in zips]
    for path in results:
        print(f"{_relative(path)}  {_human_size(path.stat().st_size)}")
    return results


def _gather_wheels(wheels, download, torch_wheel, python_version, platforms) -> list[Path]:
    """The candidate wheel files for `build()`: none, those in a directory, or freshly downloaded."""
    wheel_dir = None if wheels in (None, "none") else Path(wheels)
    if download:
        wheel_dir = wheel_dir or DEFAULT_WHEEL_CACHE / f"py{python_version}"
        return download_wheels(wheel_dir, platforms, python_version, torch_wheel=torch_wheel)
    if wheel_dir is None:
        return []
    if not wheel_dir.is_dir():
        raise BuildError(f"--wheels {wheel_dir} is not a directory")
    files = sorted(wheel_dir.glob("*.whl"))
    if not files:
        raise BuildError(f"no .whl files in {wheel_dir}")
    return files


def _move_into(path: Path, output_dir: Path) -> Path:
    """Move `path` into `output_dir` so that the final name appears complete or not at all."""
    final = output_dir / path.name
    partial = output_dir / f".{path.name}.part"
    shutil.move(path, partial)
    os.replace(partial, final)
    return final


def _human_size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blender-ext", type=Path, help="Blender's blender_ext.py (default: from the bpy wheel)")
    sub = parser.add_subparsers(dest="command")

    b = sub.add_parser("build", help="stage, validate and build the zip(s) (the default command)")
    b.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="default: dist/")
    b.add_argument("--wheels", default="none", metavar="none|DIR",
                   help="bundle no wheels (default; Blender's Python must provide torch etc.) or the .whl files in DIR")
    b.add_argument("--download", action="store_true",
                   help="pip download the pinned requirements for each platform first (into --wheels DIR, "
                        "default build/wheels/py<ver>)")
    b.add_argument("--torch-wheel", type=Path, metavar="PATH",
                   help="local linux-x64 torch wheel (the CPU build, e.g. /opt/wheels/torch-2.13.0+cpu-cp311-...whl) "
                        "used instead of PyPI's")
    _common(b)
    b.add_argument("--keep-staging", type=Path, metavar="DIR", help="also keep the staged package in DIR")

    s = sub.add_parser("stage", help="only assemble the staging directory (no wheels)")
    s.add_argument("staging_dir", type=Path)

    v = sub.add_parser("validate", help="validate an extension directory or zip")
    v.add_argument("path", type=Path)

    d = sub.add_parser("download", help="only download the pinned wheels")
    d.add_argument("dest", type=Path)
    d.add_argument("--torch-wheel", type=Path, metavar="PATH")
    _common(d)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--python-version", default=DEFAULT_PYTHON_VERSION,
                        help="Blender's Python: 3.11 for Blender 4.2-5.0 (default), 3.13 for 5.1+")
    parser.add_argument("--platform", dest="platforms", action="append", choices=DEFAULT_PLATFORMS,
                        help="target platform (repeatable; default: all of %(choices)s)")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"build", "stage", "validate", "download"}
    at = _first_build_option(argv)
    if (at >= len(argv) or argv[at] not in commands) and not {"-h", "--help"} & set(argv[:at + 1]):
        argv.insert(at, "build")
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            build(args.output_dir, args.wheels, args.download, args.torch_wheel, args.python_version,
                  args.platforms or DEFAULT_PLATFORMS, args.blender_ext, args.keep_staging)
        elif args.command == "stage":
            print(stage(args.staging_dir))
        elif args.command == "validate":
            validate(args.path, args.blender_ext)
            print(f"valid: {args.path}")
        elif args.command == "download":
            for path in download_wheels(args.dest, args.platforms or DEFAULT_PLATFORMS, args.python_version,
                                        torch_wheel=args.torch_wheel):
                print(path)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _first_build_option(argv: list[str]) -> int:
    """Where to insert the implicit "build": after a leading `--blender-ext PATH`."""
    if argv[:1] == ["--blender-ext"]:
        return 2
    if argv and argv[0].startswith("--blender-ext="):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
