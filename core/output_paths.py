"""Checks of output locations, made before any heavy work: a run of hours must not end on
``IsADirectoryError``. Nothing is created here; each check finds the nearest existing folder on the
way and proves it writable by creating and removing a temporary file in it (``os.access`` says yes
to root even on read-only file systems)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from anycharv.errors import InputError


def _nearest_existing(path: Path, name: str) -> Path:
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{name} {path}", f"{parent} is a file, not a folder", code="bad_output")
            return parent
    raise InputError(f"{name} {path}", "no existing folder on the way", code="bad_output")  # pragma: no cover


def _check_writable(folder: Path, path: Path, name: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".anycharv-write-test-", dir=folder)
    except OSError as exc:
        raise InputError(f"{name} {path}", f"cannot write in {folder} ({exc.strerror or exc})",
                         code="bad_output") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(path: str | os.PathLike, name: str = "--output") -> Path:
    """``path`` as an absolute folder that exists or can be created, and can be written."""
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InputError(f"{name} {path}", "exists and is not a folder", code="bad_output")
    _check_writable(_nearest_existing(path, name), path, name)
    return path


def check_output_file(path: str | os.PathLike, name: str = "--out") -> Path:
    """``path`` as an absolute file path that can be written (its folder may be created)."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        raise InputError(f"{name} {path}", "is a folder; give a file name", code="bad_output")
    _check_writable(_nearest_existing(path.parent, name), path, name)
    return path
