"""Atomic file output: write to a temporary file beside the target, then rename,
so a crash or a full disk never leaves a half-written file in the artist's folder."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[str]:
    """Yields a temporary path to write; on success it replaces `path` in one step."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """np.savez_compressed, atomically."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)  # a file object, so numpy does not append ".npz" to the name
    return Path(path)
