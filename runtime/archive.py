"""One-file export artifacts: ``atfr pack`` on the workstation, ``atfr unpack`` on the device. Torch-free.

The archive is a plain tar (``.tar``, or gzip-compressed ``.tar.gz``/``.tgz``) holding the export
folder under one top-level name plus ``atfr-pack.json``: every file's size and sha256. Unpacking
reads only regular files and folders whose names stay inside that top-level folder (no absolute
paths, no '..', no links, devices or sparse members), extracts into a temporary folder next to
the destination, checks every size and checksum against the pack manifest and the export's own
graph checksums (and the export folder's path rule, runtime/export_paths.py), and only then renames
it into place: a corrupt or hostile archive leaves nothing behind. Before a byte is written, every
member's tar size must equal its listed size and the listed total must fit in the free space;
while writing, no member gets past its listed size + 1 byte. The destination is claimed for the
whole command (atfr/output_claim.py): a second writer exits 2, and work folders of killed runs
are removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from atfr.errors import ATFRError
from atfr.fileio import atomic_path, check_output_dir, check_writable, sha256_file
from atfr.output_claim import output_lock, remove_stale, work_dir

PACK_MANIFEST = "atfr-pack.json"
PACK_FORMAT = "atfr-pack"
PACK_VERSION = 1
_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz"}
MAX_MANIFEST = 64 << 20  # bytes: atfr-pack.json and atfr.json are a few KB (pack: per thousand files)
SPACE_SLACK = 1 << 20  # bytes: folder entries and file-system rounding beyond the listed sizes


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
    if m is None or m.size > MAX_MANIFEST:
        return  # missing or absurd: the full check after extraction reports it
    try:
        d = json.loads(tar.extractfile(m).read().decode("utf-8"))  # type: ignore[union-attr]
    except (ValueError, AttributeError):
        return
    if isinstance(d, dict):
        check_manifest_paths(dst, d, label=f"{src}: {root}")


@dataclass
class _Plan:
    root: str
    members: list[tuple[tarfile.TarInfo, str, dict]]  # (member, path under root, its pack entry)
    total: int  # listed bytes


def _plan(tar: tarfile.TarFile, src: Path, dst: Path) -> _Plan:
    """Everything checked from the headers and the pack manifest alone, before a byte is written."""
    members = tar.getmembers()
    mans = [m for m in members if PurePosixPath(m.name).name == PACK_MANIFEST
            and len(PurePosixPath(m.name).parts) == 2]
    if len(mans) != 1 or not mans[0].isfile() or mans[0].size > MAX_MANIFEST:
        raise ATFRError(f"{src}: not an atfr pack (no {PACK_MANIFEST}); create one with 'atfr pack'")
    try:
        man = json.loads(tar.extractfile(mans[0]).read().decode("utf-8"))  # type: ignore[union-attr]
        root, files = str(man["root"]), dict(man["files"])
        sizes = {rel: int(e["size"]) for rel, e in files.items()}
        if not all(isinstance(e["sha256"], str) for e in files.values()):
            raise TypeError("sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ATFRError(f"{src}: corrupt {PACK_MANIFEST} ({type(e).__name__})") from None
    if man.get("format") != PACK_FORMAT or int(man.get("version", 0)) > PACK_VERSION:
        raise ATFRError(f"{src}: unsupported pack format/version")
    _safe_rel(root, None)
    for rel in files:
        _safe_rel(f"{root}/{rel}", root)
        if sizes[rel] < 0:
            raise ATFRError(f"{src}: corrupt {PACK_MANIFEST} (negative size for {rel})")
    _check_export_manifest(tar, members, root, dst, src)
    plan, seen = _Plan(root, [], sum(sizes.values())), set()
    for m in members:
        p = _safe_rel(m.name, root)
        if m is mans[0] or m.isdir():
            continue
        if m.issparse():  # its data would be made of holes the listed size does not bound
            raise ATFRError(f"archive member {m.name!r} is a sparse file; refusing to unpack")
        if not m.isfile():
            raise ATFRError(f"archive member {m.name!r} is a link or device, not a file; refusing to unpack")
        rel = PurePosixPath(*p.parts[1:]).as_posix()
        if rel not in files:
            raise ATFRError(f"archive member {m.name!r} is not listed in {PACK_MANIFEST}; refusing to unpack")
        if rel in seen:
            raise ATFRError(f"archive member {m.name!r} appears twice; refusing to unpack")
        if m.size != sizes[rel]:
            raise ATFRError(f"{src}: {rel} is {m.size} bytes in the archive but listed as {sizes[rel]} "
                            "(corrupt or altered archive)")
        seen.add(rel)
        plan.members.append((m, rel, files[rel]))
    missing = sorted(set(files) - seen)
    if missing:
        raise ATFRError(f"{src}: {len(missing)} listed file(s) missing from the archive, e.g. {missing[0]}")
    return plan


def _copy_capped(fh, out: Path, limit: int) -> tuple[int, str]:
    """Copy at most ``limit`` + 1 bytes of ``fh`` to ``out``: (bytes, sha256). One byte past the
    listed size is enough to know the member lies, so no more is ever written."""
    h, n = hashlib.sha256(), 0
    with open(out, "xb") as f:
        while n <= limit:
            block = fh.read(min(1 << 20, limit + 1 - n))
            if not block:
                break
            h.update(block)
            n += len(block)
            f.write(block)
    return n, h.hexdigest()


def _extract(tar: tarfile.TarFile, plan: _Plan, work: Path, src: Path) -> None:
    for m, rel, want in plan.members:
        out = work.joinpath(*PurePosixPath(rel).parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        n, digest = _copy_capped(tar.extractfile(m), out, int(want["size"]))
        if n != int(want["size"]) or digest != want["sha256"]:
            out.unlink()
            raise ATFRError(f"{src}: {rel} does not match its checksum (corrupt or altered archive)")


def _check_space(folder: Path, total: int, src: Path) -> None:
    free = shutil.disk_usage(folder).free
    if total + SPACE_SLACK > free:
        raise ATFRError(f"{src}: unpacking needs {total / 1e6:.1f} MB in {folder}, {free / 1e6:.1f} MB free")


def unpack(archive: str | os.PathLike, dest: str | os.PathLike, force: bool = False) -> Path:
    """Extract and verify ``archive`` into the folder ``dest`` (the export folder itself)."""
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
    with tar, output_lock(dst):
        if dst.exists() and not force:  # again, now that no other atfr process can be writing it
            raise ATFRError(f"{dst} already exists; pass --force to overwrite it")
        for base in (f".{dst.name}.unpack-", f".{dst.name}.old-"):
            remove_stale(dst.parent, base, force)
        try:
            plan = _plan(tar, src, dst)
            _check_space(dst.parent, plan.total, src)
            work = work_dir(dst.parent, f".{dst.name}.unpack-")
            try:
                _extract(tar, plan, work, src)
                _verify_and_place(work, dst, plan.root, src)
            finally:
                if work.exists():
                    shutil.rmtree(work, ignore_errors=True)
        except tarfile.TarError as e:
            raise ATFRError(f"{src}: damaged archive ({e})") from None
    return dst


def _verify_and_place(work: Path, dst: Path, root: str, src: Path) -> None:
    from atfr.runtime.manifest import load_manifest  # noqa: PLC0415

    try:
        load_manifest(work, check=True)
    except ATFRError as e:  # name the archive, not the private work folder
        raise type(e)(f"{src}: {str(e).replace(str(work), root)}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)  # mkdtemp made it 0700: the folder gets a plain mkdir's mode
    if dst.exists():
        old = work_dir(dst.parent, f".{dst.name}.old-")
        os.replace(dst, old / "x")
        os.replace(work, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, dst)
