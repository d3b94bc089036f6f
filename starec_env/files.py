"""Atomic file writes: a reader never sees a half-written file.

Every layer that leaves files behind (run folders, memory logs, benchmark
outputs) writes through :func:`atomic_write`, so an interrupted run leaves
either the old file or the new one.
"""
from __future__ import annotations

import io
import os
import secrets
import stat
from pathlib import Path
from typing import Callable


def create_synced(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Create ``path`` (mode from the umask; fails if it exists), fill it with ``write`` and sync it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Run ``write`` on a temporary file beside ``path``, then move it into place.

    The new file keeps the mode of the file it replaces, else gets the one
    the umask allows (never the 0600 of ``tempfile.mkstemp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        create_synced(tmp, write)
        if path.exists():
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
