"""The README's main job runs on built-in defaults and writes every promised file."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.slow
def test_main_job_writes_blend_fbx_video_and_contact_sheet(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path), "--steps", "2",
         "--render-frames", "3", "--every", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("demo.blend", "demo.fbx", "preview.mp4", "contact_sheet.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "shape keys" in done.stdout  # the bake summary
