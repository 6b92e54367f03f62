"""Claiming an output folder for writing: one atfr process at a time, and no leftovers.

Two commands writing the same output (``atfr export -o X`` twice, ``atfr unpack -o X``) would
each check "X does not exist", work, and rename into place: both exit 0 and the later silently
replaces the earlier. :func:`output_lock` takes an exclusive ``flock`` on ``.X.atfr-lock`` beside
X for the whole command; the second exits 2 ("being written by another atfr process"). The
kernel drops the lock when its process dies, so a killed command never leaves a stale lock, and
the lock file is removed (while still locked) on the way out.

Work folders are named ``<base><pid>@<host>-<random>`` (:func:`work_dir`), so the next command
writing there can tell a folder left by a killed process (its PID no longer runs on this host)
and remove it (:func:`remove_stale`); with ``--force`` it also removes the unnamed ones earlier
versions left. A folder of a process still running, or made on another host, is left alone.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ATFRError

try:
    import fcntl
except ImportError:  # Windows: no flock; the output checks still apply
    fcntl = None  # type: ignore[assignment]


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:40] or "host"


def lock_path(dest: str | os.PathLike) -> Path:
    d = Path(dest)
    return d.with_name(f".{d.name}.atfr-lock")


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""


@contextmanager
def output_lock(dest: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive write claim on ``dest`` (a file or folder) for the ``with`` body.

    Re-entrant within one process (the lock file records the holder's PID), so a command and
    the library function it calls may both claim the same output."""
    if fcntl is None:
        yield
        return
    path = lock_path(dest)
    created = []  # folders made for the lock file, deepest first: removed again if left empty
    p = path.parent
    while not p.exists() and p.parent != p:
        created.append(p)
        p = p.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()}@{_host()}"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if holder == me:  # this process already holds it (an outer claim)
                yield
                return
            who = f" (PID {holder.split('@')[0]})" if holder else ""
            raise ATFRError(f"{dest} is being written by another atfr process{who}; "
                            "wait for it to finish or stop it") from None
        try:  # the file we locked may have been removed by its previous holder meanwhile
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, me.encode("ascii"), 0)
        yield
    finally:
        try:
            os.unlink(path)  # still locked: a waiter that opened it retries on the new file
        except OSError:
            pass
        os.close(fd)
        for d in created:  # a failed command leaves no empty folders behind
            try:
                d.rmdir()
            except OSError:
                break


def work_dir(parent: Path, base: str) -> Path:
    """A fresh private folder ``parent/<base><pid>@<host>-XXXXXXXX`` (0700, made by mkdtemp)."""
    return Path(tempfile.mkdtemp(prefix=f"{base}{os.getpid()}@{_host()}-", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def remove_stale(parent: Path, base: str, force: bool = False) -> list[Path]:
    """Remove ``base*`` folders in ``parent`` left by dead processes on this host (and, with
    ``force``, those without a PID in their name). Returns what was removed."""
    pat = re.compile(re.escape(base) + r"(\d+)@([A-Za-z0-9.]+)-[A-Za-z0-9_]+$")
    removed = []
    try:
        entries = [p for p in Path(parent).iterdir() if p.name.startswith(base)]
    except OSError:
        return removed
    for p in entries:
        if p.is_symlink() or not p.is_dir():
            continue
        m = pat.match(p.name)
        if m:
            if m.group(2) != _host() or _alive(int(m.group(1))):
                continue
        elif not force:
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
