#!/usr/bin/env python
"""Reproduce the README's CPU performance table with ONNX Runtime.

X3D-S+ATFR vs static X3D-S vs PyTorch eager at 13x160x160 (random weights: latency does not
depend on the weights, only B' does, and the curve feeds every B' explicitly). Everything is
timed in ONE ``atfr bench`` run, interleaved round-robin, so the ratios are comparable even on a
shared, noisy machine; absolute milliseconds are not.

    python benchmarks/cpu_x3d_s.py [--iters 20] [--warmup 3] [--threads N] [--work DIR]
    python benchmarks/cpu_x3d_s.py --arch 3dresnet   # fallback when X3D is unavailable

Prints the command, the machine and the table: per-clip latency at each B' (ATFR), the static
and PyTorch end-to-end latencies, static/ATFR ratios, the ratio at the B' where ATFR costs ~58% of
the static model's GFLOPs, the split overhead at B'=B, the SGS share of clip latency, R^2 of back
latency vs B' and the harness overhead. The full report (JSON/Markdown/plots) lands in
WORK/report.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def compact(arch: str, frames: int, size: int, stage: str) -> dict:
    if arch == "x3d":
        return {"arch": "x3d", "variant": "S", "num_frames": frames, "crop_size": size, "num_classes": 400,
                "sgs_stage": stage}
    return {"arch": "3dresnet", "depth": 18, "num_frames": frames, "crop_size": size, "num_classes": 400,
            "sgs_stage": stage}  # as the official 3DResNet18+ATFR config (bottleneck blocks, depth 18)


def prepare(arch: str, frames: int, size: int, work: Path, stage: str, seed: int) -> tuple[Path, Path]:
    """Checkpoint + export for one model, reused when the recorded config matches."""
    import torch

    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import load_checkpoint, save_checkpoint
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model

    tag = "atfr" if stage != "none" else "static"
    ck, ex, stamp = work / f"{tag}.pyth", work / f"{tag}_export", work / f"{tag}.json"
    want = {"compact": compact(arch, frames, size, stage), "seed": seed}
    if stamp.exists() and ex.joinpath("atfr.json").exists() and json.loads(stamp.read_text()) == want:
        return ck, ex
    torch.manual_seed(seed)
    cfg = from_compact(want["compact"])
    model = build_model(cfg).eval()
    save_checkpoint(ck, model, cfg, meta={"note": "random weights, latency benchmark"}, force=True)
    t0 = time.perf_counter()
    export_model(load_checkpoint(ck), ex, ExportOptions(force=True, name=f"{arch}-{tag}"))
    print(f"  exported {tag} {arch} in {time.perf_counter() - t0:.1f} s", flush=True)
    stamp.write_text(json.dumps(want))
    return ck, ex


def x3d_available() -> str | None:
    try:
        from atfr.models.config import from_compact
        from atfr.models.zoo import build_model
        build_model(from_compact(compact("x3d", 13, 160, "res2")))
        return None
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--arch", choices=["x3d", "3dresnet"], default="x3d")
    ap.add_argument("--frames", type=int, default=13)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--bprime", default="all")
    ap.add_argument("--work", default="/tmp/atfr_bench_cpu_x3d_s")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch eager")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    arch = a.arch
    note = None
    if arch == "x3d":
        why = x3d_available()
        if why:
            note = f"X3D unavailable ({why[:120]}); fell back to --arch 3dresnet (3D ResNet-18)"
            arch = "3dresnet"
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    print("command: " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]))
    if note:
        print("NOTE: " + note)
    print(f"preparing {arch} ATFR + static at {a.frames}x{a.size}x{a.size} (random weights) in {work}", flush=True)
    ck, ex = prepare(arch, a.frames, a.size, work, "res2", a.seed)
    _, sx = prepare(arch, a.frames, a.size, work, "none", a.seed)

    out = work / "report"
    bench_argv = ["bench", str(ex), "--static", str(sx), "--iters", str(a.iters), "--warmup", str(a.warmup),
                  "--bprime", a.bprime, "--out", str(out), "--force", "--no-progress"]
    if not a.no_torch:
        bench_argv += ["--torch", str(ck)]
    if a.threads:
        bench_argv += ["--threads", str(a.threads)]
    print("bench: atfr " + " ".join(shlex.quote(x) for x in bench_argv), flush=True)
    from atfr.cli import main as cli_main
    t0 = time.perf_counter()
    rc = cli_main(bench_argv)
    if rc:
        return rc
    r = json.loads((out / "report.json").read_text())
    print_table(r, arch, a, time.perf_counter() - t0, note)
    return 0


def print_table(r: dict, arch: str, a: argparse.Namespace, wall: float, note: str | None) -> None:
    env = r["environment"]
    cpu = env["cpu"]
    v = env["versions"]
    rat = r["ratios"]
    st = r.get("static") or {}
    tor = r.get("torch") or {}
    print()
    print(f"machine: {cpu['model']}, {cpu['usable_cores']} usable cores, load {cpu.get('load_average')}, "
          f"threads {r['config']['threads'] or 'ORT default'}; onnxruntime {v['onnxruntime']}, torch {v.get('torch')}, "
          f"numpy {v['numpy']}")
    name = "X3D-S" if arch == "x3d" else "3D ResNet-18"
    print(f"model: {name} {a.frames}x{a.size}x{a.size}, SGS B={max(s['bins'] for s in r['model']['sgs'])}; "
          f"iters {r['config']['iters']} (warmup {r['config']['warmup']}), all candidates interleaved in one run "
          f"({wall:.0f} s)")
    if note:
        print("NOTE: " + note)
    print()
    sclip = st.get("clip_ms")
    print(f"{'B`':>3} | {'ATFR clip ms':>12} | {'back ms':>8} | {'GFLOPs':>7} | {'GFLOPs/static':>13} | "
          f"{'static/ATFR':>11}")
    print("-" * 72)
    for c in r["bprime_curve"]:
        g = c.get("gflops")
        gr = c.get("gflops_ratio_vs_static")
        sp = c.get("speedup_vs_static")
        print(f"{c['bprime']:>3} | {c['clip_ms']:>12.2f} | {c['back']['median']:>8.2f} | "
              f"{(f'{g:.3f}' if g is not None else '-'):>7} | {(f'{gr:.1%}' if gr is not None else '-'):>13} | "
              f"{(f'{sp:.2f}x' if sp is not None else '-'):>11}")
    print("-" * 72)
    e2e = r["stages"]["end_to_end"]
    print(f"ATFR end-to-end (random clip, B'={r['stages']['end_to_end_bprime'][0]}): median {e2e['median']:.2f} ms")
    if sclip:
        print(f"static {name} end-to-end: median {sclip:.2f} ms; GFLOPs {r['gflops'].get('static')}")
    if tor.get("end_to_end"):
        lay = ", ".join(f"{k} {v['median']:.2f} ms" for k, v in (tor.get("layouts") or {}).items())
        print(f"PyTorch eager (ATFR model): median {tor['end_to_end']['median']:.2f} ms, layout "
              f"{tor.get('layout_chosen')}" + (f" [{lay}]" if lay else ""))
    elif tor.get("error"):
        print(f"PyTorch eager: skipped ({tor['error']})")
    print()
    k1 = "static_clip / atfr_clip at B'=1"
    rows = [
        ("static / ATFR at B' with ~58% of static GFLOPs",
         f"{rat['static_clip / atfr_clip there']:.2f}x at B'={rat['bprime_at_58pct_gflops']} "
         f"({rat['gflops_ratio_there']:.1%} GFLOPs)" if "bprime_at_58pct_gflops" in rat else "-"),
        ("static / ATFR at B'=1", f"{rat[k1]:.2f}x" if k1 in rat else "-"),
        ("split overhead at B'=B vs static (ATFR clip / static - 1)",
         f"{rat['atfr_clip_at_B / static_clip (split overhead)'] - 1:+.1%}"
         if "atfr_clip_at_B / static_clip (split overhead)" in rat else "-"),
        ("ATFR split pipeline / its monolithic model.onnx (same clip)",
         f"{rat['atfr_e2e / atfr_model (split vs monolithic)'] - 1:+.1%}"
         if "atfr_e2e / atfr_model (split vs monolithic)" in rat else "-"),
        ("static / ATFR end-to-end at ORT default threads (what users run)",
         f"{rat['static_e2e / atfr_e2e (default threads)']:.2f}x" if "static_e2e / atfr_e2e (default threads)" in rat
         else ("same as the row below (no --threads)" if not a.threads else "-")),
        ("SGS share of end-to-end clip latency", f"{rat['sgs_share_of_e2e']:.1%}" if "sgs_share_of_e2e" in rat else "-"),
        ("R^2 of back latency vs B'", f"{rat['back_vs_bprime_r2']:.4f}" if "back_vs_bprime_r2" in rat else "-"),
        ("PyTorch eager / ATFR end-to-end", f"{rat['torch_e2e / atfr_e2e']:.2f}x" if "torch_e2e / atfr_e2e" in rat else "-"),
        ("static / ATFR end-to-end (same random clip)",
         f"{rat['static_e2e / atfr_e2e']:.2f}x" if "static_e2e / atfr_e2e" in rat else "-"),
    ]
    ov = r["harness"].get("overhead")
    if ov:
        rows.append(("harness overhead (vs bare session.run loop; fixed per-call cost)",
                     f"{ov['overhead_pct']:+.2f}%; {ov['noop_ns_per_call']:.0f} ns = {ov['noop_pct']:.4f}%"))
    w = max(len(k) for k, _ in rows)
    for k, val in rows:
        print(f"{k:<{w}} : {val}")
    if r["warnings"]:
        print()
        for wmsg in r["warnings"]:
            print("warning: " + wmsg)
    ld = r.get("load") or {}
    print(f"\nload average before {ld.get('before')}, after {ld.get('after')}" + (" (machine loaded)" if ld.get("loaded") else ""))
    print(f"full report: {Path(a.work) / 'report'}/report.md")


if __name__ == "__main__":
    sys.exit(main())
