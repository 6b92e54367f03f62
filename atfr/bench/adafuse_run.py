"""``atfr bench`` on an AdaFuse export: the report in atfr bench's format, with an ``adafuse`` section.

The standard blocks keep their meaning where it exists: ``stages.end_to_end`` (and ``front``: the
whole network is one graph) is the clip graph ``model.onnx`` per clip; ``static`` is ``--static``
(a static export of the same input, e.g. the TSN of models/tsn.py) timed as for ATFR; there is no
B' curve. The ``adafuse`` block holds every AdaFuse candidate per clip and per frame, the counted
GFLOPs of the policies the clips got and the savings table (atfr.bench.adafuse). Batch 1 (the
gathered graph runs one stream), ONNX Runtime only (no TensorRT engines for AdaFuse yet).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any

import numpy as np

from atfr.errors import ATFRError
from atfr.runtime.manifest import load_manifest
from atfr.runtime.pipeline import Pipeline

from . import env as envmod
from .adafuse import AdaFuseSet, adafuse_set, per_clip_and_frame, saving
from .report import SCHEMA_VERSION
from .stats import latency_stats, scale_stats, throughput
from .timing import Candidate, run_interleaved

VIDEO_CLIPS = 12  # at most this many clips from --videos (rounds cycle through them)


def check_options(o: Any) -> None:
    """One line for what an AdaFuse bench does not do (before any timing)."""
    if o.batch != 1:
        raise ATFRError("--batch: an AdaFuse export is benchmarked at batch 1 (the gathered online graph runs one "
                        "stream)")
    if o.backend not in ("onnxruntime", "auto"):
        raise ATFRError("--backend: AdaFuse exports run on onnxruntime (no TensorRT engines for them yet)")
    if o.torch_checkpoint:
        raise ATFRError("--torch: PyTorch eager is not timed for AdaFuse exports")
    if o.bins is not None:
        raise ATFRError("--bins applies to ATFR exports (SGS bins); this is an AdaFuse export")


def inputs(o: Any, m: Any) -> tuple[list[np.ndarray], str]:
    if o.videos:
        from .runner import video_clips

        got, how = video_clips(o.videos, m)
        return [c[0] for c in got[:VIDEO_CLIPS]], f"clips of the videos in {o.videos} ({how}; at most {VIDEO_CLIPS})"
    from .runner import random_clips

    return [random_clips(m, 1, o.seed)[0]], "one standard normal random clip (seeded)"


def _static(o: Any, clips: list[np.ndarray], cands: list[Candidate]) -> tuple[Pipeline, dict[str, Any]]:
    sp = Pipeline.load(o.static, "onnxruntime", threads=o.threads, providers=o.providers)
    sm = sp.manifest
    if tuple(sm.clip_shapes(1)[0]) != tuple(clips[0].shape) or sm.num_pathways != 1:
        raise ATFRError(f"--static {o.static}: its input {sm.clip_shapes(1)} differs from the AdaFuse export's "
                        f"{[list(clips[0].shape)]}; export both at the same --frames/--size")
    fronts = [sp.run_front([c]) for c in clips]
    feeds = [{sm.back_input_name(0): f["feat0"]} for f in fronts]
    from .adafuse import cycling

    cands += [Candidate("static.front", cycling(lambda c: sp.run_front([c]), clips)),
              Candidate("static.back", cycling(sp.run_back, feeds)),
              Candidate("static.e2e", cycling(lambda c: sp.infer([c]), clips))]
    return sp, {"export": str(o.static), "name": sm.name, "arch": sm.arch,
                "gflops": (sm.gflops or {}).get("total"), "graph": sp.graph}


def savings_rows(s: AdaFuseSet, per: dict[str, dict[str, Any]], static_ms: float | None) -> list[dict[str, Any]]:
    """AdaFuse vs the TSN twin (counted: static_official; realized: --static if timed) and the
    gathered online graph vs the dense one (counted: dense_official)."""
    g = s.counted
    rows = []
    sf = static_ms / s.frames if static_ms else None
    for name, v in per.items():
        if name.endswith(".step"):
            continue
        rows.append(saving(name, "static TSN (--static)" if static_ms else "static TSN (counted only)",
                           g["eq5"], g["static_official"], v["per_clip"]["median"], static_ms,
                           v["per_frame"]["median"], sf))
    on, ga = f"{s.prefix}.online", f"{s.prefix}.online_gathered"
    if on in per and ga in per:
        rows.append(saving(ga, on, g["eq5"], g["dense_official"], per[ga]["per_clip"]["median"],
                           per[on]["per_clip"]["median"], per[f"{ga}.step"]["per_frame"]["median"],
                           per[f"{on}.step"]["per_frame"]["median"]))
    return rows


def run_adafuse(o: Any, env: dict[str, Any], warnings: list[str], sampler: envmod.TegrastatsSampler) -> dict[str, Any]:
    check_options(o)
    m = load_manifest(o.export, check=True)
    clips, source = inputs(o, m)
    s = adafuse_set(o.export, clips, o.threads, o.providers)
    warnings += s.warnings
    cands = list(s.candidates)
    static_info = None
    if o.static:
        _, static_info = _static(o, clips, cands)
    la0 = env.get("cpu", {}).get("load_average")
    t0 = time.perf_counter()
    res = run_interleaved(cands, o.iters, o.warmup, seed=o.seed)
    wall = time.perf_counter() - t0
    try:
        la1: list[float] | None = list(os.getloadavg())
    except (AttributeError, OSError):
        la1 = None
    per = per_clip_and_frame(s, res)
    e2e = per["adafuse.clip"]["per_clip"]
    static_ms = None
    if static_info:
        st = {k: latency_stats(res[f"static.{k}"].samples_ns, "ns") for k in ("front", "back", "e2e")}
        static_ms = st["e2e"]["median"] if static_info["graph"] == "model" else st["front"]["median"] + st["back"]["median"]
        static_info.update({"front": st["front"], "back": st["back"], "end_to_end": st["e2e"], "clip_ms": static_ms,
                            "per_frame": scale_stats(st["e2e"], 1.0 / s.frames),
                            "throughput": throughput(st["e2e"]["mean"], 1, s.frames)})
    rows = savings_rows(s, per, static_ms)
    counted = {k: v for k, v in s.counted.items() if k != "policies"}
    ratios: dict[str, float] = {}
    if static_ms:
        ratios["static_clip / adafuse_clip"] = static_ms / e2e["median"]
    for r in rows:
        if r["baseline"].startswith("adafuse") and r["realized_over_counted_clip"] is not None:
            ratios["gathered realized / counted (clip)"] = r["realized_over_counted_clip"]
            ratios["online_gathered / online (clip)"] = r["clip_ms"] / r["baseline_clip_ms"]
            ratios["online_gathered / online (frame)"] = r["frame_ms"] / r["baseline_frame_ms"]
    cores = (env.get("cpu") or {}).get("usable_cores") or os.cpu_count() or 1
    loaded = bool((la0 and la0[0] > 0.5 * cores) or (la1 and la1[0] > 0.5 * cores))
    if loaded and not any(w.startswith("the machine is busy") for w in warnings):  # env warned already
        warnings.append(f"the machine was loaded (1-min load average {la0 and la0[0]} before, {la1 and la1[0]} after, "
                        f"on {cores} cores): ratios measured side by side hold, absolute ms do not")
    env["tegrastats"] = sampler.summary()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 2**20)
    from atfr import __version__
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "atfr bench", "version": __version__, "argv": list(o.argv) or ["atfr", "bench", o.export]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": env,
        "config": {"export": str(o.export), "backend": "onnxruntime", "provider": None, "warmup": o.warmup,
                   "iters": o.iters, "batch": 1, "threads": o.threads, "bprime": [], "videos": o.videos,
                   "static": o.static, "seed": o.seed, "graph": "model", "inputs": source, "wall_s": wall,
                   "threads_meaning": (f"{o.threads} intra-op thread(s) per ONNX Runtime session" if o.threads
                                       else "ONNX Runtime default (one intra-op thread per physical core)")},
        "model": {"name": m.name, "arch": m.arch, "family": "adafuse", "num_frames": s.frames,
                  "crop_size": m.input.crop_size, "num_pathways": 1, "clip_shapes": [list(clips[0].shape)], "sgs": []},
        "harness": {"clock": "time.perf_counter_ns around each call; gc disabled while timing",
                    "interleaving": "round-robin: every candidate once per round, in a seeded random order per round; "
                                    "every candidate on the same clip in a round",
                    "percentile_method": "linear", "std": "population (ddof=0)", "candidates": list(res),
                    "overhead": None},
        "stages": {"front": e2e, "sgs": None, "end_to_end": e2e, "end_to_end_bprime": [], "back": None,
                   "note": "AdaFuse: one clip graph (model.onnx); front = end-to-end"},
        "bprime_curve": [], "fit": None, "back_steps": None, "distribution": None,
        "load": {"before": la0, "after": la1, "usable_cores": cores, "loaded": loaded},
        "static": static_info, "torch": None, "ratios": ratios,
        "gflops": {"source": "manifest 'adafuse' section + the clips' policies (runtime/adafuse_gflops.py)",
                   "static": counted["static_official"], "at_B": None, "per_bprime": {},
                   "end_to_end_clip": counted["eq5"]},
        "throughput": {"end_to_end": throughput(e2e["mean"], 1, s.frames)},
        "memory": {"peak_rss_mb": float(peak), "gpu_memory_mb": None},
        "tensorrt": None,
        "adafuse": {"candidates": per, "counted": counted, "savings": rows, "graphs": s.graphs},
        "warnings": warnings,
    }
