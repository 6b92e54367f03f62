"""One-file export artifacts: ``atfr pack`` on the workstation, ``atfr unpack`` on the device. Torch-free.

The archive is a plain tar (``.tar``, or gzip-compressed ``.tar.gz``/``.tgz``) holding the export
folder under one top-level name plus ``atfr-pack.json``: every file's size and sha256. Unpacking
reads only regular files and folders whose names stay inside that top-level folder (no absolute
paths, no '..', no links or devices), extracts into a temporary folder next to the destination,
checks every size and checksum against the pack manifest and the export's own graph checksums,
and only then renames it into place: a corrupt or hostile archive leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from atfr.errors import ATFRError
from atfr.fileio import atomic_path, check_output_dir, check_writable, sha256_file

PACK_MANIFEST = "atfr-pack.json"
PACK_FORMAT = "atfr-pack"
PACK_VERSION = 1
_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz"}


@dataclass
class PackResult:
    path: Path
    files: int
    bytes: int


def _files(folder: Path) -> list[Path]:
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_symlink():
            raise ATFRError(f"{p}: symbolic links are not packed (copy the file into the export folder)")
        if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")) and rel.as_posix() != PACK_MANIFEST:
            out.append(p)
    return out


def pack(outdir: str | os.PathLike, archive: str | os.PathLike, force: bool = False) -> PackResult:
    """Write ``archive`` from the export folder ``outdir`` (checked first: manifest + graph checksums)."""
    from atfr.runtime.manifest import load_manifest  # noqa: PLC0415

    src = Path(outdir)
    load_manifest(src, check=True)
    dst = Path(archive)
    mode = next((v for k, v in _MODES.items() if dst.name.lower().endswith(k)), None)
    if mode is None:
        raise ATFRError(f"{dst}: unsupported archive name (use .tar, .tar.gz or .tgz)")
    check_writable(dst, force)
    if dst.resolve().is_relative_to(src.resolve()):
        raise ATFRError(f"{dst}: write the archive outside the export folder")
    root = src.resolve().name
    files = _files(src)
    entries = {f.relative_to(src).as_posix(): {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in files}
    from atfr import __version__  # noqa: PLC0415

    man = json.dumps({"format": PACK_FORMAT, "version": PACK_VERSION, "root": root,
                      "created_by": f"atfr-deploy {__version__}", "files": entries}, indent=2).encode()
    with atomic_path(dst) as tmp:
        with tarfile.open(tmp, mode, format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"{root}/{PACK_MANIFEST}")
            info.size, info.mode = len(man), 0o644
            tar.addfile(info, io.BytesIO(man))
            for f in files:
                ti = tar.gettarinfo(str(f), arcname=f"{root}/{f.relative_to(src).as_posix()}")
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                with open(f, "rb") as fh:
                    tar.addfile(ti, fh)
    return PackResult(dst, len(files), sum(e["size"] for e in entries.values()))


def _safe_rel(name: str, root: str | None) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or name.startswith(("/", "\\")) or "\\" in name:
        raise ATFRError(f"archive member {name!r} points outside the export folder; refusing to unpack")
    if root is not None and (not p.parts or p.parts[0] != root):
        raise ATFRError(f"archive member {name!r} is outside its top-level folder {root!r}; refusing to unpack")
    return p


def _check_export_manifest(tar: tarfile.TarFile, members: list[tarfile.TarInfo], root: str, dst: Path,
                           src: Path) -> None:
    """The path rule of runtime/export_paths.py on the archived ``atfr.json``, read in memory."""
    from atfr.runtime.export_paths import check_manifest_paths  # noqa: PLC0415
    from atfr.runtime.manifest import MANIFEST_NAME  # noqa: PLC0415

    m = next((m for m in members if m.name == f"{root}/{MANIFEST_NAME}" and m.isfile()), None)
    if m is None or m.size > 64 << 20:
        return  # missing or absurd: the full check after extraction reports it
    try:
        d = json.loads(tar.extractfile(m).read().decode("utf-8"))  # type: ignore[union-attr]
    except (ValueError, AttributeError):
        return
    if isinstance(d, dict):
        check_manifest_paths(dst, d, label=f"{src}: {root}")


def unpack(archive: str | os.PathLike, dest: str | os.PathLike, force: bool = False) -> Path:
    """Extract and verify ``archive`` into the folder ``dest`` (the export folder itself)."""
    from atfr.runtime.manifest import load_manifest  # noqa: PLC0415

    src, dst = Path(archive), Path(dest)
    if not src.is_file():
        raise ATFRError(f"{src}: no such archive")
    if dst.exists() and not force:  # the destination is a folder: check_writable is for files
        raise ATFRError(f"{dst} already exists; pass --force to overwrite it")
    check_output_dir(dst.parent if str(dst.parent) else Path("."))
    try:
        tar = tarfile.open(src, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise ATFRError(f"{src}: not a tar archive ({e})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.name}.unpack-", dir=dst.parent))
    try:
        with tar:
            members = tar.getmembers()
            mans = [m for m in members if PurePosixPath(m.name).name == PACK_MANIFEST
                    and len(PurePosixPath(m.name).parts) == 2]
            if len(mans) != 1 or not mans[0].isfile():
                raise ATFRError(f"{src}: not an atfr pack (no {PACK_MANIFEST}); create one with 'atfr pack'")
            try:
                man = json.loads(tar.extractfile(mans[0]).read().decode("utf-8"))  # type: ignore[union-attr]
                root, files = str(man["root"]), dict(man["files"])
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ATFRError(f"{src}: corrupt {PACK_MANIFEST} ({type(e).__name__})") from None
            if man.get("format") != PACK_FORMAT or int(man.get("version", 0)) > PACK_VERSION:
                raise ATFRError(f"{src}: unsupported pack format/version")
            _safe_rel(root, None)
            for rel in files:
                _safe_rel(f"{root}/{rel}", root)
            _check_export_manifest(tar, members, root, dst, src)  # before anything is written
            seen = set()
            for m in members:
                p = _safe_rel(m.name, root)
                if m is mans[0] or m.isdir():
                    continue
                if not m.isfile():
                    raise ATFRError(f"archive member {m.name!r} is a link or device, not a file; refusing to unpack")
                rel = PurePosixPath(*p.parts[1:]).as_posix()
                want = files.get(rel)
                if want is None:
                    raise ATFRError(f"archive member {m.name!r} is not listed in {PACK_MANIFEST}; refusing to unpack")
                if rel in seen:
                    raise ATFRError(f"archive member {m.name!r} appears twice; refusing to unpack")
                seen.add(rel)
                out = work.joinpath(*p.parts[1:])
                out.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                fh = tar.extractfile(m)
                with open(out, "wb") as f:
                    for block in iter(lambda: fh.read(1 << 20), b""):  # type: ignore[union-attr]
                        h.update(block)
                        n += len(block)
                        f.write(block)
                if n != int(want["size"]) or h.hexdigest() != want["sha256"]:
                    raise ATFRError(f"{src}: {rel} does not match its checksum (corrupt or altered archive)")
            missing = sorted(set(files) - seen)
            if missing:
                raise ATFRError(f"{src}: {len(missing)} listed file(s) missing from the archive, e.g. {missing[0]}")
        try:
            load_manifest(work, check=True)
        except ATFRError as e:  # name the archive, not the private work folder
            raise type(e)(f"{src}: {str(e).replace(str(work), root)}") from None
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            os.replace(dst, old / "x")
            os.replace(work, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, dst)
    except tarfile.TarError as e:
        raise ATFRError(f"{src}: damaged archive ({e})") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dst
