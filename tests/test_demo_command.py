"""`atfr demo` end to end: export, demo videos, per-clip lines and the per-video summary."""

from __future__ import annotations

import re

from atfr.cli import main


def test_demo_command_runs_and_reuses_its_export(capsys, tmp_path, tiny_checkpoint):
    work = tmp_path / "demo"
    assert main(["demo", "--workdir", str(work), "--checkpoint", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    from atfr.demo.synth import CLASSES

    clip_lines = re.findall(r"clip +\d+ @frame +\d+: .+ \(([\d.e+-]+)%\)  B'=\[(\d+)\]  ([\d.]+) ms", out)
    assert len(clip_lines) == 2 * 3 * len(CLASSES)  # two clips per video, three videos per class
    assert all(1 <= int(b) <= 8 for _, b, _ in clip_lines)
    summary = re.findall(r"^  (\S+) +B'= *([\d.]+)", out, flags=re.M)
    assert sorted(s[0] for s in summary) == sorted(CLASSES)  # one summary row per class
    assert (work / "export" / "atfr.json").exists()
    assert main(["demo", "--workdir", str(work), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert "reusing the export" in capsys.readouterr().out
