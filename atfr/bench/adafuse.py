"""AdaFuse in ``atfr bench``: the clip graph and the online graphs, counted and measured. Torch-free.

An AdaFuse export (export/adafuse_export.py) has three graphs and all three are candidates of the
same interleaved round-robin loop (:func:`atfr.bench.timing.run_interleaved`):

* ``adafuse.clip``: ``model.onnx``, T frames at once, dense with masks (every channel computed,
  the policy selects after): the counted saving is not realized by construction;
* ``adafuse.online`` / ``adafuse.online_gathered``: ``online.onnx`` (dense masks) and
  ``online_gathered.onnx`` (gathered convolutions: conv1 computes the channels the policy needs,
  conv2 reads the non-skipped ones) frame by frame over the clip from a zero state: one sample is
  one clip of T steps;
* ``adafuse.online.step`` / ``adafuse.online_gathered.step``: one frame of a stream (the state
  carried from the previous call), the per-frame cost of a camera that runs the online graph.

Every candidate cycles through the same input clips, one clip per round, so in each round all of
them see the same data (the gathered graph's cost depends on the policy, hence on the data).
Per-frame figures of clip candidates are the per-clip statistics / T.

Counted GFLOPs come from the policies the clip graph gives on those clips (untimed), through
runtime/adafuse_gflops.py (official convention, ``official`` with the official off-by-one and
``eq5``), against ``dense_official`` (the gated network computing everything) and
``static_official`` (the same ResNet without policy nets: the TSN twin). Savings are fractions:
counted = 1 - GFLOPs / baseline GFLOPs, realized = 1 - ms / baseline ms, and their ratio
realized / counted (1: every counted FLOP saved is time saved; <= 0: nothing realized).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from atfr.errors import ATFRError
from atfr.runtime.adafuse_clip import AdaFuseClipRunner, AdaFuseOnlineRunner

from .stats import latency_stats, scale_stats
from .timing import Candidate, Timings

ONLINE_GRAPHS = ("online", "online_gathered")


def cycling(fn: Callable[[Any], Any], items: Sequence[Any]) -> Callable[[], Any]:
    """A no-argument call that applies ``fn`` to the next item each time (round r sees item r mod n)."""
    state = {"k": 0}

    def call() -> Any:
        item = items[state["k"] % len(items)]
        state["k"] += 1
        return fn(item)
    return call


def streaming_step(runner: AdaFuseOnlineRunner, clips: Sequence[np.ndarray]) -> Callable[[], Any]:
    """One online step per call over the frames of ``clips`` in turn, the state carried along."""
    frames = [c[:, :, t] for c in clips for t in range(c.shape[2])]
    runner.reset(1)
    return cycling(runner.step, [np.ascontiguousarray(f) for f in frames])


@dataclass
class AdaFuseSet:
    """The candidates of one AdaFuse export and what they count."""

    prefix: str
    frames: int
    candidates: list[Candidate]
    counted: dict[str, Any]
    graphs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def counted_gflops(runner: AdaFuseClipRunner, clips: Sequence[np.ndarray]) -> dict[str, Any]:
    """Policies of the clip graph on ``clips`` -> GFLOPs per clip (mean over clips and each clip)."""
    reps = [runner.infer(c)[1] for c in clips]
    g = runner.manifest.gflops or {}
    per = {k: [float(r["gflops"][k]) for r in reps] for k in ("official", "eq5")}
    fr = {k: float(np.mean([r["policy_fractions"][k] for r in reps])) for k in ("skip", "reuse", "keep")}
    return {"official": float(np.mean(per["official"])), "eq5": float(np.mean(per["eq5"])),
            "per_clip": per, "dense_official": float(reps[0]["gflops"]["dense_official"]),
            "static_official": g.get("static_official"), "static": g.get("static"),
            "policy_nets": g.get("policy_nets"), "policy_fractions": fr, "clips": len(clips),
            "convention": "official (thop: conv + linear MACs, conv bias, 2 per BatchNorm element); eq5 = "
                          "Eq. 5 with the last frame's own mask, official = the official off-by-one",
            "policies": [r["policy"] for r in reps]}


def adafuse_set(export: str | Path, clips: Sequence[np.ndarray], threads: int | None = None,
                providers: str | None = None, prefix: str = "adafuse") -> AdaFuseSet:
    """Candidates for one AdaFuse export on ``clips`` (each [1,3,T,S,S], batch 1)."""
    clip = AdaFuseClipRunner.load(export, "onnxruntime", providers, threads)
    m = clip.manifest
    want = tuple(m.clip_shapes(1)[0])
    bad = [tuple(c.shape) for c in clips if tuple(c.shape) != want]
    if bad:
        raise ATFRError(f"{export}: clip shape {bad[0]} does not match the export {want} (batch 1)")
    t = int(m.input.num_frames)
    counted = counted_gflops(clip, clips)
    cands = [Candidate(f"{prefix}.clip", cycling(lambda c: clip.runner.run({"clip0": c}), clips),
                       meta={"per": "clip", "graph": "model"})]
    out = AdaFuseSet(prefix, t, cands, counted, ["model"])
    for graph in ONLINE_GRAPHS:
        if graph not in m.graphs:
            continue
        whole = AdaFuseOnlineRunner.load(export, providers, threads, graph)
        _, pol = whole.run_clip(clips[0])  # untimed: the online policy must be the clip graph's
        if [p[0].tolist() for p in pol] != counted["policies"][0]:
            out.warnings.append(f"{export}: {graph}.onnx's policy differs from model.onnx's on the first clip "
                                "(near-tie channels?): its counted GFLOPs are not the clip graph's")
        stream = AdaFuseOnlineRunner.load(export, providers, threads, graph)
        # AdaFuse-TSM's graphs run ``delay`` frames behind: a clip is T steps plus ``delay`` flush steps.
        flush = {"flush_steps": whole.delay} if whole.delay else {}
        cands += [Candidate(f"{prefix}.{graph}", cycling(whole.run_clip, clips),
                            meta={"per": "clip", "graph": graph, **flush}),
                  Candidate(f"{prefix}.{graph}.step", streaming_step(stream, clips),
                            meta={"per": "frame", "graph": graph})]
        out.graphs.append(graph)
    return out


def per_clip_and_frame(s: AdaFuseSet, res: dict[str, Timings]) -> dict[str, dict[str, Any]]:
    """name -> {per_clip, per_frame} statistics (ms). Clip candidates: per frame = per clip / T;
    step candidates: per frame measured, per clip = T x per frame."""
    out: dict[str, dict[str, Any]] = {}
    for c in s.candidates:
        st = latency_stats(res[c.name].samples_ns, "ns")
        if c.meta.get("per") == "frame":
            out[c.name] = {"per_frame": st, "per_clip": scale_stats(st, s.frames), "graph": c.meta["graph"],
                           "measured": "per frame (one step of a stream)"}
        else:
            flush = c.meta.get("flush_steps", 0)
            out[c.name] = {"per_clip": st, "per_frame": scale_stats(st, 1.0 / s.frames), "graph": c.meta["graph"],
                           "measured": f"per clip (T frames{f' + {flush} flush steps' if flush else ''})"}
    return out


def saving(name: str, baseline: str, gflops: float | None, base_gflops: float | None,
           clip_ms: float | None, base_clip_ms: float | None, frame_ms: float | None,
           base_frame_ms: float | None) -> dict[str, Any]:
    """One row: counted and realized savings (fractions) and realized / counted."""
    def frac(v: float | None, b: float | None) -> float | None:
        return None if v is None or not b else 1.0 - float(v) / float(b)
    counted = frac(gflops, base_gflops)
    rc, rf = frac(clip_ms, base_clip_ms), frac(frame_ms, base_frame_ms)
    ratio = (lambda r: None if r is None or not counted else r / counted)
    return {"candidate": name, "baseline": baseline, "gflops": gflops, "baseline_gflops": base_gflops,
            "counted_saved": counted, "clip_ms": clip_ms, "baseline_clip_ms": base_clip_ms,
            "realized_saved_clip": rc, "frame_ms": frame_ms, "baseline_frame_ms": base_frame_ms,
            "realized_saved_frame": rf, "realized_over_counted_clip": ratio(rc),
            "realized_over_counted_frame": ratio(rf)}
