"""The AdaFuse parts of a bench report in words: Markdown tables and the command's summary lines."""

from __future__ import annotations

from typing import Any


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100.0 * v:+.1f}%"


def _num(v: Any, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def savings_table(rows: list[dict[str, Any]]) -> list[str]:
    out = ["| candidate | baseline | GFLOPs (Eq.5) | baseline GFLOPs | counted saved | ms/clip | baseline ms/clip | "
           "realized saved (clip) | ms/frame | realized saved (frame) | realized/counted (clip) | "
           "realized/counted (frame) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['candidate']} | {r['baseline']} | {_num(r['gflops'])} | {_num(r['baseline_gflops'])} | "
                   f"{_pct(r['counted_saved'])} | {_num(r['clip_ms'], 2)} | {_num(r['baseline_clip_ms'], 2)} | "
                   f"{_pct(r['realized_saved_clip'])} | {_num(r['frame_ms'], 2)} | {_pct(r['realized_saved_frame'])} | "
                   f"{_num(r['realized_over_counted_clip'], 2)} | {_num(r['realized_over_counted_frame'], 2)} |")
    return out


def markdown_lines(r: dict[str, Any]) -> list[str]:
    a = r["adafuse"]
    g = a["counted"]
    fr = g["policy_fractions"]
    lines = ["## AdaFuse candidates (ms; per frame of a clip candidate = per clip / T)", "",
             "| candidate | graph | measured | per clip median | per clip p90 | per frame median |", "|---|---|---|---|---|---|"]
    for name, v in a["candidates"].items():
        lines.append(f"| {name} | {v['graph']} | {v['measured']} | {v['per_clip']['median']:.3f} | "
                     f"{v['per_clip']['p90']:.3f} | {v['per_frame']['median']:.3f} |")
    lines += ["", f"Counted GFLOPs per clip (mean over {g['clips']} clip(s); {g['convention']}): Eq. 5 "
              f"{g['eq5']:.4f}, official {g['official']:.4f}, dense (every channel) {g['dense_official']:.4f}, "
              f"static TSN twin {_num(g['static_official'], 4)}. Policy: skip {fr['skip']:.1%}, reuse {fr['reuse']:.1%}, "
              f"keep {fr['keep']:.1%}.", "", "## AdaFuse savings: counted vs realized", ""]
    lines += savings_table(a["savings"]) + [""]
    return lines


def summary_lines(r: dict[str, Any]) -> list[str]:
    a = r["adafuse"]
    g = a["counted"]
    out = [f"{r['model']['name']} (AdaFuse) on onnxruntime, batch 1, {r['model']['num_frames']} frames; counted GFLOPs "
           f"per clip: Eq.5 {g['eq5']:.4f}, official {g['official']:.4f}, dense {g['dense_official']:.4f}"]
    for name, v in a["candidates"].items():
        out.append(f"  {name}: {v['per_clip']['median']:.3f} ms/clip, {v['per_frame']['median']:.3f} ms/frame "
                   f"({v['measured']})")
    for row in a["savings"]:
        out.append(f"  {row['candidate']} vs {row['baseline']}: counted saved {_pct(row['counted_saved'])}, realized "
                   f"{_pct(row['realized_saved_clip'])} per clip, {_pct(row['realized_saved_frame'])} per frame")
    ld = r.get("load") or {}
    out.append(f"  load average before {ld.get('before')}, after {ld.get('after')}"
               + (" (machine loaded)" if ld.get("loaded") else ""))
    out += [f"  warning: {w}" for w in r["warnings"]]
    return out
