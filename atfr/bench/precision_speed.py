"""Is a reduced-precision graph actually faster on this ONNX Runtime provider? Measured, not guessed.

ONNX Runtime's CPU provider has no fp16 convolution kernels (fp16 graphs run through casts) and
no fused QLinearConv for 3D convolutions (Q/DQ graphs dequantize around float Conv3d), so on CPU
the fp16 and INT8 graphs are usually no faster than fp32, often slower. TensorRT (or a GPU
provider) is where they pay off. :func:`precision_speed` times the export's fp32 pipeline and
the requested precisions side by side on one random clip (interleaved rounds, a few seconds);
:func:`slower_than_fp32_lines` turns that into the one line ``atfr calibrate``, ``atfr verify
--precision`` and ``atfr bench`` print. Torch-free.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_PROVIDER = "CPUExecutionProvider"
# "not faster" = the reduced-precision median is above this fraction of fp32's: a speed-up under
# 5% is within the noise of a few rounds and not worth a precision change.
NOT_FASTER = 0.95


def _pipeline(m: Any, precision: str, threads: int | None, provider: str) -> Any:
    from atfr.calibration.accuracy import precision_graphs
    from atfr.runtime.backends import OrtRunner
    from atfr.runtime.pipeline import Pipeline, SGSStep

    f, b = precision_graphs(m, precision)
    return Pipeline(m, OrtRunner(m.path(f), threads, providers=[provider]),
                    OrtRunner(m.path(b), threads, providers=[provider]), SGSStep(m) if m.sgs else None)


def available_precisions(outdir: str | Path) -> list[str]:
    """fp16 / int8 precisions whose graphs the export has (as deployed: see precision_graphs)."""
    from atfr.calibration.accuracy import precision_graphs
    from atfr.errors import ATFRError
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(outdir)
    out = []
    for p in ("fp16", "int8"):
        try:
            precision_graphs(m, p)
            out.append(p)
        except ATFRError:
            pass
    return out


def precision_speed(outdir: str | Path, precisions: Sequence[str], provider: str = DEFAULT_PROVIDER,
                    threads: int | None = None, rounds: int = 4, warmup: int = 1,
                    budget_s: float = 20.0) -> dict[str, Any]:
    """Median ms per clip of fp32 and each of ``precisions`` (interleaved rounds on one seeded
    random clip). Stops early after ``budget_s`` (at least one timed round). Ratios are
    precision / fp32 (> 1: slower than fp32)."""
    from atfr.bench.timing import Candidate, run_interleaved
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(outdir)
    precs = [p for p in dict.fromkeys(precisions) if p != "fp32"]
    pipes = {"fp32": _pipeline(m, "fp32", threads, provider)}
    for p in precs:
        pipes[p] = _pipeline(m, p, threads, provider)
    rng = np.random.default_rng(0)
    clip = [rng.standard_normal(s, dtype=np.float32) for s in m.clip_shapes(1)]
    cands = [Candidate(p, (lambda pl=pl: pl.infer(clip))) for p, pl in pipes.items()]
    t0 = time.perf_counter()
    run_interleaved(cands, 1, warmup)  # warmup + one round tells how long a round takes
    per_round = max(time.perf_counter() - t0, 1e-3) / (warmup + 1)
    n = int(max(1, min(rounds, budget_s // per_round)))
    res = run_interleaved(cands, n, 0)
    med = {p: float(t.stats()["median"]) for p, t in res.items()}
    return {"provider": provider, "threads": threads, "rounds": n, "median_ms": med,
            "ratio_vs_fp32": {p: med[p] / med["fp32"] for p in precs}}


def slower_than_fp32_lines(result: dict[str, Any]) -> list[str]:
    """One line per precision that is not at least 5% faster than fp32 in ``result``."""
    lines = []
    med = result["median_ms"]
    for p, r in result["ratio_vs_fp32"].items():
        if r <= NOT_FASTER:
            continue
        how = f"{r:.2f}x slower than" if r > 1.0 / NOT_FASTER else "no faster than"
        lines.append(f"{p} graphs run {how} fp32 on ONNX Runtime {result['provider']} here (measured "
                     f"{med[p]:.1f} vs {med['fp32']:.1f} ms per clip): for the {p} speed-up build TensorRT "
                     f"engines (atfr build --precision {p}) or use a GPU provider")
    return lines


def precision_speed_lines(outdir: str | Path, precisions: Sequence[str], provider: str = DEFAULT_PROVIDER,
                          threads: int | None = None) -> list[str]:
    """The hook for calibrate / verify --precision: measure quickly, return the lines to print
    (empty when every requested precision is faster, or none is fp16/int8). Never raises: a
    failed measurement is reported as a line, not an error of the command."""
    wanted = [p for p in precisions if p in ("fp16", "int8")]
    if not wanted or provider != DEFAULT_PROVIDER and provider not in _providers():
        return []
    try:
        return slower_than_fp32_lines(precision_speed(outdir, wanted, provider, threads))
    except Exception as e:  # noqa: BLE001 - informative only; the command's own result stands
        return [f"could not time {'/'.join(wanted)} against fp32 ({type(e).__name__}: {str(e)[:120]})"]


def _providers() -> list[str]:
    try:
        import onnxruntime as ort
        return list(ort.get_available_providers())
    except ImportError:
        return []
