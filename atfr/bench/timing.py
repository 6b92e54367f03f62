"""A timing harness: warmup, then round-robin interleaved iterations of several candidates.

Every round runs each candidate once, so slow drifts of the machine (thermal throttling, other
processes on a shared CPU, DVFS) hit every candidate alike instead of whichever happened to run
last. The order within a round is a fresh (seeded) random permutation, so no candidate always
follows the same neighbour: what the previous call leaves behind (cache and allocator state,
ONNX Runtime / OpenMP worker threads still spinning on other cores) is spread over all candidates
instead of always taxing the same one.

A sample is ``perf_counter_ns()`` immediately before and after the call -- nothing else inside
the timed region. The Python garbage collector is disabled while timing (and restored after) so a
collection triggered by one candidate's allocations is not charged to the next one.

:func:`measure_overhead` quantifies what the harness adds: the same call timed in a bare loop
versus through :func:`run_interleaved`, alternating blocks, plus the cost of the harness around a
no-op call.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .stats import latency_stats


@dataclass
class Candidate:
    """One thing to time. ``probe`` (optional) is called after each *timed* call, outside the timed
    region, and returns extra per-call measurements in ms (e.g. TensorRT's enqueue/H2D/GPU
    compute/D2H from the backend); they are collected per key."""

    name: str
    fn: Callable[[], Any]
    probe: Callable[[], dict[str, float] | None] | None = None
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timings:
    name: str
    samples_ns: np.ndarray
    extra_ms: dict[str, list[float]] = field(default_factory=dict)

    def stats(self) -> dict[str, float]:
        return latency_stats(self.samples_ns, "ns")


class _GCPaused:
    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.collect()
        gc.disable()

    def __exit__(self, *exc: Any) -> None:
        if self.was:
            gc.enable()


def run_interleaved(candidates: Sequence[Candidate], iters: int, warmup: int = 0,
                    progress: Callable[[int], None] | None = None, seed: int | None = 0) -> dict[str, Timings]:
    """Time every candidate ``iters`` times (after ``warmup`` untimed rounds), interleaved.

    Each round runs the candidates in a random order drawn from ``seed`` (``seed=None``: the
    given order rotated by one per round instead). ``progress(k)`` is called once per round
    (warmup rounds included) with k = 1.
    """
    if iters < 1:
        raise ValueError("iters must be >= 1")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError("candidate names must be unique")
    n = len(candidates)
    fns = [c.fn for c in candidates]
    probes = [c.probe for c in candidates]
    bufs = [np.zeros(iters, dtype=np.int64) for _ in candidates]
    extras: list[dict[str, list[float]]] = [{} for _ in candidates]
    pc = time.perf_counter_ns
    rng = np.random.default_rng(seed) if seed is not None else None
    orders = [[int(j) for j in rng.permutation(n)] if rng is not None else [(r + k) % n for k in range(n)]
              for r in range(warmup + iters)]
    with _GCPaused():
        for r in range(warmup):
            for j in orders[r]:
                fns[j]()
            if progress:
                progress(1)
        for r in range(iters):
            for j in orders[warmup + r]:
                fn = fns[j]
                t0 = pc()
                fn()
                t1 = pc()
                bufs[j][r] = t1 - t0
                pr = probes[j]
                if pr is not None:
                    got = pr()
                    if got:
                        for key, v in got.items():
                            if v is not None:
                                extras[j].setdefault(key, []).append(float(v))
            if progress:
                progress(1)
    return {c.name: Timings(c.name, b, e) for c, b, e in zip(candidates, bufs, extras)}


def time_one(fn: Callable[[], Any], iters: int, warmup: int = 0) -> Timings:
    """One candidate alone (no interleaving)."""
    return run_interleaved([Candidate("fn", fn)], iters, warmup)["fn"]


def _direct_loop(fn: Callable[[], Any], iters: int) -> np.ndarray:
    """The reference: the call between two perf_counter_ns reads in the tightest loop we can write."""
    out = np.zeros(iters, dtype=np.int64)
    pc = time.perf_counter_ns
    for i in range(iters):
        t0 = pc()
        fn()
        out[i] = pc() - t0
    return out


def _noop() -> None:
    return None


def measure_overhead(direct_fn: Callable[[], Any], harness_fn: Callable[[], Any] | None = None,
                     iters: int = 1, blocks: int = 20, warmup: int = 2) -> dict[str, Any]:
    """What the harness adds to a measurement.

    ``direct_fn`` is the raw call (e.g. ``session.run(names, feeds)`` of an ONNX Runtime
    session); ``harness_fn`` the same work as the benchmark times it (e.g. the pipeline's
    ``run_back(feeds)``, which adds the runner's feed/fetch dict handling); default: direct_fn.
    ``blocks`` pairs of blocks of ``iters`` calls each -- a bare-loop block and a harness block,
    in ABBA order (the first of a pair alternates) so neither side always runs first. Reported:

    * ``direct_median_ms`` / ``harness_median_ms`` and ``overhead_pct`` = the median of the
      per-pair differences of block medians relative to the direct median. Pairing cancels slow
      drifts of the machine, but on a busy machine the result still carries noise of a few %
      (it can come out negative);
    * ``noop_ns_per_call``: harness minus bare loop around a no-op callable (medians), i.e. the
      fixed cost the harness adds inside the timed region, and ``noop_pct`` = that cost relative
      to the direct median;
    * ``negligible``: noop_pct < 2 and |overhead_pct| < 2.
    """
    harness_fn = harness_fn or direct_fn
    for _ in range(warmup):
        direct_fn()
        harness_fn()
    d_all: list[np.ndarray] = []
    h_all: list[np.ndarray] = []
    diffs: list[float] = []
    with _GCPaused():
        for b in range(blocks):
            if b % 2 == 0:
                d = _direct_loop(direct_fn, iters)
                h = run_interleaved([Candidate("h", harness_fn)], iters)["h"].samples_ns
            else:
                h = run_interleaved([Candidate("h", harness_fn)], iters)["h"].samples_ns
                d = _direct_loop(direct_fn, iters)
            d_all.append(d)
            h_all.append(h)
            diffs.append(float(np.median(h)) - float(np.median(d)))
        nd = np.median(_direct_loop(_noop, 2000))
    nh = np.median(run_interleaved([Candidate("n", _noop)], 2000)["n"].samples_ns)
    d = np.concatenate(d_all)
    h = np.concatenate(h_all)
    dm = float(np.median(d)) / 1e6
    hm = float(np.median(h)) / 1e6
    noop_ns = float(max(0.0, nh - nd))
    pct = float(np.median(diffs)) / (dm * 1e6) * 100.0 if dm > 0 else 0.0
    noop_pct = noop_ns / (dm * 1e6) * 100.0 if dm > 0 else 0.0
    return {
        "method": f"{blocks} ABBA-paired blocks of {iters} call(s): bare perf_counter_ns loop vs harness; "
                  "median of paired differences",
        "direct_median_ms": dm,
        "harness_median_ms": hm,
        "overhead_pct": float(pct),
        "noop_ns_per_call": noop_ns,
        "noop_pct": float(noop_pct),
        "negligible": bool(noop_pct < 2.0 and abs(pct) < 2.0),
        "direct": latency_stats(d, "ns"),
        "harness": latency_stats(h, "ns"),
    }
