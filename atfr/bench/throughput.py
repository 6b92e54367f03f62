"""Seed 003's throughput protocol: the largest batch that fits, and clips/s measured at it.

Chen et al. (seed 003, supplementary Table 1) compare video models by FLOPs, the **maximum batch
size** that fits in the device's memory and the **throughput at that batch**. This module does the
same for exports, side by side in one run (``atfr bench OUT --throughput [--static S]``):

1. **Budget.** CPU (ONNX Runtime): ``--mem-budget GB`` of resident memory for the whole process
   (model, arena, inputs, Python), by default :data:`DEFAULT_FRACTION` of the memory available
   now (``MemAvailable``, or the cgroup's remaining limit if lower). GPU (TensorRT): the device
   memory free now times :data:`GPU_FRACTION`, measured per process with nvidia-smi. (The
   TensorRT path is written against the same probe contract but has not run here: no GPU.)
2. **Probes in child processes.** Every batch is tried in a fresh Python process, so its peak
   memory is its own (``VmHWM``; ORT's arena never shrinks) and an out-of-memory failure, even a
   kill by the OS, only ends the child. On CPU the child also caps its address space at its size
   after loading plus twice the budget (``RLIMIT_AS``; virtual size grows faster than RSS), so a
   runaway allocation fails inside ONNX Runtime or numpy instead of paging or inviting the OOM
   killer; the budget itself is checked on the peak RSS.
   Each probe runs the batch twice (ONNX Runtime's memory pattern makes the second run's
   peak the steady one).
3. **Memory model.** Peak memory is affine in the batch (weights and code once, activations and
   inputs per clip). Batches 1 and 2 give the line; each successful probe refits it on the two
   largest successes. A batch whose prediction exceeds the budget is *refused without running*.
4. **Bounded search.** Doubling from 2 while probes fit, then bisection between the largest batch
   that fit and the smallest that did not (failed, exceeded, or was refused), at most
   ``max_probes`` runs and never above ``max_batch``.
5. **Throughput** at the max batch: ``warmup`` untimed runs, then ``reps`` timed runs, in one
   child; clips/s = batch / median run time. If the repeated runs no longer fit (ORT's arena can
   grow past the single-run probe), a smaller batch is timed instead (the memory line shifted by
   the measured extra, or after an OOM the next smaller batch that fitted; at most two
   fallbacks) and reported as the max batch (``max_batch_search`` keeps the search's).

ATFR exports run front -> SGS -> back with the back grouped by B' (the runtime's batching). The B'
of each clip comes from the export's B' statistics (``bprime_stats`` of the manifest, cycled over
the batch) so throughput and GFLOPs describe the same workload; the SGS step still runs on every
clip's real features, so its cost is included. Static exports run ``Pipeline.infer``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from atfr.errors import ATFRError

DEFAULT_FRACTION = 0.5  # of available RAM: leaves room for the OS page cache and other processes
GPU_FRACTION = 0.9  # of free device memory
GIB = 1 << 30


@dataclass
class ThroughputOptions:
    exports: list[str]
    backend: str = "onnxruntime"
    mem_budget_gb: float | None = None
    max_batch: int = 512
    max_probes: int = 12
    warmup: int = 1
    reps: int = 3
    threads: int | None = None
    seed: int = 0
    probe_timeout_s: float = 600.0
    plugin: str | None = None  # TensorRT SGS plugin library


@dataclass
class Probe:
    batch: int
    status: str  # ok | over_budget (ran, peak > budget) | refused (predicted > budget, not run) | oom | error
    peak_bytes: int | None = None
    seconds: list[float] = field(default_factory=list)
    message: str = ""

    @property
    def fits(self) -> bool:
        return self.status == "ok"


# -- memory budget ---------------------------------------------------------------------------------
def available_ram_bytes() -> int | None:
    """MemAvailable, lowered to the cgroup (v2) limit minus its usage where one is set."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        lim = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        cur = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if lim != "max":
            room = int(lim) - cur
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def free_gpu_bytes() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return int(float(out.strip().splitlines()[0]) * 2**20)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def resolve_budget(backend: str, mem_budget_gb: float | None) -> tuple[int, str]:
    """(bytes, how it was chosen)."""
    if mem_budget_gb is not None:
        if not mem_budget_gb > 0:
            raise ATFRError(f"--mem-budget must be > 0 GB, got {mem_budget_gb}")
        return int(mem_budget_gb * GIB), f"--mem-budget {mem_budget_gb:g} GB"
    if backend == "tensorrt":
        free = free_gpu_bytes()
        if free is None:
            raise ATFRError("cannot read free GPU memory (nvidia-smi); pass --mem-budget GB")
        return int(free * GPU_FRACTION), f"{GPU_FRACTION:.0%} of free GPU memory ({free / GIB:.1f} GB)"
    avail = available_ram_bytes()
    if avail is None:
        raise ATFRError("cannot read available memory (/proc/meminfo); pass --mem-budget GB")
    return int(avail * DEFAULT_FRACTION), f"{DEFAULT_FRACTION:.0%} of available RAM ({avail / GIB:.1f} GB)"


# -- the search (pure; tested with fake probes) ------------------------------------------------------
class MemoryModel:
    """peak(b) = base + per_clip * b, from the two largest batches that fitted."""

    def __init__(self) -> None:
        self.points: dict[int, int] = {}

    def add(self, batch: int, peak: int | None) -> None:
        if peak is not None:
            self.points[batch] = int(peak)

    def predict(self, batch: int) -> float | None:
        if len(self.points) < 2:
            return None
        (b1, m1), (b2, m2) = sorted(self.points.items())[-2:]
        per_clip = max((m2 - m1) / (b2 - b1), 0.0)
        return m2 + per_clip * (batch - b2)


def find_max_batch(probe: Callable[[int], Probe], budget: int, max_batch: int = 512,
                   max_probes: int = 12) -> tuple[int, list[Probe]]:
    """Largest batch in 1..max_batch whose probe fits the budget (0 if batch 1 does not).

    ``probe(b)`` runs batch b and reports its peak memory; a batch fits if the probe succeeded and
    its peak is within ``budget``. Batches predicted over the budget are refused without a run.
    """
    log: list[Probe] = []
    model = MemoryModel()
    runs = 0

    def attempt(b: int) -> bool:
        nonlocal runs
        pred = model.predict(b)
        if pred is not None and pred > budget:
            log.append(Probe(b, "refused", int(pred), message=f"predicted {pred / GIB:.2f} GB > budget"))
            return False
        runs += 1
        r = probe(b)
        if r.status == "ok" and r.peak_bytes is not None and r.peak_bytes > budget:
            r = Probe(b, "over_budget", r.peak_bytes, r.seconds, "peak above budget")
        log.append(r)
        if r.fits:
            model.add(b, r.peak_bytes)
        return r.fits

    if max_batch < 1 or not attempt(1):
        return 0, log
    lo, hi = 1, None
    b = 2
    while b <= max_batch and runs < max_probes:  # doubling
        if attempt(b):
            lo, b = b, b * 2
        else:
            hi = b
            break
    if hi is None:  # doubling passed max_batch: try it directly before bisecting
        if lo < max_batch and runs < max_probes and attempt(max_batch):
            return max_batch, log
        hi = max_batch if lo < max_batch else max_batch + 1
    while hi - lo > 1 and runs < max_probes:  # bisection on [lo fits, hi does not]
        mid = (lo + hi) // 2
        if attempt(mid):
            lo = mid
        else:
            hi = mid
    return lo, log


# -- B' workload ----------------------------------------------------------------------------------
def bprime_assignment(manifest: Any, n: int) -> list[tuple[int, ...]]:
    """B' per SGS layer for each of n clips, cycling over the export's B' statistics."""
    if not manifest.sgs:
        return [()] * n
    layers = (manifest.bprime_stats or {}).get("layers") or []
    if len(layers) != len(manifest.sgs) or not all(lay.get("values") for lay in layers):
        return [tuple(layer.bins for layer in manifest.sgs)] * n  # no statistics: worst case B' = B
    rows = list(zip(*[[int(v) for v in lay["values"]] for lay in layers]))
    return [rows[i % len(rows)] for i in range(n)]


def gflops_for(manifest: Any, assignment: list[tuple[int, ...]]) -> float | None:
    """Mean GFLOPs per clip over the assignment (static: the static count)."""
    g = manifest.gflops or {}
    if not manifest.sgs:
        v = g.get("static", g.get("total"))
        return float(v) if v is not None else None
    table = {tuple(r["bprime"]): float(r["total"]) for r in g.get("vs_bprime", [])}
    vals = [table.get(tuple(bp)) for bp in assignment]
    if not vals or any(v is None for v in vals):
        return None
    return sum(vals) / len(vals)  # type: ignore[arg-type]


# -- child process ----------------------------------------------------------------------------------
def _vm_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _workload(pipe: Any, clips: list[Any], assignment: list[tuple[int, ...]]) -> Callable[[], None]:
    m = pipe.manifest
    if not m.sgs:
        return lambda: pipe.infer(clips)
    from .runner import back_feeds

    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, bp in enumerate(assignment):
        groups[bp].append(i)

    def step() -> None:
        fo = pipe.run_front(clips)
        pipe.run_sgs(fo)  # the real per-clip SGS work; the back then runs at the statistics' B'
        for bp, idx in groups.items():
            sub = {k: v[idx] for k, v in fo.items()}
            pipe.run_back(back_feeds(m, sub, list(bp)))
    return step


def _child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the export, run ``batch`` (warmup + reps, or once): {status, peak_bytes, seconds}."""
    try:
        import numpy as np

        from atfr.runtime.pipeline import Pipeline

        kw = {"plugin": spec["plugin"]} if spec["backend"] == "tensorrt" and spec.get("plugin") else {}
        pipe = Pipeline.load(spec["export"], backend=spec["backend"], threads=spec["threads"], **kw)
        rng = np.random.default_rng(spec["seed"])  # imports numpy.random before the cap below
        if spec["backend"] != "tensorrt" and spec.get("budget"):
            import resource
            vm = _vm_kib("VmSize")
            if vm:
                # A safety net against runaway allocations, not the budget check (that is VmHWM):
                # virtual size grows faster than RSS (malloc arenas, mmap reservations).
                cap = vm * 1024 + 2 * int(spec["budget"])
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        clips = [rng.standard_normal(s, dtype=np.float32) for s in pipe.manifest.clip_shapes(spec["batch"])]
        step = _workload(pipe, clips, [tuple(b) for b in spec["assignment"]])
        secs = []
        for i in range(spec["warmup"] + max(spec["reps"], 1)):
            t0 = time.perf_counter()
            step()
            if i >= spec["warmup"]:
                secs.append(time.perf_counter() - t0)
        if spec["backend"] == "tensorrt":
            from .env import gpu_memory_used_mb
            mb = gpu_memory_used_mb(os.getpid())
            peak = int(mb * 2**20) if mb is not None else None
        else:
            hwm = _vm_kib("VmHWM")
            peak = hwm * 1024 if hwm is not None else None
        return {"status": "ok", "peak_bytes": peak, "seconds": secs}
    except MemoryError:
        return {"status": "oom", "message": "MemoryError"}
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        low = msg.lower()
        oom = any(k in low for k in ("allocat", "out of memory", "bad_alloc", "memory", "failed to map"))
        return {"status": "oom" if oom else "error", "message": f"{type(e).__name__}: {msg}"}


def _child_main() -> None:
    """Entry point of a probe process: spec as JSON on stdin, one JSON result line on stdout."""
    spec = json.loads(sys.stdin.read())
    res = _child_run(spec)
    sys.stdout.write("\n" + json.dumps(res) + "\n")
    sys.stdout.flush()


def run_probe(spec: dict[str, Any], timeout_s: float) -> Probe:
    """Run one batch in a fresh Python process; a child killed by the OS counts as out of memory.

    A plain subprocess (not multiprocessing): callers need no ``if __name__ == "__main__"`` guard.
    """
    cmd = [sys.executable, "-c", "from atfr.bench.throughput import _child_main; _child_main()"]
    try:
        cp = subprocess.run(cmd, input=json.dumps(spec), capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return Probe(spec["batch"], "error", message=f"timed out after {timeout_s:.0f} s")
    msg = None
    for line in reversed(cp.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                pass
            break
    if msg is None:
        why = f"killed by signal {-cp.returncode}" if cp.returncode < 0 else f"exit code {cp.returncode}"
        tail = (cp.stderr.strip().splitlines() or [""])[-1][:160]
        return Probe(spec["batch"], "oom", message=f"child {why} without a result (out of memory?) {tail}".strip())
    return Probe(spec["batch"], msg["status"], msg.get("peak_bytes"), list(msg.get("seconds", [])),
                 msg.get("message", ""))


# -- one candidate, many candidates -------------------------------------------------------------------
def _fallback_batch(b: int, failed: Probe, mem: MemoryModel, fitted: list[int], budget: int) -> int:
    """The batch to time after the timed run at ``b`` did not fit: with a known peak, the timed
    run's extra memory over the probe's, taken as proportional to the batch, is added to the
    memory line's per-clip slope and the largest batch under the budget taken; after an OOM (no
    peak), the next smaller batch that fitted."""
    lower = [f for f in fitted if f < b]
    one_run = mem.points.get(b)
    if failed.peak_bytes is not None and one_run is not None and len(mem.points) >= 2:
        extra = max(failed.peak_bytes - one_run, 0) / b  # scales with the batch (activation-sized)
        (b1, m1), (b2, m2) = sorted(mem.points.items())[-2:]
        per_clip = max((m2 - m1) / (b2 - b1), 1.0)
        base = m2 - per_clip * b2
        guess = int((budget - base) // (per_clip + extra))
        return max(min(guess, b - 1), 0)
    return lower[0] if lower else 0


def measure_candidate(export: str, o: ThroughputOptions, budget: int) -> dict[str, Any]:
    from atfr.runtime.manifest import load_manifest

    m = load_manifest(export, check=True)
    base = {"export": str(export), "backend": o.backend, "threads": o.threads, "plugin": o.plugin,
            "seed": o.seed, "budget": budget}

    def spec(b: int, warmup: int, reps: int) -> dict[str, Any]:
        return {**base, "batch": b, "warmup": warmup, "reps": reps,
                "assignment": [list(x) for x in bprime_assignment(m, b)]}

    t0 = time.perf_counter()
    # Two runs per probe: ONNX Runtime plans a memory pattern on the first run of a shape and
    # allocates it on the second while the arena still holds the first run's blocks, so the
    # steady-state peak (measured: up to 1.5x the first run's) only shows from run 2 on.
    best, log = find_max_batch(lambda b: run_probe(spec(b, 1, 1), o.probe_timeout_s), budget,
                               o.max_batch, o.max_probes)
    search_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "name": m.name, "export": str(export), "arch": m.arch, "kind": "atfr" if m.sgs else "static",
        "untrained": bool(m.raw.get("untrained", False)),
        "input": {"frames": m.input.num_frames, "size": m.input.crop_size, "pathways": m.num_pathways},
        "max_batch": best, "search": [asdict(p) for p in log], "search_seconds": search_s,
    }

    def workload_stats(batch: int) -> None:  # GFLOPs and mean B' of the clips a batch runs
        assignment = bprime_assignment(m, max(batch, 1))
        out["gflops"] = gflops_for(m, assignment)
        if m.sgs:
            out["bprime_mean"] = [sum(a[j] for a in assignment) / len(assignment) for j in range(len(m.sgs))]
            out["bprime_source"] = (m.bprime_stats or {}).get("source", "none (B' = B)")

    workload_stats(best)
    if best < 1:
        out.update(throughput=None, status="batch 1 does not fit the budget")
        return out
    # The timed run repeats the batch more often than a probe; should ORT's arena still grow past
    # the probe (new back shapes per B' group, fragmentation), time a smaller batch instead
    # (:func:`_fallback_batch`, at most twice) and report that one as the max.
    fitted = sorted({p.batch for p in log if p.fits and p.batch <= best}, reverse=True)
    mem = MemoryModel()
    for p in log:
        if p.fits:
            mem.add(p.batch, p.peak_bytes)
    out["timed_attempts"] = []
    final = None
    b = best
    for _ in range(3):
        final = run_probe(spec(b, o.warmup, o.reps), o.probe_timeout_s)
        if final.fits and final.seconds and (final.peak_bytes or 0) <= budget:
            break
        out["timed_attempts"].append(asdict(final))
        b = _fallback_batch(b, final, mem, fitted, budget)
        if b < 1:
            break
    if final is None or not final.fits or not final.seconds or (final.peak_bytes or 0) > budget:
        why = f"{final.status} {final.message}".strip() if final else "no batch fitted"
        out.update(throughput=None, status=f"timed run failed: {why}")
        return out
    if final.batch != best:
        out["max_batch_search"] = best
        out["max_batch"] = best = final.batch
        workload_stats(best)
    out["final"] = asdict(final)
    med = statistics.median(final.seconds)
    out.update(status="ok", throughput=best / med, median_batch_seconds=med, peak_bytes=final.peak_bytes)
    return out


def run_throughput(o: ThroughputOptions, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    if not o.exports:
        raise ATFRError("throughput: no export to measure")
    from atfr.runtime.manifest import load_manifest

    for e in o.exports:
        if not Path(e).exists():
            raise ATFRError(f"{e} does not exist")
        load_manifest(e)  # a corrupt, edited or hostile export: one line before any progress line
    budget, how = resolve_budget(o.backend, o.mem_budget_gb)
    rows = []
    for e in o.exports:
        if progress:
            progress(f"throughput: {e} ...")
        rows.append(measure_candidate(e, o, budget))
    ref = rows[0]
    for r in rows:
        r["vs_first"] = {k: (r[k] / ref[k] if r.get(k) and ref.get(k) else None)
                         for k in ("throughput", "max_batch", "gflops")}
    from .env import capture
    return {"protocol": "seed 003: max batch within the memory budget, clips/s at that batch",
            "backend": o.backend, "budget_bytes": budget, "budget_source": how,
            "options": {k: v for k, v in asdict(o).items() if k != "exports"},
            "environment": capture(o.threads), "candidates": rows,
            "untrained": any(r["untrained"] for r in rows)}


def to_markdown(rep: dict[str, Any]) -> str:
    lines = [f"# Throughput at the maximum batch ({rep['backend']})", "",
             f"Memory budget {rep['budget_bytes'] / GIB:.2f} GB ({rep['budget_source']}); "
             f"clips/s = batch / median of {rep['options']['reps']} timed runs after {rep['options']['warmup']} warm-up.",
             ""]
    if rep.get("untrained"):
        lines += ["**Untrained model(s) (atfr init): throughput and GFLOPs are real, predictions mean nothing.**", ""]
    lines += ["| candidate | kind | input | GFLOPs/clip | max batch | clips/s | peak memory | vs first (clips/s) |",
              "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rep["candidates"]:
        g = f"{r['gflops']:.2f}" if r.get("gflops") else "-"
        tp = f"{r['throughput']:.2f}" if r.get("throughput") else r.get("status", "-")
        pk = f"{r['peak_bytes'] / GIB:.2f} GB" if r.get("peak_bytes") else "-"
        vs = r["vs_first"].get("throughput")
        inp = f"{r['input']['frames']}x{r['input']['size']}^2"
        lines.append(f"| {r['name']} | {r['kind']} | {inp} | {g} | {r['max_batch']} | {tp} | {pk} | "
                     f"{f'{vs:.2f}' if vs else '-'} |")
    return "\n".join(lines) + "\n"


def run_cli(args: Any) -> int:
    """``atfr bench OUTDIR --throughput``: OUTDIR (+ --static) as candidates; report beside bench's."""
    from atfr.fileio import check_writable, write_json_atomic, write_text_atomic

    if getattr(args, "out", None):
        out = Path(args.out)
    else:  # inside the export folder: never through a link planted there (runtime/export_paths.py)
        from atfr.runtime.export_paths import inside

        out = inside(args.outdir, "bench", "the default report folder")
    files = {"json": out / "throughput.json", "md": out / "throughput.md"}
    for f in files.values():
        check_writable(f, args.force)
    exports = [args.outdir] + ([args.static] if getattr(args, "static", None) else [])
    o = ThroughputOptions(exports=exports, backend="onnxruntime" if args.backend == "auto" else args.backend,
                          mem_budget_gb=args.mem_budget, threads=args.threads, seed=args.seed,
                          # each run is a whole max batch: --warmup/--iters are capped at 2/5 here
                          warmup=max(1, min(args.warmup, 2)), reps=max(1, min(args.iters, 5)))
    rep = run_throughput(o, progress=lambda s: print(s, file=sys.stderr))
    write_json_atomic(files["json"], rep)
    md = to_markdown(rep)
    write_text_atomic(files["md"], md)
    print(md, end="")
    print(f"wrote {files['json']}, {files['md']}")
    return 0
