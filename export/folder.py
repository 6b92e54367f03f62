"""Writing an export folder, shared by every model family's exporter.

A clash with an earlier export is refused without ``--force``; the graphs and the manifest are staged in
a private work folder beside the output, named for this process (``.atfr-export-<pid>@<host>-*``) so
that the next export can remove it if this process is killed; the result is published atomically: a
new folder in one rename, an existing one file by file with the manifest last (a reader never sees a
manifest whose graphs are not in place)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from atfr.errors import ATFRError
from atfr.fileio import check_output_dir
from atfr.output_claim import remove_stale, work_dir
from atfr.runtime.manifest import MANIFEST_NAME

TMP_PREFIX = ".atfr-export-"  # + <pid>@<host>-<random>: the export's work folder beside the output


def check_destination(out: Path, artifacts: Iterable[str], force: bool) -> None:
    """Refuse a file in the way or an earlier export (without ``force``) before any work; probe that
    the folder is writable; remove work folders of killed exports."""
    if out.exists() and not out.is_dir():
        raise ATFRError(f"{out} exists and is not a directory")
    if out.exists() and not force:
        clash = [a for a in artifacts if (out / a).exists()]
        if clash:
            raise ATFRError(f"{out} already holds an export ({clash[0]} ...); pass --force to overwrite it")
    check_output_dir(out)
    remove_stale(out.parent, TMP_PREFIX, force)


@contextlib.contextmanager
def staged(out: Path) -> Iterator[Path]:
    """Yield the private work folder; publish it as ``out`` when the block ends without an error,
    and remove whatever is left of it in every case."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = work_dir(out.parent, TMP_PREFIX)
    try:
        yield tmp
        _publish(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> None:
    if not out.exists():
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the export honours the umask
        os.replace(tmp, out)
    else:
        for f in sorted(os.listdir(tmp), key=lambda n: n == MANIFEST_NAME):
            os.replace(tmp / f, out / f)
