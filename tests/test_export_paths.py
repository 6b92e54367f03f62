"""The export folder is a trust boundary (issue 22, S1): a path from ``atfr.json`` (a graph file, a
checksums key), a symbolic link inside the folder, or the model name used as a folder name, never
makes a command read or write outside the folder. Each hostile folder below is driven through every
command that reads an export: one stderr line, exit 2, nothing read or written outside."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import one_line_error, run_cli

RULE = "refusing to use this export folder"
KINDS = ["absolute", "dotdot", "symlink", "checksum_key", "model_name"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def make_hostile(tiny_export: Path, base: Path, kind: str) -> tuple[Path, Path]:
    """A copy of the tiny export edited the way a stranger could (``manifest_sha256`` deleted, as
    the README allows, or recomputed: it is no signature). Returns (folder, the outside folder)."""
    from atfr.runtime.manifest import write_manifest

    d, outside = base / "exp", base / "outside"
    shutil.copytree(tiny_export, d)
    outside.mkdir()
    mpath = d / "atfr.json"
    m = json.loads(mpath.read_text())
    if kind == "absolute":  # a real ONNX graph outside: the old code ran it with exit 0
        shutil.copy(d / "back.onnx", outside / "back.onnx")
        m["graphs"]["back"]["file"] = str(outside / "back.onnx")
    elif kind == "dotdot":
        shutil.copy(d / "back.onnx", outside / "back.onnx")
        m["graphs"]["back"]["file"] = "../outside/back.onnx"
    elif kind == "symlink":  # manifest untouched (still sealed): the link itself leaves the folder
        (d / "back.onnx").rename(outside / "back.onnx")
        (d / "back.onnx").symlink_to(outside / "back.onnx")
    elif kind == "checksum_key":  # an outside file with its true hash: the old code read it
        secret = outside / "secret.txt"
        secret.write_text("not yours\n")
        m["checksums"][str(secret)] = _sha(secret)
    elif kind == "model_name":  # the name becomes a folder in triton-repo
        m["model"]["name"] = "../outside/evil"
    if kind != "symlink":
        if kind == "model_name":
            write_manifest(mpath, m)  # a recomputed seal is no defence either
        else:
            m.pop("manifest_sha256")
            mpath.write_text(json.dumps(m))
    return d, outside


def tar_of(folder: Path, archive: Path) -> Path:
    """An atfr-pack archive of ``folder`` written by hand (``atfr pack`` refuses hostile folders)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    entries = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha(p)} for p in files}
    man = json.dumps({"format": "atfr-pack", "version": 1, "root": folder.name, "files": entries}).encode()
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(f"{folder.name}/atfr-pack.json")
        info.size = len(man)
        tar.addfile(info, io.BytesIO(man))
        for p in files:
            tar.add(p, arcname=f"{folder.name}/{p.relative_to(folder).as_posix()}")
    return archive


def _video(path: Path) -> Path:
    import cv2

    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (32, 32))
    for i in range(10):
        wr.write(np.full((32, 32, 3), 20 * i, np.uint8))
    wr.release()
    return path


def _commands(d: Path, base: Path, ckpt: Path) -> list[list]:
    clip = base / "clip.npy"
    np.save(clip, np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    cmds = [["infer", d, "--input", clip], ["predict", d, clip],
            ["verify", d, "--checkpoint", ckpt, "--clips", "1", "--backend", "onnxruntime"],
            ["bench", d, "--warmup", "0", "--iters", "1", "--bprime", "1", "--out", base / "bench"],
            ["bench", d, "--throughput", "--out", base / "bench"],
            ["calibrate", d, "--data", base / "nothing"], ["build", d],
            ["triton-repo", d, "-o", base / "repo"], ["pack", d, "-o", base / "x.tar"], ["doctor", d],
            ["serve", d]]
    try:
        cmds.append(["run", d, "--source", _video(base / "v.avi")])
    except ImportError:
        pass
    return cmds


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_export_folder_is_refused_by_every_command(capsys, monkeypatch, tmp_path, tiny_export,
                                                           tiny_checkpoint, kind):
    import atfr.runtime.manifest as manifest_mod

    d, outside = make_hostile(tiny_export, tmp_path, kind)
    before = {p: p.read_bytes() for p in outside.rglob("*")}
    hashed: list[Path] = []  # every file the checksum step opens
    real_sha = manifest_mod.sha256_file
    monkeypatch.setattr(manifest_mod, "sha256_file", lambda p: hashed.append(Path(p)) or real_sha(p))
    for argv in _commands(d, tmp_path, tiny_checkpoint):
        rc, out, err = run_cli(capsys, *argv)
        line = one_line_error(rc, err, 2, RULE)
        assert str(d) in line, (argv[0], line)
    assert not any(Path(p).resolve().is_relative_to(outside.resolve()) for p in hashed), hashed
    # nothing was written outside, nor any output made from the folder
    assert {p: p.read_bytes() for p in outside.rglob("*")} == before
    assert not (tmp_path / "repo").exists() and not (tmp_path / "x.tar").exists()
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "checksum_key", "model_name"])
def test_hostile_archive_is_not_verified(capsys, tmp_path, tiny_export, kind):
    d, outside = make_hostile(tiny_export, tmp_path, kind)
    arc = tar_of(d, tmp_path / "hostile.tar")
    shutil.rmtree(d)
    dest = tmp_path / "dest"
    rc, out, err = run_cli(capsys, "unpack", arc, "-o", dest)
    line = one_line_error(rc, err, 2, RULE)
    assert str(arc) in line and "verified" not in out
    assert not dest.exists() and not list(tmp_path.glob(".dest.*"))


def test_symlink_inside_the_folder_is_fine(capsys, tmp_path, tiny_export):
    """A link that stays inside the folder is not a violation (the rule is where it resolves)."""
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    (d / "graphs").mkdir()
    (d / "back.onnx").rename(d / "graphs" / "back.onnx")
    (d / "back.onnx").symlink_to("graphs/back.onnx")
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((8, 32, 32, 3), np.uint8))
    rc, out, err = run_cli(capsys, "infer", d, "--input", clip)
    assert rc == 0, err


def test_verify_does_not_open_the_recorded_checkpoint(capsys, tmp_path, tiny_export, tiny_checkpoint):
    """``source.checkpoint`` is provenance: a manifest naming any file (a real checkpoint here; it
    could be /dev/zero, a read that never ends) does not make verify open it: --checkpoint is
    required, and the line says which checkpoint the export records."""
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    m = json.loads((d / "atfr.json").read_text())
    m.pop("manifest_sha256")
    m["source"]["checkpoint"] = str(tiny_checkpoint)
    (d / "atfr.json").write_text(json.dumps(m))
    rc, out, err = run_cli(capsys, "verify", d, "--clips", "1", "--backend", "onnxruntime")
    one_line_error(rc, err, 2, f"pass --checkpoint CKPT (the export was made from {tiny_checkpoint})")


def test_manifest_that_is_a_link_outside_is_refused_unread(capsys, monkeypatch, tmp_path, tiny_export):
    """atfr.json itself linked outside (it could be /dev/zero or a FIFO): refused, and never read,
    not even by the untrained-model check every command runs first."""
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    elsewhere = tmp_path / "elsewhere.json"
    (d / "atfr.json").rename(elsewhere)
    (d / "atfr.json").symlink_to(elsewhere)
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((8, 32, 32, 3), np.uint8))
    read: list[Path] = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self.resolve()) or real(self, *a, **k))
    rc, out, err = run_cli(capsys, "infer", d, "--input", clip)
    one_line_error(rc, err, 2, RULE)
    assert elsewhere.resolve() not in read


@pytest.mark.parametrize("rel,ok", [("front.onnx", True), ("sub/x.onnx", True), ("/etc/passwd", False),
                                    ("../x.onnx", False), ("a/../../x", False), ("C:\\x.onnx", False),
                                    ("a\\..\\x", False), ("", False), ("x\x00y", False)])
def test_inside_rule(tmp_path, rel, ok):
    from atfr.runtime.export_paths import UnsafeExportError, inside

    if ok:
        assert inside(tmp_path, rel) == tmp_path / rel
    else:
        with pytest.raises(UnsafeExportError):
            inside(tmp_path, rel)
    with pytest.raises(UnsafeExportError):
        inside(tmp_path, 3)


def test_bench_default_report_folder_linked_outside_is_refused(capsys, tmp_path, tiny_export):
    """``bench`` writes its report into OUTDIR/bench by default: a ``bench`` link planted in the
    folder must not send those files elsewhere."""
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (d / "bench").symlink_to(elsewhere)
    for extra in ([], ["--throughput"]):
        rc, out, err = run_cli(capsys, "bench", d, "--warmup", "0", "--iters", "1", "--bprime", "1", *extra)
        one_line_error(rc, err, 2, RULE)
    assert list(elsewhere.iterdir()) == []


def test_ort_trt_cache_linked_outside_is_refused(capsys, tmp_path, tiny_export):
    """ONNX Runtime's TensorRT EP writes engines into OUTDIR/ort_trt_cache: a link planted under
    that name is refused whatever the provider (the folder is hostile either way)."""
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (d / "ort_trt_cache").symlink_to(elsewhere)
    clip = tmp_path / "clip.npy"
    np.save(clip, np.zeros((8, 32, 32, 3), np.uint8))
    rc, out, err = run_cli(capsys, "infer", d, "--input", clip, "--backend", "onnxruntime")
    one_line_error(rc, err, 2, "the TensorRT EP cache 'ort_trt_cache'")
