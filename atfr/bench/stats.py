"""Latency statistics, throughput, linear fits and expectations under a B' distribution.

Pure numpy, torch-free. Conventions used everywhere in ``atfr bench``:

* Samples are wall-clock durations of one call; the harness records nanoseconds
  (``time.perf_counter_ns``) and :func:`latency_stats` reports **milliseconds**.
* Percentiles use ``numpy.percentile(..., method="linear")`` -- numpy's default, type 7 of
  Hyndman & Fan (1996), the same as R's default and Excel's PERCENTILE.INC: for n sorted samples
  x[0..n-1] the q-th percentile sits at fractional rank h = (n - 1) * q / 100 and is
  x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]).
  With few samples p99 is therefore an interpolation towards the maximum, not an observed value.
* ``std`` is the population standard deviation (ddof=0): the spread of the samples we have,
  not an estimate for a larger population.
* Throughput is derived from the *mean* latency (total work / total time of back-to-back calls):
  clips/s = batch / mean_s, frames/s = clips/s * frames per clip. The median is reported as the
  typical latency but is not used for throughput.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

PERCENTILE_METHOD = "linear"
PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("n", "mean", "median", "p90", "p95", "p99", "min", "max", "std")


def _as_array(samples: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(samples, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("no samples")
    if not np.isfinite(a).all():
        raise ValueError("samples contain NaN or Inf")
    return a


def percentile(samples: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0..100) with the documented method (numpy 'linear')."""
    return float(np.percentile(_as_array(samples), q, method=PERCENTILE_METHOD))


def latency_stats(samples: Sequence[float] | np.ndarray, unit: str = "ns") -> dict[str, float]:
    """Statistics in milliseconds of latency samples given in ``unit`` ('ns', 'us', 'ms' or 's').

    Returns n, mean, median, p90, p95, p99, min, max, std (population, ddof=0).
    """
    scale = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}
    if unit not in scale:
        raise ValueError(f"unknown unit {unit!r}")
    a = _as_array(samples) * scale[unit]
    p50, p90, p95, p99 = np.percentile(a, PERCENTILES, method=PERCENTILE_METHOD)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "median": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "min": float(a.min()),
        "max": float(a.max()),
        "std": float(a.std(ddof=0)),
    }


def scale_stats(stats: Mapping[str, float], factor: float) -> dict[str, float]:
    """Every latency field times ``factor`` (e.g. 1/N for per-clip figures of a batch of N)."""
    return {k: (int(v) if k == "n" else float(v) * factor) for k, v in stats.items()}


def throughput(mean_latency_ms: float, batch: int = 1, frames_per_clip: int = 1) -> dict[str, float]:
    """clips/s and frames/s of back-to-back calls, each processing ``batch`` clips."""
    if mean_latency_ms <= 0:
        raise ValueError("latency must be positive")
    clips = batch * 1000.0 / mean_latency_ms
    return {"clips_per_s": float(clips), "frames_per_s": float(clips * frames_per_clip)}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    """Least-squares y = slope * x + intercept, with R^2 = 1 - SS_res / SS_tot.

    R^2 is 1.0 for a perfect fit; when y is constant (SS_tot = 0) R^2 is 1.0 if the residuals
    are zero too, else 0.0. Needs at least two distinct x.
    """
    xa = np.asarray(x, dtype=np.float64).ravel()
    ya = np.asarray(y, dtype=np.float64).ravel()
    if xa.size != ya.size:
        raise ValueError("x and y differ in length")
    if xa.size < 2 or np.unique(xa).size < 2:
        raise ValueError("a linear fit needs at least two distinct x values")
    xm, ym = xa.mean(), ya.mean()
    sxx = float(((xa - xm) ** 2).sum())
    slope = float(((xa - xm) * (ya - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    res = ya - (slope * xa + intercept)
    ss_res = float((res ** 2).sum())
    ss_tot = float(((ya - ym) ** 2).sum())
    if ss_tot == 0.0:
        r2 = 1.0 if ss_res <= 1e-24 else 0.0
    else:
        r2 = 1.0 - ss_res / ss_tot
    return {"slope": slope, "intercept": intercept, "r2": float(r2), "n": int(xa.size)}


def normalise_distribution(counts: Mapping[Any, float]) -> dict[int, float]:
    """B' -> count (or weight) into B' -> probability (keys as int, zero weights dropped)."""
    items = {int(k): float(v) for k, v in counts.items() if float(v) > 0}
    total = sum(items.values())
    if total <= 0:
        raise ValueError("empty B' distribution")
    return {k: v / total for k, v in sorted(items.items())}


def expected_under(dist: Mapping[Any, float], value_at: Mapping[int, float]) -> float:
    """E[value(B')] for B' ~ dist. Every B' with positive weight must have a value."""
    p = normalise_distribution(dist)
    missing = [b for b in p if b not in value_at]
    if missing:
        raise KeyError(f"no value for B' {missing}")
    return float(sum(prob * float(value_at[b]) for b, prob in p.items()))


def expected_latency_throughput(dist: Mapping[Any, float], latency_ms_at: Mapping[int, float],
                                batch: int = 1, frames_per_clip: int = 1) -> dict[str, float]:
    """Expected clip latency and throughput when B' follows ``dist``.

    Latency is E[L(B')]. Throughput of a sequential stream is total clips / total time, i.e.
    batch / E[L] -- *not* E[batch / L], which would overstate it (Jensen).
    """
    e = expected_under(dist, latency_ms_at)
    return {"latency_ms": e, **throughput(e, batch, frames_per_clip)}


def histogram(values: Sequence[int]) -> dict[int, int]:
    """Counts of each integer value, sorted by value."""
    out: dict[int, int] = {}
    for v in values:
        out[int(v)] = out.get(int(v), 0) + 1
    return dict(sorted(out.items()))
