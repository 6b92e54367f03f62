"""A private folder for calibration's intermediate graphs, and a full disk as one line.

ONNX Runtime's quantizer writes ``<model>-inferred.onnx`` beside the model it is given (its shape
inference step) and deletes it afterwards; given the export's own graphs, that file would be
written, through any symbolic link planted under that name, beside files the user owns. So the
quantizer only ever sees copies in a folder made for this run (``mkdtemp``: 0700, a fresh name,
nothing to follow) and removed at the end, whatever happens. The copies are hashed from the bytes
written, so what is calibrated is exactly what was hashed.

A disk filling up under ONNX Runtime shows as a protobuf DecodeError (a silently truncated
``-inferred.onnx``) or an OSError: both become one ATFRError (exit 2) naming the folder, and free
space is checked before starting against what the run will write.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from atfr.errors import ATFRError

# What a run writes, in units of the source graphs' total size: in the private folder our copy,
# ORT's -inferred copy, its augmented model (the graph plus extra outputs) and the quantized
# model (QDQ keeps fp32 weights' int8 copies plus scales: at most the source again); in the
# export folder the int8 graphs (at most the sources' size) written atomically beside the old ones.
WORK_FACTOR = 4
OUT_FACTOR = 2
SLACK = 16 << 20  # the calibration cache (histograms) and ranges files: a few MB at most


@dataclass
class PrivateGraphs:
    folder: Path
    paths: dict[str, Path]  # key -> the private copy (same file name as the source)
    sha256: dict[str, str]  # key -> digest of the copied bytes


def _free(path: Path) -> int:
    p = path
    while not p.exists() and p.parent != p:
        p = p.parent
    return shutil.disk_usage(p).free


def check_free_space(sources: dict[str, Path], out_dir: Path, work_parent: Path) -> None:
    """Refuse (exit 2) before any work when either folder cannot hold what the run writes."""
    total = sum(p.stat().st_size for p in sources.values())
    for where, need in ((work_parent, WORK_FACTOR * total + SLACK), (out_dir, OUT_FACTOR * total + SLACK)):
        free = _free(where)
        if free < need:
            raise ATFRError(f"not enough free space in {where} for calibration: about {need / 1e6:.0f} MB "
                            f"needed, {free / 1e6:.0f} MB free")


@contextmanager
def private_graphs(sources: dict[str, Path]) -> Iterator[PrivateGraphs]:
    """Copies of ``sources`` in a fresh private folder, removed on exit (success or not)."""
    folder = Path(tempfile.mkdtemp(prefix="atfr-calibrate-"))
    try:
        paths, digests = {}, {}
        for k, src in sources.items():
            data = src.read_bytes()
            dst = folder / src.name
            with open(dst, "xb") as f:  # "x": a name in our own fresh folder; never an existing file
                f.write(data)
            paths[k], digests[k] = dst, hashlib.sha256(data).hexdigest()
        with full_disk_as_error(folder):
            yield PrivateGraphs(folder, paths, digests)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def full_disk_as_error(folder: Path) -> Iterator[None]:
    """ENOSPC, or the DecodeError of a graph truncated by a full disk, as one ATFRError line."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise ATFRError(f"{e.filename or folder.parent}: no space left on the device (calibration stopped; "
                        "no partial file left)") from None
    except Exception as e:  # noqa: BLE001 - only protobuf's DecodeError is translated
        if type(e).__name__ != "DecodeError":
            raise
        raise ATFRError(f"{folder.parent}: an intermediate graph written by ONNX Runtime's quantizer was cut "
                        f"short (disk full? {_free(folder) / 1e6:.0f} MB free there); calibration stopped, "
                        "no partial file left") from None
