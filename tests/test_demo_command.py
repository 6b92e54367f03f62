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
    # the last row: the saving over all clips, from each clip's B' and the export's GFLOPs table
    import json

    g = json.loads((work / "export" / "atfr.json").read_text())["gflops"]
    table = {r["bprime"][0]: r["total"] for r in g["vs_bprime"]}
    want = sum(1 - table[int(b)] / g["static"] for _, b, _ in clip_lines) / len(clip_lines)
    row = re.search(r"^  all clips +B'= *([\d.]+) +([\d.]+) GFLOPs  saved +([\d.-]+)%", out, flags=re.M)
    assert row, out
    assert abs(float(row.group(3)) - 100 * want) <= 0.05 + 1e-9  # printed with one decimal
    assert main(["demo", "--workdir", str(work), "--checkpoint", str(tiny_checkpoint)]) == 0
    assert "reusing the export" in capsys.readouterr().out
