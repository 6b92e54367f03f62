"""The export-here / run-there workflow end to end, ONNX Runtime standing in for TensorRT:
export (torch) -> atfr pack -> atfr unpack elsewhere -> atfr doctor -> atfr run on a video file, the
device side in subprocesses where importing torch fails. Plus the archive's safety checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from atfr.errors import ATFRError
from atfr.runtime.archive import pack, unpack
from footage import real_video

ROOT = Path(__file__).resolve().parents[1]


def device_env(tmp: Path) -> dict[str, str]:
    """The environment of a device without torch: importing it raises."""
    stub = tmp / "no-torch"
    (stub / "torch").mkdir(parents=True, exist_ok=True)
    (stub / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed on the device')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(stub), os.environ.get("PYTHONPATH", "")])}


def atfr(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "atfr.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _events(p: Path) -> list[dict]:
    return [json.loads(ln) for ln in p.read_text().splitlines()]


def test_export_pack_unpack_doctor_run(tiny_export, tmp_path):
    video = real_video("carphone")  # 120 frames, 176x144, H.264
    workstation, device = tmp_path / "ws", tmp_path / "device"
    workstation.mkdir()
    device.mkdir()
    archive = workstation / "tiny.tar.gz"
    p = atfr("pack", str(tiny_export), "-o", str(archive))
    assert p.returncode == 0, p.stderr
    assert "sha256 of each in atfr-pack.json" in p.stdout
    # Same command again: no overwrite without --force.
    p = atfr("pack", str(tiny_export), "-o", str(archive))
    assert p.returncode == 2 and "--force" in p.stderr

    env = device_env(tmp_path)
    out = device / "tiny"
    p = atfr("unpack", str(archive), "-o", str(out), env=env, cwd=device)
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in out.iterdir()) == sorted(f.name for f in tiny_export.iterdir())
    p = atfr("doctor", str(out), "--backend", "onnxruntime", "--source", str(video), "--json", env=env, cwd=device)
    assert p.returncode == 0, p.stdout + p.stderr
    checks = {c["name"]: c for c in json.loads(p.stdout)["checks"]}
    assert checks["export"]["status"] == "ok" and "checksums match" in checks["export"]["detail"]
    assert checks["torch"]["status"] == "warn"  # the stub: torch fails to import there, and run must not care

    ev_dev, ev_ws = device / "ev.jsonl", workstation / "ev.jsonl"
    p = atfr("run", str(out), "--source", str(video), "--backend", "onnxruntime", "--fast", "--stride", "16",
             "--jsonl", str(ev_dev), env=env, cwd=device)
    assert p.returncode == 0, p.stderr
    # The same run on the original export (workstation): identical clips, top-k and B' (same graphs,
    # same ONNX Runtime, same machine: the results are bit-identical).
    p = atfr("run", str(tiny_export), "--source", str(video), "--backend", "onnxruntime", "--fast", "--stride", "16",
             "--jsonl", str(ev_ws))
    assert p.returncode == 0, p.stderr
    dev, ws = _events(ev_dev), _events(ev_ws)
    assert len(dev) == len(ws) >= 5  # (120 - clip window) / 16 + 1 clips
    for a, b in zip(dev, ws):
        assert (a["frame"], a["bprime"], a["topk"]) == (b["frame"], b["bprime"], b["topk"])


# -- archive safety -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def packed(tiny_export, tmp_path_factory) -> Path:
    a = tmp_path_factory.mktemp("pack") / "tiny.tar"
    pack(tiny_export, a)
    return a


def _members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(archive) as t:
        return [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]


def _write(path: Path, members) -> Path:
    with tarfile.open(path, "w") as t:
        for m, data in members:
            if data is not None:
                m.size = len(data)
            t.addfile(m, io.BytesIO(data) if data is not None else None)
    return path


def test_unpack_round_trip_and_force(packed, tiny_export, tmp_path):
    out = unpack(packed, tmp_path / "x")
    for f in tiny_export.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes()
    with pytest.raises(ATFRError, match="--force"):
        unpack(packed, out)
    (out / "stale.txt").write_text("old")
    unpack(packed, out, force=True)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x"]  # no temporary folders left


def test_tampered_file_is_refused_and_nothing_written(packed, tmp_path):
    ms = _members(packed)
    i = next(k for k, (m, d) in enumerate(ms) if m.name.endswith(".onnx"))
    m, d = ms[i]
    ms[i] = (m, d[:-1] + bytes([d[-1] ^ 1]))  # one bit flipped, same size
    bad = _write(tmp_path / "bad.tar", ms)
    with pytest.raises(ATFRError, match="does not match its checksum"):
        unpack(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]


@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/evil.txt", "tiny/../../evil.txt", "other/evil.txt"])
def test_path_traversal_is_refused(packed, tmp_path, evil):
    ms = _members(packed)
    root = PurePosix(ms[0][0].name)
    ti = tarfile.TarInfo(evil.replace("tiny", root))
    bad = _write(tmp_path / "bad.tar", ms + [(ti, b"pwned")])
    with pytest.raises(ATFRError, match="refusing to unpack"):
        unpack(bad, tmp_path / "d" / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "d" / "out").exists()


def test_listed_traversal_and_links_are_refused(packed, tmp_path):
    ms = _members(packed)
    root = PurePosix(ms[0][0].name)
    man = json.loads(ms[0][1])
    man["files"]["../evil.txt"] = {"size": 1, "sha256": "0" * 64}
    bad = _write(tmp_path / "bad.tar", [(ms[0][0], json.dumps(man).encode())] + ms[1:])
    with pytest.raises(ATFRError, match="outside"):
        unpack(bad, tmp_path / "out")
    link = tarfile.TarInfo(f"{root}/link.onnx")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad = _write(tmp_path / "bad2.tar", ms + [(link, None)])
    with pytest.raises(ATFRError, match="link or device"):
        unpack(bad, tmp_path / "out")


def test_missing_and_unlisted_files_are_refused(packed, tmp_path):
    ms = _members(packed)
    with pytest.raises(ATFRError, match="missing from the archive"):
        unpack(_write(tmp_path / "a.tar", ms[:-1]), tmp_path / "out")
    extra = tarfile.TarInfo(f"{PurePosix(ms[0][0].name)}/extra.bin")
    with pytest.raises(ATFRError, match="not listed"):
        unpack(_write(tmp_path / "b.tar", ms + [(extra, b"x")]), tmp_path / "out")
    (tmp_path / "c.tar").write_bytes(b"not a tar at all" * 10)
    with pytest.raises(ATFRError, match="not a tar archive"):
        unpack(tmp_path / "c.tar", tmp_path / "out")


def test_pack_refuses_a_corrupt_export(tiny_export, tmp_path):
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(tiny_export, copy)
    g = next(copy.glob("*.onnx"))
    g.write_bytes(g.read_bytes() + b"\0")
    with pytest.raises(ATFRError):
        pack(copy, tmp_path / "x.tar")
    assert not (tmp_path / "x.tar").exists()
    with pytest.raises(ATFRError, match="unsupported archive name"):
        pack(tiny_export, tmp_path / "x.zip")


def PurePosix(name: str) -> str:
    """The archive's top-level folder name."""
    return name.split("/", 1)[0]
