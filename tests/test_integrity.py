"""Integrity: a checkpoint with flipped bytes, a re-zipped checkpoint with edited weights and a
hand-edited atfr.json are refused with one line (exit 2); older files without the hashes load."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import one_line_error as _one_line_error, run_cli as _run

torch = pytest.importorskip("torch")

ASSET = Path(__file__).resolve().parents[1] / "atfr" / "assets" / "demo_atfr.pt"


def flip_bytes_in_record(src: Path, dst: Path, n: int = 64) -> str:
    """Copy ``src`` with ``n`` bytes inverted in the middle of its largest tensor record (the zip
    structure stays valid: only the record's data changes, as with a bad disk or transfer)."""
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size > 2 * n
    data = bytearray(src.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - n // 2
    for k in range(start, start + n):
        data[k] ^= 0xFF
    dst.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("which", ["ours", "official"])
def test_flipped_bytes_inside_a_tensor_are_refused(capsys, tmp_path, tiny_checkpoint, golden, which):
    src = tiny_checkpoint if which == "ours" else golden / "r3d18_atfr" / "checkpoint.pyth"
    bad = tmp_path / f"flipped{src.suffix}"
    record = flip_bytes_in_record(src, bad)
    for cmd in ("info", "export", "convert"):
        extra = {"export": ["-o", tmp_path / "exp"], "convert": ["-o", tmp_path / "c.pt"]}.get(cmd, [])
        rc, out, err = _run(capsys, cmd, bad, *extra)
        line = _one_line_error(rc, err, match="fails its CRC check")
        assert str(bad) in line and record in line and out == ""
    assert not (tmp_path / "exp").exists() and not (tmp_path / "c.pt").exists()
    rc, _, _ = _run(capsys, "info", src)  # the original still loads
    assert rc == 0


def test_edited_weights_with_valid_zip_are_caught_by_the_state_hash(capsys, tmp_path, tiny_checkpoint):
    """Weights changed and re-saved with torch.save (so every CRC is valid) but the recorded
    state_sha256 kept: the content hash catches it."""
    from atfr.models.checkpoint import HASH_KEY, state_sha256

    d = torch.load(tiny_checkpoint, weights_only=True)
    assert d[HASH_KEY] == state_sha256(d["model_state"])
    key = next(k for k, v in d["model_state"].items() if v.dtype == torch.float32 and v.numel() > 16)
    d["model_state"][key].view(-1)[7] += 0.5
    bad = tmp_path / "edited.pt"
    torch.save(d, bad)
    assert zipfile.ZipFile(bad).testzip() is None  # a valid archive
    rc, _, err = _run(capsys, "info", bad)
    _one_line_error(rc, err, match=f"do not match the {HASH_KEY}")


def test_state_hash_covers_dtype_shape_and_names():
    from atfr.models.checkpoint import state_sha256

    a = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    base = state_sha256(a)
    assert base == state_sha256({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).clone()})
    assert base != state_sha256({"w": a["w"].reshape(3, 2)})  # same bytes, other shape
    assert base != state_sha256({"v": a["w"]})
    assert base != state_sha256({"w": a["w"].view(torch.int32)})  # same bytes, other dtype
    assert state_sha256({"b": torch.zeros(0), "h": torch.ones(2, dtype=torch.bfloat16)})  # any dtype hashes


def test_checkpoint_without_hash_loads_and_says_so_only_at_v(capsys, tmp_path, tiny_checkpoint):
    from atfr.models.checkpoint import HASH_KEY

    d = torch.load(tiny_checkpoint, weights_only=True)
    del d[HASH_KEY]
    old = tmp_path / "old.pt"
    torch.save(d, old)
    rc, out, err = _run(capsys, "info", old)
    assert rc == 0 and err == "" and "parameters" in out
    for argv in (["-v", "info", old], ["info", old, "-v"]):
        rc, out, err = _run(capsys, *argv)
        assert rc == 0 and f"has no {HASH_KEY}" in err and len(err.strip().splitlines()) == 1, err


def test_demo_asset_carries_a_matching_hash():
    """The committed demo model was re-saved with state_sha256 (weights bit-identical: the hash
    was computed from the file's own state dict, nothing else was touched)."""
    from atfr.models.checkpoint import HASH_KEY, load_checkpoint, state_sha256

    d = torch.load(ASSET, weights_only=True)
    assert d[HASH_KEY] == state_sha256(d["model_state"])
    assert load_checkpoint(ASSET).source_format == "atfr"


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refused_plain_pickle_is_one_line_without_torch_warnings(tmp_path):
    """A plain pickle (protocol 4) makes torch warn in three lines before refusing it; the user
    sees only the refusal. A fresh process: pytest would otherwise swallow the warning."""
    import pickle

    f = tmp_path / "evil.pyth"
    with open(f, "wb") as fh:
        pickle.dump({"model_state": {}, "x": Evil()}, fh, protocol=4)
    p = subprocess.run([sys.executable, "-m", "atfr.cli", "info", str(f)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"atfr info: error: {f}: checkpoint holds objects that are unsafe "
                                             "to unpickle (only tensors and plain containers are loaded)"]
    assert "this must never run" not in p.stdout


# -- the manifest ----------------------------------------------------------------------------------
@pytest.fixture()
def export_copy(tiny_export, tmp_path) -> Path:
    d = tmp_path / "exp"
    shutil.copytree(tiny_export, d)
    return d


def _clip(tmp_path) -> Path:
    f = tmp_path / "clip.npy"
    np.save(f, np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    return f


def test_hand_edited_manifest_is_refused(capsys, tmp_path, export_copy):
    from atfr.runtime.manifest import CHECKSUM_KEY

    mpath = export_copy / "atfr.json"
    d = json.loads(mpath.read_text())
    assert CHECKSUM_KEY in d
    d["input"]["crop_size"] = 48  # the graphs were exported at 32
    mpath.write_text(json.dumps(d, indent=2))
    clip = _clip(tmp_path)
    for argv in (["infer", export_copy, "--input", clip], ["verify", export_copy, "--clips", "1"],
                 ["predict", export_copy, clip]):
        rc, out, err = _run(capsys, *argv)
        line = _one_line_error(rc, err, match="atfr.json was edited after export")
        assert f"delete the {CHECKSUM_KEY} field" in line and out == ""
    # The documented escape hatch: without the field the manifest is used as edited (and the
    # shape mismatch is then ONNX Runtime's error, still one line).
    del d[CHECKSUM_KEY]
    mpath.write_text(json.dumps(d, indent=2))
    rc, _, err = _run(capsys, "infer", export_copy, "--input", clip)
    assert rc != 0 and len(err.strip().splitlines()) == 1, err


def test_whitespace_and_key_order_are_not_edits(capsys, tmp_path, export_copy):
    mpath = export_copy / "atfr.json"
    d = json.loads(mpath.read_text())
    mpath.write_text(json.dumps(dict(reversed(list(d.items()))), separators=(",", ":")))
    rc, out, err = _run(capsys, "infer", export_copy, "--input", _clip(tmp_path))
    assert rc == 0, err


def test_manifest_without_checksum_still_loads(capsys, tmp_path, export_copy):
    from atfr.runtime.manifest import CHECKSUM_KEY, load_manifest

    mpath = export_copy / "atfr.json"
    d = json.loads(mpath.read_text())
    del d[CHECKSUM_KEY]
    mpath.write_text(json.dumps(d, indent=2))
    assert load_manifest(export_copy, check=True).name == "tiny"
    rc, out, err = _run(capsys, "infer", export_copy, "--input", _clip(tmp_path), "--json")
    assert rc == 0 and json.loads(out)["bprime"], err


def test_manifest_writers_keep_it_valid(export_copy):
    """Registering and removing graphs (fp16, calibrate) rewrite the checksum with the content."""
    from atfr.export.precision import register_graphs, unregister_graphs
    from atfr.runtime.manifest import CHECKSUM_KEY, load_manifest, manifest_digest

    shutil.copy(export_copy / "back.onnx", export_copy / "back_copy.onnx")
    register_graphs(export_copy, {"back_copy": export_copy / "back_copy.onnx"}, {"note": {"x": 1}})
    d = json.loads((export_copy / "atfr.json").read_text())
    assert "back_copy" in d["graphs"] and d[CHECKSUM_KEY] == manifest_digest(d)
    assert "back_copy" in load_manifest(export_copy, check=True).graphs
    unregister_graphs(export_copy, ["back_copy"])
    assert "back_copy" not in load_manifest(export_copy, check=True).graphs
