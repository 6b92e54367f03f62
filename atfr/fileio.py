"""Atomic, no-clobber file writes shared by every command that produces artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import ATFRError


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Before any work: refuse to overwrite an existing output unless ``force`` is set, and make
    sure the file can be created where it is going (see ``check_output_dir``)."""
    p = Path(path)
    if p.is_dir():
        raise ATFRError(f"{p} is a folder; give a file name")
    if p.exists() and not force:
        raise ATFRError(f"{p} already exists; pass --force to overwrite it")
    check_output_dir(p.parent if str(p.parent) else Path("."))
    return p


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Make sure files can be written in ``folder`` (created later if missing), before any work.

    Checks the folder, or the nearest existing folder above it: it must be a folder, writable
    (os.access) and really accept a new file (a probe file is created and removed: this also
    catches read-only mounts and root on read-only file systems, where os.access says yes).
    One ATFRError (exit 2) naming the path otherwise.
    """
    target = Path(folder)
    probe_dir = target
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if probe_dir.exists() and not probe_dir.is_dir():
        raise ATFRError(f"cannot write to {target}: {probe_dir} is a file, not a folder")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise ATFRError(f"cannot write to {target}: {probe_dir} is not writable (permission denied)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".atfr-write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ATFRError(f"cannot write to {target}: {probe_dir}: {e.strerror or e}") from None
    return target


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it over the target on success.

    A crash or exception leaves the previous file (if any) untouched and no partial file behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
