"""``atfr unpack`` streams within limits (issue 22, S3): a member bigger than listed is refused
having written at most listed + 1 bytes, the listed total is checked against free space first,
sparse members are refused, and the export folder gets the umask's mode (not mkdtemp's 0700)."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from cli_helpers import one_line_error, run_cli

import atfr.runtime.archive as archive_mod


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entries(folder: Path) -> dict[str, dict]:
    return {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha(p.read_bytes())}
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "atfr-pack.json"}


def _pack_json(root: str, entries: dict) -> bytes:
    return json.dumps({"format": "atfr-pack", "version": 1, "root": root, "files": entries}).encode()


@pytest.fixture
def counted_writes(monkeypatch) -> dict[str, int]:
    """Bytes written through every file unpack opens (archive.py's ``open``)."""
    written: dict[str, int] = {}

    class Counting:
        def __init__(self, f, name):
            self.f, self.name = f, name

        def write(self, b):
            written[self.name] = written.get(self.name, 0) + len(b)
            return self.f.write(b)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return Counting(f, Path(path).name) if "w" in mode or "x" in mode else f

    monkeypatch.setattr(archive_mod, "open", fake_open, raising=False)
    return written


def test_member_bigger_than_listed_stops_at_listed_plus_one(capsys, tmp_path, tiny_export, counted_writes):
    big = os.urandom(1 << 20)
    entries = _entries(tiny_export)
    entries["extra.bin"] = {"size": 10, "sha256": _sha(big[:10])}  # listed 10 bytes, 1 MB in the tar
    arc = tmp_path / "liar.tar"
    with tarfile.open(arc, "w") as tar:
        man = _pack_json("export", entries)
        ti = tarfile.TarInfo("export/atfr-pack.json")
        ti.size = len(man)
        tar.addfile(ti, io.BytesIO(man))
        for p in sorted(tiny_export.iterdir()):
            tar.add(p, arcname=f"export/{p.name}")
        ti = tarfile.TarInfo("export/extra.bin")
        ti.size = len(big)
        tar.addfile(ti, io.BytesIO(big))
    rc, out, err = run_cli(capsys, "unpack", arc, "-o", tmp_path / "dest")
    one_line_error(rc, err, 2, "extra.bin")
    assert counted_writes.get("extra.bin", 0) <= 11, counted_writes
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest.*"))


def test_copy_stops_one_byte_past_the_limit(tmp_path):
    """The streaming bound itself, for a stream that yields more than its header said."""
    n, _ = archive_mod._copy_capped(io.BytesIO(b"x" * (1 << 20)), tmp_path / "o", 10)
    assert n == 11 and (tmp_path / "o").stat().st_size == 11


def test_listed_total_beyond_free_space_is_refused_before_writing(capsys, monkeypatch, tmp_path, tiny_export,
                                                                  counted_writes):
    from atfr.runtime.archive import pack

    arc = pack(tiny_export, tmp_path / "x.tar").path
    total = sum(e["size"] for e in _entries(tiny_export).values())
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=total // 2))
    rc, out, err = run_cli(capsys, "unpack", arc, "-o", tmp_path / "dest")
    one_line_error(rc, err, 2, "MB free")
    assert counted_writes == {}
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".dest.*"))


def test_sparse_member_is_refused(capsys, tmp_path, tiny_export):
    if not shutil.which("tar"):
        pytest.skip("GNU tar not installed (needed to write a sparse member)")
    src = tmp_path / "src" / "export"
    shutil.copytree(tiny_export, src)
    with open(src / "holes.bin", "wb") as f:  # 4 MB, all of it a hole but the last byte
        f.seek((4 << 20) - 1)
        f.write(b"\0")
    (src / "atfr-pack.json").write_bytes(_pack_json("export", _entries(src)))
    arc = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(arc), "-C", str(src.parent), "export"], check=True)
    with tarfile.open(arc) as t:
        if not any(m.issparse() for m in t.getmembers()):
            pytest.skip("this file system or tar wrote no sparse member")
    rc, out, err = run_cli(capsys, "unpack", arc, "-o", tmp_path / "dest")
    one_line_error(rc, err, 2, "sparse")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o027, 0o750)])
def test_unpacked_folder_honours_the_umask(capsys, tmp_path, tiny_export, umask, mode):
    from atfr.runtime.archive import pack

    arc = pack(tiny_export, tmp_path / "x.tar").path
    old = os.umask(umask)
    try:
        rc, out, err = run_cli(capsys, "unpack", arc, "-o", tmp_path / "dest")
    finally:
        os.umask(old)
    assert rc == 0, err
    assert (tmp_path / "dest").stat().st_mode & 0o777 == mode
    assert (tmp_path / "dest" / "atfr.json").stat().st_mode & 0o777 == 0o666 & ~umask
