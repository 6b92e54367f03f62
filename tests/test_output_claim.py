"""Two commands writing the same output: one proceeds, the other exits 2 (never both); work folders
of a killed export/unpack are recognised by their dead PID and removed by the next command writing
there, and unnamed ones (earlier versions) with --force (issue 22, deliverable 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import one_line_error, run_cli

from atfr.errors import ATFRError

pytest.importorskip("fcntl")

HOLD = ("import sys; from atfr.output_claim import output_lock\n"
        "with output_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.read()\n")
KILLED = ("import os, signal, sys; from pathlib import Path; from atfr.output_claim import work_dir\n"
          "d = work_dir(Path(sys.argv[1]), sys.argv[2]); (d / 'partial.onnx').write_bytes(b'x' * 1000)\n"
          "print(d, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")


@pytest.fixture
def archive(tiny_export, tmp_path) -> Path:
    from atfr.runtime.archive import pack

    return pack(tiny_export, tmp_path / "x.tar").path


def _holder(dest: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(dest)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_writer_of_the_same_output_exits_2(capsys, tmp_path, archive, tiny_checkpoint):
    dest = tmp_path / "dest"
    p = _holder(dest)  # another atfr process is writing dest
    try:
        for argv in (["unpack", archive, "-o", dest], ["export", tiny_checkpoint, "-o", dest]):
            rc, out, err = run_cli(capsys, *argv)
            line = one_line_error(rc, err, 2, "is being written by another atfr process")
            assert f"(PID {p.pid})" in line and out == ""
        assert not dest.exists()
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    rc, out, err = run_cli(capsys, "unpack", archive, "-o", dest)  # the claim ended with its process
    assert rc == 0, err
    assert not list(tmp_path.glob(".dest.atfr-lock*"))  # and the lock file is gone


def test_claim_is_reentrant_and_released(tmp_path):
    from atfr.output_claim import lock_path, output_lock

    dest = tmp_path / "a" / "b" / "o"
    with output_lock(dest):
        with output_lock(dest):  # the command and the library function it calls
            assert lock_path(dest).exists()
    assert not lock_path(dest).exists()
    assert not (tmp_path / "a").exists()  # folders made only for the lock are gone when left empty


def _killed_work_dir(parent: Path, base: str) -> Path:
    r = subprocess.run([sys.executable, "-c", KILLED, str(parent), base], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    d = Path(r.stdout.strip())
    assert d.is_dir() and d.parent == parent
    return d


def test_work_folders_of_killed_processes_are_removed(capsys, tmp_path, archive):
    from atfr.output_claim import _host

    left = [_killed_work_dir(tmp_path, ".dest.unpack-"), _killed_work_dir(tmp_path, ".dest.old-")]
    legacy = tmp_path / ".dest.unpack-k3j9x_2a"  # an earlier version's name: no PID to judge by
    legacy.mkdir()
    alive = tmp_path / f".dest.unpack-{os.getpid()}@{_host()}-running1"  # a process still running
    alive.mkdir()
    rc, out, err = run_cli(capsys, "unpack", archive, "-o", tmp_path / "dest")
    assert rc == 0, err
    assert not any(d.exists() for d in left) and legacy.is_dir() and alive.is_dir()
    rc, out, err = run_cli(capsys, "unpack", archive, "-o", tmp_path / "dest", "--force")
    assert rc == 0, err
    assert not legacy.exists() and alive.is_dir()  # --force: the unnamed ones too; never a live one


def test_export_removes_its_killed_work_folder(capsys, tmp_path, tiny_checkpoint):
    left = _killed_work_dir(tmp_path, ".atfr-export-")
    rc, out, err = run_cli(capsys, "export", tiny_checkpoint, "-o", tmp_path / "exp")
    assert rc == 0, err
    assert not left.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_two_unpacks_started_together_one_wins(tmp_path, archive):
    """The issue's scenario with real processes: never both exit 0 (the loser says either that the
    folder is being written or that it already exists, whichever it reaches first)."""
    dest = tmp_path / "dest"
    cmd = [sys.executable, "-m", "atfr.cli", "unpack", str(archive), "-o", str(dest)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    res = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in res) == [0, 2], res
    loser = next(err for rc, err in res if rc == 2)
    assert len(loser.strip().splitlines()) == 1
    assert "being written by another atfr process" in loser or "already exists" in loser
    from atfr.runtime.manifest import load_manifest

    load_manifest(dest, check=True)


def test_calibrate_while_the_export_is_being_written_exits_2(capsys, tmp_path, tiny_export):
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    p = _holder(exp)  # e.g. an 'atfr export --force' or another calibrate on the same folder
    try:
        rc, out, err = run_cli(capsys, "calibrate", exp, "--data", tmp_path)
        one_line_error(rc, err, 2, "is being written by another atfr process")
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert sorted(x.name for x in exp.iterdir()) == sorted(x.name for x in tiny_export.iterdir())


def test_adafuse_export_shares_the_export_folder_rules(tmp_path, monkeypatch):
    """Both model families write through export/folder.py: an AdaFuse export also removes the work
    folder of a killed export before its own work, and stages in a folder named for its process."""
    from adafuse_helpers import load_ref, write_official

    from atfr.export import adafuse_export
    from atfr.export.exporter import ExportOptions
    from atfr.models.checkpoint import load_checkpoint

    ckpt, flags = write_official(tmp_path, load_ref("tsn_r18"))
    left = _killed_work_dir(tmp_path, ".atfr-export-")
    seen = []

    def stop(*a, **k):  # the first graph: record the work folders there are now, then stop
        seen.extend(p.name for p in tmp_path.iterdir() if p.name.startswith(".atfr-export-"))
        raise RuntimeError("stop here")

    monkeypatch.setattr(adafuse_export, "_onnx_export", stop)
    with pytest.raises(RuntimeError, match="stop here"):
        adafuse_export.export_adafuse(load_checkpoint(ckpt, flags), tmp_path / "exp", ExportOptions())
    assert not left.exists() and seen == []  # removed before tracing; none made yet
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "model.onnx").write_bytes(b"x")
    with pytest.raises(ATFRError, match="pass --force"):
        adafuse_export.export_adafuse(load_checkpoint(ckpt, flags), tmp_path / "exp", ExportOptions())
