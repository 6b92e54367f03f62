"""Quiet by default: library warnings and prints only at -v; progress on long work; readable
probabilities; the demo's suggested command works from any folder."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shlex
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import run_cli as _run


def _fake_command(monkeypatch, body):
    import atfr.commands.info as info

    monkeypatch.setattr(info, "run", lambda args: body() or 0)


def test_library_warnings_only_at_verbose_ours_always_one_line(capsys, monkeypatch):
    def body():
        # as torch/onnx/polygraphy would raise them (module = the library's)...
        warnings.warn_explicit("TracerWarning: converting a tensor to a Python boolean", UserWarning,
                               "/site-packages/torch/jit/_trace.py", 1200, module="torch.jit._trace")
        # ... and one of ours (calibration/data.py: "skipped N unreadable video(s)")
        warnings.warn_explicit("skipped 1 unreadable video(s), e.g. x.mp4\n(second line)", UserWarning,
                               "/repo/calibration/data.py", 104, module="atfr.calibration.data")
        print("result")

    _fake_command(monkeypatch, body)
    rc, out, err = _run(capsys, "info", "x")
    assert rc == 0 and out == "result\n"
    assert err.splitlines() == ["atfr info: warning: skipped 1 unreadable video(s), e.g. x.mp4"]
    for argv in (["-v", "info", "x"], ["--verbose", "info", "x"], ["info", "x", "-v"]):
        rc, out, err = _run(capsys, *argv)
        lines = err.splitlines()
        assert rc == 0 and out == "result\n" and len(lines) == 2, err
        assert lines[0].startswith("atfr info: warning: TracerWarning: converting") and "_trace.py:1200" in lines[0]
        assert lines[1].startswith("atfr info: warning: skipped 1 unreadable")
    monkeypatch.setenv("ATFR_DEBUG", "1")
    rc, _, err = _run(capsys, "info", "x")
    assert "TracerWarning" in err


def test_session_restores_logging_and_warnings(capsys, monkeypatch):
    before = (warnings.showwarning, list(warnings.filters), logging.getLogger("atfr").handlers[:],
              logging.getLogger("atfr").level)
    _fake_command(monkeypatch, lambda: warnings.warn("x"))
    _run(capsys, "-v", "info", "x")
    _run(capsys, "info", "x")
    after = (warnings.showwarning, list(warnings.filters), logging.getLogger("atfr").handlers[:],
             logging.getLogger("atfr").level)
    assert before == after


def test_opencv_log_lines_only_at_verbose(capfd, tmp_path, monkeypatch):
    """OpenCV logs to fd 2 itself ("[ WARN:0@..] ... can't be used to capture by name", "Stream
    timeout triggered", "Failed to write frame"): silent in a command unless -v (issue 22 item 7),
    and its level is restored afterwards."""
    cv2 = pytest.importorskip("cv2")
    from atfr.log import cli_session

    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    missing = str(tmp_path / "none.mp4")
    before = cv2.utils.logging.getLogLevel()
    capfd.readouterr()
    with cli_session("run", verbose=False):
        cv2.VideoCapture(missing, cv2.CAP_FFMPEG).release()
    assert capfd.readouterr().err == ""
    assert cv2.utils.logging.getLogLevel() == before
    with cli_session("run", verbose=True):
        cv2.VideoCapture(missing, cv2.CAP_FFMPEG).release()
    assert "[ WARN" in capfd.readouterr().err  # the same call logs at -v: the check above can fail


def test_quiet_stdout_sends_library_prints_to_the_log(capsys, monkeypatch):
    from atfr.log import quiet_stdout

    def body():
        with quiet_stdout("onnxruntime.quantization") as real:
            print("Collecting tensor data and making histogram ...")
            print("ours", file=real)

    _fake_command(monkeypatch, body)
    rc, out, err = _run(capsys, "info", "x")
    assert rc == 0 and out == "ours\n" and err == ""
    rc, out, err = _run(capsys, "-v", "info", "x")
    assert out == "ours\n"
    assert err == "atfr info: onnxruntime.quantization: Collecting tensor data and making histogram ...\n"


def _write_video(path: Path, n: int = 24, seed: int = 0) -> Path:
    import cv2

    rng = np.random.default_rng(seed)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (40, 32))
    for i in range(n):
        f = rng.integers(0, 120, (32, 40, 3), dtype=np.uint8)
        f[:, (2 * i) % 40:(2 * i) % 40 + 4] = 250
        wr.write(f)
    wr.release()
    return path


def test_calibrate_stdout_has_no_quantizer_chatter(capsys, tmp_path, tiny_export):
    """ONNX Runtime's HistogramCollector prints 'Collecting tensor data ...' on stdout per batch."""
    pytest.importorskip("cv2")
    exp = tmp_path / "exp"
    shutil.copytree(tiny_export, exp)
    vids = tmp_path / "vids"
    vids.mkdir()
    for k in range(2):
        _write_video(vids / f"v{k}.avi", seed=k)
    rc, out, err = _run(capsys, "calibrate", exp, "--data", vids, "--clips", "2", "--method", "percentile")
    assert rc == 0, err
    assert "Collecting" not in out + err
    assert out.startswith("calibrated (percentile, 2 clip(s)")
    assert all(ln.startswith(("calibrated", "  ")) for ln in out.splitlines()), out
    # our own one-line warnings and notes only (the note says when int8 is slower than fp32 here)
    assert all(ln.startswith(("atfr calibrate: warning:", "atfr calibrate: note:")) for ln in err.splitlines()), err


def test_verify_precision_warning_is_one_line(capsys, tmp_path, tiny_export):
    """An unreadable file among the clips: our warning, one line (was a raw two-line Python warning)."""
    pytest.importorskip("cv2")
    vids = tmp_path / "vids"
    vids.mkdir()
    _write_video(vids / "ok.avi")
    (vids / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    rc, out, err = _run(capsys, "verify", tiny_export, "--precision", "fp32", "--data", vids, "--data-clips", "2")
    assert rc == 0, err
    assert err.splitlines() == [f"atfr verify: warning: skipped 1 unreadable video(s), e.g. {vids / 'broken.mp4'}"]


# -- progress -------------------------------------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_periodic_lines_when_not_a_terminal(capsys):
    from atfr.progress import progress

    s = _Stream(False)
    with progress(range(4), "calibrating front", unit="clip", every_s=0.0, stream=s) as bar:
        got = list(bar)
        bar.write("a result")
    assert got == [0, 1, 2, 3]
    lines = s.getvalue().splitlines()
    assert len(lines) == 4 and lines[0].startswith("calibrating front: 1/4 clips (25%), ")
    assert lines[-1].startswith("calibrating front: 4/4 clips (100%)")
    assert capsys.readouterr().out == "a result\n"
    quiet = _Stream(False)
    assert list(progress(range(4), "x", every_s=3600, stream=quiet)) == [0, 1, 2, 3]
    assert quiet.getvalue() == ""  # short work prints nothing
    off = _Stream(False)
    list(progress(range(4), "x", every_s=0.0, stream=off, enabled=False))
    assert off.getvalue() == ""


def test_progress_bar_on_a_terminal():
    from atfr.progress import progress

    s = _Stream(True)
    with progress(iter(range(3)), "predict", unit="video", stream=s) as bar:
        assert list(bar) == [0, 1, 2]
    assert "predict" in s.getvalue() and "\r" in s.getvalue()  # tqdm's redraws


# -- readable numbers -----------------------------------------------------------------------------
def test_probabilities_of_many_class_models_stay_readable():
    from atfr.display import format_prob

    uniform = 1 / 400  # every class of a 400-class model with an undecided clip
    assert format_prob(uniform) == "0.0025" and format_prob(0.0473) == "0.0473"
    assert format_prob(0.9123) == "0.912" and format_prob(4.1e-05) == "4.1e-05"
    assert format_prob(0.0) == "0" and format_prob(1.0) == "1.000"
    for p in np.geomspace(1e-7, 1, 50):  # never 0.00, and three significant digits round-trip
        s = format_prob(p)
        assert float(s) > 0 and math.isclose(float(s), p, rel_tol=0.06), (p, s)


def test_infer_prints_readable_probabilities(capsys, tmp_path, tiny_export):
    f = tmp_path / "clip.npy"
    np.save(f, np.random.default_rng(1).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    rc, out, _ = _run(capsys, "infer", tiny_export, "--input", f, "--json")
    probs = json.loads(out)["probs"]
    rc, out, _ = _run(capsys, "infer", tiny_export, "--input", f)
    from atfr.display import format_prob

    shown = [ln.split()[0] for ln in out.splitlines()[1:]]
    assert rc == 0 and shown == [format_prob(p) for p in sorted(probs, reverse=True)[:5]]


# -- the demo's next command ----------------------------------------------------------------------
def test_demo_suggested_command_works_from_another_folder(capsys, tmp_path, tiny_checkpoint, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    rc, out, err = _run(capsys, "demo", "--workdir", "rel-demo", "--checkpoint", tiny_checkpoint,
                        "--videos-per-class", "1")
    assert rc == 0, err
    cmd = out.strip().splitlines()[-1].split("Try: ", 1)[1]
    argv = shlex.split(cmd)
    assert argv[:2] == ["atfr", "run"]
    paths = [argv[2], argv[argv.index("--source") + 1], argv[argv.index("--save") + 1]]
    assert all(os.path.isabs(p) for p in paths)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc, out, err = _run(capsys, *argv[1:])
    assert rc == 0, err
    assert (here / "rel-demo" / "annotated.mp4").stat().st_size > 0
