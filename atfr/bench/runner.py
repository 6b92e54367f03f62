"""The benchmark itself: what ``atfr bench`` measures and how. Torch-free unless ``torch_checkpoint``.

Measured, in one interleaved round-robin loop (see :mod:`atfr.bench.timing`) so that machine
noise hits every candidate alike:

* ``atfr.front``: the fixed-shape front graph on a batch of random clips (seeded);
* ``atfr.sgs``: the runtime's SGS step over that batch's front outputs (per clip, as the
  pipeline does);
* ``atfr.back@B'``: the dynamic back graph fed T'=B' tensors (B' frames of the real front
  features, see :func:`back_feeds`), for each requested B'. With two
  SGS pathways (SlowFast) both vary together, proportionally: the curve's x is B' of the layer
  with the most bins (B_max) and layer p gets max(1, round(x * B_p / B_max));
* ``atfr.e2e``: ``Pipeline.infer`` on the batch (input checks, front, SGS, grouped back);
* with a static export: its front, back and end-to-end (end-to-end = what the runtime runs for
  it: model.onnx on ONNX Runtime); with a checkpoint: PyTorch eager (``torch.inference_mode``)
  in both memory layouts, the faster one being PyTorch's figure;
* ``atfr.model``: the ATFR export's monolithic model.onnx on the same clips (ONNX Runtime);
* with ``threads``: the ATFR and static end-to-end again at ONNX Runtime's default threads, the
  setting atfr run/infer/predict use (``*.e2e@default_threads``);
* ``fp16.e2e`` / ``int8.e2e`` where the export has those graphs: are they faster than fp32 here?
  (:mod:`atfr.bench.precision_speed`).

The load average is recorded before and after the timing; a loaded machine gets a warning.

Derived: per clip latency at each B' = (front + SGS + back(B')) medians / batch; the linear fit of
back latency vs B'; expected latency / throughput under the B' distribution of ``videos`` (or the
manifest's ``bprime_stats``; B' values not measured are linearly interpolated on the curve). With
batch > 1 the curve assumes every clip of a batch has the same B' (one back call).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atfr.errors import ATFRError, SourceError
from atfr.runtime.manifest import Manifest
from atfr.runtime.pipeline import Pipeline

from . import env as envmod
from .report import SCHEMA_VERSION
from .stats import expected_latency_throughput, histogram, latency_stats, linear_fit, throughput
from .timing import Candidate, Timings, measure_overhead, run_interleaved

CLIPS_PER_VIDEO = 4  # uniformly spaced windows per video for the B' distribution
TRT_FIELDS = ("host_latency", "gpu_compute", "enqueue", "h2d", "d2h")
TORCH_LAYOUT_CANDIDATES = {"contiguous": "torch.e2e", "channels_last_3d": "torch.e2e.channels_last_3d"}


@dataclass
class BenchOptions:
    export: str
    backend: str = "onnxruntime"
    providers: str | None = None  # ONNX Runtime execution provider: cpu (default), cuda, tensorrt
    warmup: int = 5
    iters: int = 30
    batch: int = 1
    bprime: str | list[int] = "all"
    videos: str | None = None
    static: str | None = None
    torch_checkpoint: str | None = None
    threads: int | None = None
    seed: int = 0
    progress: bool | None = None  # None: tqdm decides (a bar on a terminal only)
    measure_overhead: bool = True
    bins: int | None = None  # run-time B_run (--bins); None: the trained B
    argv: list[str] = field(default_factory=list)


# -- B' planning -----------------------------------------------------------------------------------
def parse_bprime(spec: str | list[int], bmax: int) -> list[int]:
    if isinstance(spec, list):
        vals = spec
    elif str(spec).strip().lower() == "all":
        vals = list(range(1, bmax + 1))
    else:
        try:
            vals = [int(v) for v in str(spec).replace(" ", "").split(",") if v]
        except ValueError:
            raise ATFRError(f"--bprime must be 'all' or a comma-separated list of integers, got {spec!r}") from None
    if bmax < 1:
        return []
    bad = [v for v in vals if not 1 <= v <= bmax]
    if bad:
        raise ATFRError(f"--bprime {bad[0]} is outside 1..{bmax} (B of this export)")
    if not vals:
        raise ATFRError("--bprime: empty list")
    return sorted(set(vals))


def per_layer_bprime(m: Manifest, x: int) -> list[int]:
    """B' per SGS layer for curve position x (1..B_max): proportional, at least 1."""
    bmax = max(l.bins for l in m.sgs)
    return [max(1, min(l.bins, int(round(x * l.bins / bmax)))) for l in m.sgs]


def curve_x(m: Manifest, bp: tuple[int, ...] | list[int]) -> int:
    """The curve position of a measured B' tuple: B' of the layer with the most bins."""
    i = max(range(len(m.sgs)), key=lambda k: m.sgs[k].bins)
    return int(bp[i])


def back_feeds(m: Manifest, front_out: dict[str, np.ndarray], bps: list[int]) -> dict[str, np.ndarray]:
    """Back inputs with T'=B' per SGS pathway, built from the real front features: B' frames of
    feat{p} at linspace(0, T-1, B') (SGS outputs are weighted sums of these frames, so the values,
    their range and any data-dependent cost such as denormals stay realistic). Pass-through
    pathways get their front features unchanged."""
    feeds: dict[str, np.ndarray] = {}
    for p in range(m.num_pathways):
        layer = m.sgs_for(p)
        f = front_out[f"feat{p}"]
        if layer is None:
            feeds[f"feat{p}"] = f
        else:
            b = bps[m.sgs.index(layer)]
            idx = np.round(np.linspace(0, f.shape[2] - 1, b)).astype(np.int64)
            feeds[f"sgs{p}"] = np.ascontiguousarray(f[:, :, idx])
    return feeds


def back_steps(m: Manifest, curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two SGS pathways (SlowFast): the back's cost jumps with the slow pathway's B' and grows with
    the fast one's in between, so one line over the curve misleads. Per slow step (the layer with
    fewer bins): its curve points, their mean, and the fit over the step where it has >= 2 points."""
    slow = min(range(len(m.sgs)), key=lambda k: m.sgs[k].bins)
    steps = []
    for sb in sorted({c["bprime_per_layer"][slow] for c in curve}):
        pts = [c for c in curve if c["bprime_per_layer"][slow] == sb]
        ys = [c["back"]["median"] for c in pts]
        row: dict[str, Any] = {"slow_pathway": m.sgs[slow].pathway, "slow_bprime": sb,
                               "bprime": [c["bprime"] for c in pts], "back_median_ms": ys,
                               "mean_back_ms": float(np.mean(ys)), "fit": None}
        if len({c["bprime"] for c in pts}) >= 2:
            row["fit"] = linear_fit([c["bprime"] for c in pts], ys)
        steps.append(row)
    return steps


# -- inputs ----------------------------------------------------------------------------------------
def random_clips(m: Manifest, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s, dtype=np.float32) for s in m.clip_shapes(batch)]


def video_windows(n: int, spec: Any) -> list[np.ndarray]:
    """Frame indices of CLIPS_PER_VIDEO uniformly spaced windows of num_frames frames at
    sampling_rate in a video of n frames; a short video is looped, as the official test loader
    pads by repetition."""
    sr = max(1, spec.sampling_rate)
    need = spec.num_frames * sr
    offs = np.arange(0, need, sr)[: spec.num_frames]
    if n <= need:
        return [offs % n]
    starts = sorted(set(int(v) for v in np.linspace(0, n - need, CLIPS_PER_VIDEO).astype(int)))
    return [s0 + offs for s0 in starts]


def video_clips(folder: str, m: Manifest, limit_videos: int = 200,
                reduce: Callable[[list[np.ndarray]], Any] | None = None) -> tuple[list[Any], str]:
    """Decode videos with OpenCV into model inputs (:func:`video_windows`, through the runtime's
    own preprocessing). Each video is decoded once, keeping only the windows' frames, and each
    window is preprocessed as soon as it is complete (``runtime.video.sources.decode_clips``), so memory
    does not grow with video length. ``reduce``: applied to each clip right away, and only its
    result is kept (e.g. the clip's B'), so not even the clips pile up. Returns (clips or their
    reductions, description of the transform)."""
    from atfr.runtime.video.preprocess import Preprocessor
    from atfr.runtime.video.sources import VIDEO_EXTS, decode_clips, videos_in

    root = Path(folder)
    if not root.is_dir():
        raise ATFRError(f"--videos {root}: not a directory")
    files = videos_in(root)[:limit_videos]
    if not files:
        raise ATFRError(f"--videos {root}: no video files ({', '.join(VIDEO_EXTS)})")
    spec = m.input
    pre = Preprocessor(spec)
    clips: list[Any] = []
    for f in files:
        try:
            got, _, _ = decode_clips(f, lambda n, fps: video_windows(n, spec),
                                     lambda j, fr: (reduce or (lambda c: c))(pre.inputs(fr, (1,))))
        except SourceError:
            continue
        clips.extend(got)
    if not clips:
        raise ATFRError(f"--videos {root}: OpenCV could not decode any of {len(files)} file(s)")
    return clips, "runtime Preprocessor (official test transform, centre crop)"


def bprime_distribution(pipe: Pipeline, videos: str | None) -> dict[str, Any] | None:
    m = pipe.manifest
    if not m.sgs:
        return None
    if videos:
        xs, how = video_clips(videos, m, reduce=lambda c: curve_x(m, pipe.run_sgs(pipe.run_front(c))[0][1]))
        return {"source": f"videos in {videos} ({CLIPS_PER_VIDEO} windows per video; preprocessing: {how})",
                "counts": histogram(xs)}
    bs = m.bprime_stats or {}
    layers = bs.get("layers") or []
    if layers:
        i = max(range(len(layers)), key=lambda k: int(layers[k].get("max", 0)))
        vals = [int(v) for v in layers[i].get("values", [])]
        if vals:
            return {"source": f"manifest bprime_stats ({bs.get('source', 'export')})", "counts": histogram(vals)}
    return None


# -- GFLOPs ----------------------------------------------------------------------------------------
def gflops_table(m: Manifest, xs: list[int], torch_model: Any = None) -> dict[str, Any]:
    """GFLOPs per clip at each curve position, and of the full model.

    Sources, best first: the counter on the PyTorch model (exact, needs --torch); a per-B' table in
    the manifest ('vs_bprime' rows); the manifest's single entry at B'=B with the back and the SGS
    aggregation scaled by B'/B (approximate: a 3D conv stack is linear in T' up to temporal
    padding/stride effects). Empty when none is available.
    """
    g = dict(m.gflops or {})
    out: dict[str, Any] = {"source": "none", "at_B": None, "static": g.get("static"), "per_bprime": {}}
    if torch_model is not None and m.sgs:
        try:
            from atfr.models.flops import gflops_vs_bprime
            rows = gflops_vs_bprime(torch_model, [s for s in m.clip_shapes(1)])
            table = {tuple(r["bprime"]): r for r in rows}
            for x in xs:
                r = table.get(tuple(per_layer_bprime(m, x)))
                if r:
                    out["per_bprime"][x] = float(r["total"])
            out["static"] = float(rows[0]["static"])
            out["source"] = "atfr.models.flops on the --torch model (exact)"
        except Exception as e:  # noqa: BLE001 - informative only
            out["error"] = f"{type(e).__name__}: {e}"
    if not out["per_bprime"] and isinstance(g.get("vs_bprime"), list):
        for r in g["vs_bprime"]:
            bp = r.get("bprime")
            if isinstance(bp, list) and bp and r.get("total") is not None:
                x = curve_x(m, bp)
                if x in xs and list(bp) == per_layer_bprime(m, x):
                    out["per_bprime"][x] = float(r["total"])
        if out["per_bprime"]:
            out["source"] = "manifest gflops.vs_bprime"
    if not out["per_bprime"] and all(k in g for k in ("front", "sgs", "back")) and m.sgs:
        embed = float(g.get("sgs_embed", 0.0))
        bmax = max(l.bins for l in m.sgs)
        for x in xs:
            f = x / bmax
            out["per_bprime"][x] = float(g["front"]) + embed + (float(g["sgs"]) - embed) * f + float(g["back"]) * f
        out["source"] = "manifest gflops at B'=B, back and SGS aggregation scaled by B'/B (approximate)"
    if "total" in g:
        out["at_B"] = float(g["total"])
    elif m.sgs and out["per_bprime"]:
        out["at_B"] = out["per_bprime"].get(max(l.bins for l in m.sgs))
    if not m.sgs and "total" in g:
        out["source"] = "manifest gflops"
    out["per_bprime"] = {str(k): v for k, v in sorted(out["per_bprime"].items())}
    return out


# -- torch eager (lazy) ----------------------------------------------------------------------------
def torch_candidate(checkpoint: str, clips: list[np.ndarray], threads: int | None
                    ) -> tuple[dict[str, Callable], dict[str, Any], Any]:
    """PyTorch eager on the same clips, in both memory layouts: {"contiguous": fn,
    "channels_last_3d": fn} (the latter only where the model converts). Which is faster depends on
    the CPU and the model (channels_last_3d was 1.5-9% slower for X3D-S on the 2-core CPU), so the
    bench times both and reports the faster as PyTorch's figure.

    Before torch (and its OpenMP runtime) is first imported, OMP_WAIT_POLICY defaults to PASSIVE
    in this process: interleaved with ONNX Runtime, OpenMP workers that keep spinning after each
    torch call would steal the cores from the next candidate (and oversubscribed spin barriers
    slow torch itself by orders of magnitude on a busy machine). Set OMP_WAIT_POLICY yourself to
    override; the value used is in the report."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import copy

    import torch

    from atfr.models.checkpoint import load_checkpoint
    if threads:
        torch.set_num_threads(int(threads))
    lm = load_checkpoint(checkpoint)
    model = lm.model.eval()
    model.batch_independent = True
    xs = [torch.from_numpy(c.copy()) for c in clips]
    info: dict[str, Any] = {"checkpoint": str(checkpoint), "channels_last_3d": None, "threads": torch.get_num_threads(),
                            "torch_version": torch.__version__, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                            "layouts_timed": ["contiguous"]}
    with torch.inference_mode():
        _, k = model.forward_with_bprime(xs)
    info["bprime"] = [[int(v) for v in row] for row in k.tolist()]

    def call(mod: Any, inp: list[Any]) -> Callable[[], Any]:
        def fn() -> Any:
            with torch.inference_mode():
                return mod(inp)
        return fn

    fns = {"contiguous": call(model, xs)}
    try:
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)  # .to() works in place: a copy
        xcl = [x.contiguous(memory_format=torch.channels_last_3d) for x in xs]
        with torch.inference_mode():
            cl(xcl)
        fns["channels_last_3d"] = call(cl, xcl)
        info["layouts_timed"].append("channels_last_3d")
    except Exception as e:  # noqa: BLE001 - best effort: the default layout alone
        info["channels_last_3d_error"] = f"{type(e).__name__}: {str(e)[:120]}"
    return fns, info, lm.model


def _trt_probe(pipe: Pipeline) -> Callable[[], dict[str, float] | None] | None:
    """TensorRT: a backend exposing ``last_timings`` (dict of ms with trtexec's vocabulary:
    host_latency, gpu_compute, enqueue, h2d, d2h) on the pipeline or its runners is sampled after
    every end-to-end call. ONNX Runtime exposes nothing: the report's 'tensorrt' block is null."""
    if pipe.backend != "tensorrt":
        return None
    srcs = [o for o in (pipe, pipe.front, pipe.back) if hasattr(o, "last_timings")]
    if not srcs:
        return None

    def probe() -> dict[str, float] | None:
        tot: dict[str, float] = {}
        for o in srcs:
            for k, v in (getattr(o, "last_timings", None) or {}).items():
                if k in TRT_FIELDS and v is not None:
                    tot[k] = tot.get(k, 0.0) + float(v)
            if o is pipe and tot:
                break  # the pipeline's own totals already cover its runners
        return tot or None
    return probe


def _direct_call(runner: Any, feeds: dict[str, np.ndarray]) -> Callable[[], Any] | None:
    sess = getattr(runner, "session", None)
    if sess is None or not hasattr(sess, "run"):
        return None
    names = list(runner.output_names)
    fd = {k: feeds[k] for k in runner.input_names}
    return lambda: sess.run(names, fd)


# -- the benchmark ---------------------------------------------------------------------------------
def run_benchmark(o: BenchOptions) -> dict[str, Any]:
    if o.iters < 1:
        raise ATFRError("--iters must be >= 1")
    if o.warmup < 0:
        raise ATFRError("--warmup must be >= 0")
    if o.batch < 1:
        raise ATFRError("--batch must be >= 1")
    if o.threads is not None and o.threads < 1:
        raise ATFRError("--threads must be >= 1")
    warnings: list[str] = []
    env = envmod.capture(o.threads)
    warnings += env.pop("warnings", [])
    sampler = envmod.TegrastatsSampler().start()
    try:
        from atfr.runtime.adafuse_clip import is_adafuse_export

        if is_adafuse_export(o.export):  # clip and online graphs (atfr.bench.adafuse_run)
            from .adafuse_run import run_adafuse
            return run_adafuse(o, env, warnings, sampler)
        return _run(o, env, warnings, sampler)
    finally:
        sampler.stop()


def _run(o: BenchOptions, env: dict[str, Any], warnings: list[str], sampler: envmod.TegrastatsSampler) -> dict[str, Any]:
    pipe = Pipeline.load(o.export, o.backend, threads=o.threads, providers=o.providers, bins=o.bins)
    m = pipe.manifest
    bmax = max((l.bins for l in m.sgs), default=0)
    xs = parse_bprime(o.bprime, bmax)
    clips = random_clips(m, o.batch, o.seed)
    front_out = pipe.run_front(pipe.check_inputs(clips))
    per_clip = pipe.run_sgs(front_out)
    e2e_bp = [list(bp) for _, bp in per_clip]
    if len(m.sgs) > 1:
        warnings.append("two SGS pathways: the B' curve varies both layers together, proportionally "
                        "(x = B' of the layer with the most bins)")

    cands: list[Candidate] = [Candidate("atfr.front", lambda: pipe.run_front(clips))]
    if m.sgs:
        cands.append(Candidate("atfr.sgs", lambda: pipe.run_sgs(front_out)))
    feeds_at: dict[int, dict[str, np.ndarray]] = {}
    for x in xs:
        feeds = back_feeds(m, front_out, per_layer_bprime(m, x))
        feeds_at[x] = feeds
        cands.append(Candidate(f"atfr.back@{x}", (lambda f=feeds: pipe.run_back(f))))
    if not m.sgs:  # a static export benchmarked on its own: back on the front's output
        nf = {m.back_input_name(p): front_out[f"feat{p}"] for p in range(m.num_pathways)}
        feeds_at[0] = nf
        cands.append(Candidate("atfr.back", lambda: pipe.run_back(nf)))
    cands.append(Candidate("atfr.e2e", lambda: pipe.infer(clips), probe=_trt_probe(pipe)))

    static_info: dict[str, Any] | None = None
    spipe: Pipeline | None = None
    if o.static:
        spipe = Pipeline.load(o.static, o.backend, threads=o.threads, providers=o.providers)
        sm = spipe.manifest
        if [tuple(s) for s in sm.clip_shapes(o.batch)] != [tuple(s) for s in m.clip_shapes(o.batch)]:
            raise ATFRError(f"--static {o.static}: its input {sm.clip_shapes(1)} differs from the ATFR export's "
                            f"{m.clip_shapes(1)}; export both at the same --frames/--size")
        if sm.sgs:
            warnings.append(f"--static {o.static} has SGS layers: it is not a static model")
        s_front = spipe.run_front(clips)
        s_feeds = {sm.back_input_name(p): s_front[f"feat{p}"] for p in range(sm.num_pathways)}
        if sm.sgs:
            s_feeds = spipe.run_sgs(s_front)[0][0] if o.batch == 1 else s_feeds
        cands += [Candidate("static.front", lambda: spipe.run_front(clips)),
                  Candidate("static.back", lambda: spipe.run_back(s_feeds)),
                  Candidate("static.e2e", lambda: spipe.infer(clips))]
        static_info = {"export": str(o.static), "name": sm.name, "arch": sm.arch}

    extra: dict[str, Any] = {"load_average_before": env.get("cpu", {}).get("load_average")}
    # -- what users run beside the lab setting: ORT default threads when --threads is given --
    if o.threads is not None:
        dpipe = Pipeline.load(o.export, o.backend, providers=o.providers)
        cands.append(Candidate("atfr.e2e@default_threads", lambda: dpipe.infer(clips)))
        if o.static:
            dspipe = Pipeline.load(o.static, o.backend, providers=o.providers)
            cands.append(Candidate("static.e2e@default_threads", lambda: dspipe.infer(clips)))
    # -- the monolithic model.onnx of the ATFR export (one ORT session, SGS as ONNX ops) --
    if pipe.backend == "onnxruntime" and "model" in m.graphs:
        from atfr.runtime.backends import OrtRunner

        mono = OrtRunner(m.path("model"), o.threads)
        mono_feeds = {f"clip{p}": c for p, c in enumerate(clips)}
        cands.append(Candidate("atfr.model", lambda: mono.run(mono_feeds)))
    # -- reduced-precision graphs of the export, if any: are they faster on this provider? --
    if pipe.backend == "onnxruntime":
        from .precision_speed import DEFAULT_PROVIDER, _pipeline, available_precisions

        for prec in available_precisions(o.export):
            pp = _pipeline(m, prec, o.threads, DEFAULT_PROVIDER)
            cands.append(Candidate(f"{prec}.e2e", (lambda pp=pp: pp.infer(clips))))

    torch_info: dict[str, Any] | None = None
    torch_model = None
    if o.torch_checkpoint:
        try:
            fns, info, torch_model = torch_candidate(o.torch_checkpoint, clips, o.threads)
            cands += [Candidate(TORCH_LAYOUT_CANDIDATES[k], fn) for k, fn in fns.items()]
            torch_info = {**info, "error": None}
        except ATFRError:
            raise
        except Exception as e:  # noqa: BLE001 - best effort
            torch_info = {"checkpoint": str(o.torch_checkpoint), "end_to_end": None,
                          "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            warnings.append(f"PyTorch eager skipped: {torch_info['error']}")

    # -- time everything, interleaved --
    total = o.warmup + o.iters
    bar = None
    try:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=f"bench {len(cands)} candidates", unit="round", leave=False,
                   disable=(None if o.progress is None else not o.progress), file=sys.stderr)
    except ImportError:
        pass
    t_start = time.perf_counter()
    try:
        res = run_interleaved(cands, o.iters, o.warmup, progress=(bar.update if bar is not None else None),
                              seed=o.seed)
    finally:
        if bar is not None:
            bar.close()
    wall_s = time.perf_counter() - t_start
    try:
        extra["load_average_after"] = list(os.getloadavg())
    except (AttributeError, OSError):
        extra["load_average_after"] = None

    # -- harness overhead on the back at B'=B (or the front for static exports) --
    overhead = None
    if o.measure_overhead:
        key = max(feeds_at) if feeds_at else None
        runner, feeds = (pipe.back, feeds_at[key]) if key is not None else (pipe.front, {f"clip{p}": c for p, c in enumerate(clips)})
        direct = _direct_call(runner, feeds)
        harness = (lambda: pipe.run_back(feeds)) if key is not None else (lambda: pipe.run_front(clips))
        if direct is not None:
            overhead = measure_overhead(direct, harness, iters=1, blocks=max(6, min(o.iters, 20)), warmup=1)
            overhead["call"] = ("back graph session.run at B'=%d" % key) if key else "front graph session.run"
        else:
            overhead = measure_overhead(harness, harness, iters=1, blocks=max(6, min(o.iters, 20)), warmup=1)
            overhead["call"] = "runner.run (backend exposes no raw session)"
        if not overhead["negligible"]:
            warnings.append(f"harness overhead not negligible in this run ({overhead['overhead_pct']:+.2f}% vs "
                            f"bare loop; fixed cost {overhead['noop_pct']:.3f}%) - likely machine noise")

    return build_report(o, m, pipe, env, warnings, res, xs, e2e_bp, static_info, spipe, torch_info, torch_model,
                        overhead, sampler, wall_s, extra)


def _stats(res: dict[str, Timings], name: str) -> dict[str, float] | None:
    return res[name].stats() if name in res else None


def _distribution(pipe: Pipeline, videos: Any, curve: list[dict[str, Any]], xs: list[int], frames: int,
                  static_clip: float | None, gfl: dict[str, Any]) -> dict[str, Any] | None:
    """B' over real clips (``--videos``) and the latency and GFLOPs it makes expected, interpolated
    on the measured curve."""
    dist = None
    d = bprime_distribution(pipe, videos)
    if d and curve:
        cx = np.array([c["bprime"] for c in curve], float)
        cy = np.array([c["clip_ms"] for c in curve], float)
        lat = {b: float(np.interp(b, cx, cy)) for b in d["counts"]}
        interp = [b for b in d["counts"] if b not in set(xs)]
        e = expected_latency_throughput(d["counts"], lat, 1, frames)
        dist = {"source": d["source"], "counts": {str(k): int(v) for k, v in d["counts"].items()},
                "n": int(sum(d["counts"].values())),
                "expected": {"latency_ms": e["latency_ms"], "clips_per_s": e["clips_per_s"],
                             "frames_per_s": e["frames_per_s"]},
                "interpolated_bprime": interp,
                "speedup_vs_static": (static_clip / e["latency_ms"]) if static_clip else None,
                "expected_gflops": None}
        gx = {int(k): v for k, v in gfl["per_bprime"].items()}
        if gx:
            gxs = np.array(sorted(gx), float)
            gys = np.array([gx[int(k)] for k in gxs], float)
            probs = {b: c / dist["n"] for b, c in d["counts"].items()}
            dist["expected_gflops"] = float(sum(p * np.interp(b, gxs, gys) for b, p in probs.items()))

    return dist


def _ratios(o: BenchOptions, res: dict[str, Timings], m: Manifest, e2e: dict[str, Any], sgs: dict[str, Any] | None,
            curve: list[dict[str, Any]], fit: dict[str, Any] | None, static_info: dict[str, Any] | None,
            static_clip: float | None, static_gflops: float | None, torch_info: dict[str, Any] | None,
            warnings: list[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The report's ratios (>1: ATFR faster) and the precision-speed block; fills ``torch_info``'s
    layout choice and adds the precision warnings."""
    n = o.batch
    ratios: dict[str, Any] = {}
    if static_info:
        ratios["static_e2e / atfr_e2e"] = static_info["end_to_end"]["median"] / e2e["median"]
        if curve and curve[-1]["bprime"] == max((l.bins for l in m.sgs), default=0):
            ratios["atfr_clip_at_B / static_clip (split overhead)"] = curve[-1]["clip_ms"] / static_clip
        if curve:
            ratios["static_clip / atfr_clip at B'=1"] = static_clip / curve[0]["clip_ms"] if curve[0]["bprime"] == 1 else None
            near = None
            if static_gflops:
                gr = [(abs(c["gflops"] / static_gflops - 0.58), c) for c in curve if c["gflops"] is not None]
                if gr:
                    near = min(gr, key=lambda t: t[0])[1]
            if near:
                ratios["bprime_at_58pct_gflops"] = near["bprime"]
                ratios["gflops_ratio_there"] = near["gflops"] / static_gflops
                ratios["static_clip / atfr_clip there"] = static_clip / near["clip_ms"]
    if torch_info and "torch.e2e" in res:
        layouts = {k: _stats(res, c) for k, c in TORCH_LAYOUT_CANDIDATES.items() if c in res}
        best = min(layouts, key=lambda k: layouts[k]["median"])  # type: ignore[index]
        torch_info["layouts"] = layouts
        torch_info["channels_last_3d"] = best == "channels_last_3d"
        torch_info["layout_chosen"] = f"{best} (the faster of {', '.join(layouts)} in this run)"
        t = layouts[best]
        torch_info["end_to_end"] = t
        torch_info["clip_ms"] = t["median"] / n
        ratios["torch_e2e / atfr_e2e"] = t["median"] / e2e["median"]
        if static_info:
            ratios["torch_e2e / static_e2e"] = t["median"] / static_info["end_to_end"]["median"]
    mono = _stats(res, "atfr.model")
    if mono and n == 1:
        # Same clip, same B' (at batch > 1 model.onnx pads every clip to the batch's largest B').
        ratios["atfr_e2e / atfr_model (split vs monolithic)"] = e2e["median"] / mono["median"]
    if static_info and static_info.get("graph") == "model":
        ratios["static_split / static_model"] = static_info["split_clip_ms"] / static_info["clip_ms"]
    dflt = _stats(res, "atfr.e2e@default_threads")
    sdflt = _stats(res, "static.e2e@default_threads")
    if dflt and sdflt:
        ratios["static_e2e / atfr_e2e (default threads)"] = sdflt["median"] / dflt["median"]
    prec = {p: _stats(res, f"{p}.e2e") for p in ("fp16", "int8")}
    prec = {p: v for p, v in prec.items() if v}
    precision_speed = None
    if prec:
        from .precision_speed import DEFAULT_PROVIDER, slower_than_fp32_lines

        med = {"fp32": e2e["median"], **{p: v["median"] for p, v in prec.items()}}
        precision_speed = {"provider": DEFAULT_PROVIDER, "threads": o.threads, "rounds": o.iters, "median_ms": med,
                           "ratio_vs_fp32": {p: med[p] / med["fp32"] for p in prec}}
        for p in prec:
            ratios[f"{p}_e2e / fp32_e2e"] = precision_speed["ratio_vs_fp32"][p]
        warnings.extend(slower_than_fp32_lines(precision_speed))
    if sgs:
        ratios["sgs_share_of_e2e"] = sgs["median"] / e2e["median"]
    if fit:
        ratios["back_vs_bprime_r2"] = fit["r2"]
    ratios = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
              for k, v in ratios.items() if v is not None}

    return ratios, precision_speed


def _load_section(extra: dict[str, Any], env: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    """Whether the machine was loaded while timing (and a warning saying so)."""
    la0, la1 = extra.get("load_average_before"), extra.get("load_average_after")
    cores = (env.get("cpu") or {}).get("usable_cores") or os.cpu_count() or 1
    loaded = bool((la0 and la0[0] > 0.5 * cores) or (la1 and la1[0] > 0.5 * cores))
    load = {"before": la0, "after": la1, "usable_cores": cores, "loaded": loaded,
            "rule": "loaded = 1-minute load average above half the usable cores, before or after the timing"}
    if loaded and not any(w.startswith("the machine is busy") for w in warnings):  # env warned about 'before'
        fmt = lambda la: f"{la[0]:.2f}" if la else "?"  # noqa: E731
        warnings.append(f"the machine was loaded (1-min load average {fmt(la0)} before, {fmt(la1)} after, on {cores} "
                        f"cores): ratios measured side by side hold, absolute ms do not")

    return load


def build_report(o: BenchOptions, m: Manifest, pipe: Pipeline, env: dict[str, Any], warnings: list[str],
                 res: dict[str, Timings], xs: list[int], e2e_bp: list[list[int]], static_info: dict[str, Any] | None,
                 spipe: Pipeline | None, torch_info: dict[str, Any] | None, torch_model: Any,
                 overhead: dict[str, Any] | None, sampler: envmod.TegrastatsSampler, wall_s: float,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    extra = extra or {}
    n = o.batch
    frames = m.input.num_frames
    front = _stats(res, "atfr.front")
    sgs = _stats(res, "atfr.sgs")
    e2e = _stats(res, "atfr.e2e")
    assert front is not None and e2e is not None
    sgs_med = sgs["median"] if sgs else 0.0
    gfl = gflops_table(m, xs, torch_model)

    static_clip = None
    if static_info is not None:
        s_e2e = _stats(res, "static.e2e")
        s_front, s_back = _stats(res, "static.front"), _stats(res, "static.back")
        # Per clip, the same way as the ATFR curve (sum of stage medians), so ratios compare like
        # with like; end-to-end vs end-to-end is in ratios['static_e2e / atfr_e2e'].
        graph = getattr(spipe, "graph", "split")
        split_ms = (s_front["median"] + s_back["median"]) / n
        static_info.update({"front": s_front, "back": s_back, "end_to_end": s_e2e, "graph": graph,
                            "clip_ms": s_e2e["median"] / n if graph == "model" else split_ms,
                            "clip_ms_definition": ("end-to-end median / batch (model.onnx: what the runtime runs "
                                                   "for a static export)" if graph == "model"
                                                   else "(front + back medians) / batch"),
                            "split_clip_ms": split_ms,
                            "throughput": throughput(s_e2e["mean"], n, frames)})
        sg = (spipe.manifest.gflops or {}) if spipe else {}
        static_info["gflops"] = sg.get("total")
        if gfl.get("static") is None and sg.get("total") is not None:
            gfl["static"] = float(sg["total"])
        static_clip = static_info["clip_ms"]
    static_gflops = gfl.get("static")

    curve = []
    for x in xs:
        back = _stats(res, f"atfr.back@{x}")
        assert back is not None
        clip = (front["median"] + sgs_med + back["median"]) / n
        g = gfl["per_bprime"].get(str(x))
        curve.append({"bprime": x, "bprime_per_layer": per_layer_bprime(m, x), "back": back, "clip_ms": clip,
                      "gflops": g, "gflops_per_s": (g / (clip / 1000.0)) if g is not None and clip > 0 else None,
                      "speedup_vs_static": (static_clip / clip) if static_clip else None,
                      "gflops_ratio_vs_static": (g / static_gflops) if g is not None and static_gflops else None})
    fit = None
    steps = None
    if len(m.sgs) > 1 and curve:
        steps = back_steps(m, curve)
        warnings.append("two SGS pathways: back latency is a step function of the slow pathway's B' - see "
                        "'back_steps' (per step) instead of one linear fit")
    elif len(xs) >= 2:
        fit = linear_fit([c["bprime"] for c in curve], [c["back"]["median"] for c in curve])
        fit["y"] = "back latency per call (median, ms)"

    dist = _distribution(pipe, o.videos, curve, xs, frames, static_clip, gfl)

    ratios, precision_speed = _ratios(o, res, m, e2e, sgs, curve, fit, static_info, static_clip, static_gflops,
                                      torch_info, warnings)
    dflt = _stats(res, "atfr.e2e@default_threads")
    sdflt = _stats(res, "static.e2e@default_threads")
    mono = _stats(res, "atfr.model")

    load = _load_section(extra, env, warnings)

    trt = None
    if pipe.backend == "tensorrt":
        ex = res["atfr.e2e"].extra_ms
        trt = {k: (latency_stats(ex[k], "ms") if ex.get(k) else None) for k in TRT_FIELDS}
    ts = sampler.summary()
    env["tegrastats"] = ts
    if "torch" in sys.modules and env.get("versions", {}).get("torch") is None:
        env["versions"]["torch"] = getattr(sys.modules["torch"], "__version__", None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 1024.0 if sys.platform != "darwin" else peak / 2**20
    e2e_gflops = None
    if gfl["per_bprime"] and e2e_bp and m.sgs:
        vals = [gfl["per_bprime"].get(str(curve_x(m, bp))) for bp in e2e_bp]
        if all(v is not None for v in vals):
            e2e_gflops = float(np.mean(vals))
    elif not m.sgs and gfl.get("static") is not None:
        e2e_gflops = float(gfl["static"])
    gfl["end_to_end_clip"] = e2e_gflops
    gfl["end_to_end_gflops_per_s"] = (e2e_gflops * n / (e2e["median"] / 1000.0)) if e2e_gflops else None

    from atfr import __version__
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "atfr bench", "version": __version__, "argv": list(o.argv) or ["atfr", "bench", o.export]},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env,
        "config": {"export": str(o.export), "backend": getattr(pipe, "backend", o.backend),
                   "provider": getattr(pipe, "provider", None), "warmup": o.warmup, "iters": o.iters,
                   "batch": n, "threads": o.threads,
                   "threads_meaning": (f"{o.threads} intra-op thread(s) per ONNX Runtime session (and torch); "
                                       "'atfr.e2e@default_threads' runs the defaults beside it") if o.threads else
                                      "ONNX Runtime default (one intra-op thread per physical core), as atfr run/infer/predict",
                   "ort_spin": getattr(pipe.front, "spin", None), "blas": pipe.blas.describe() if hasattr(pipe, "blas") else None,
                   "graph": getattr(pipe, "graph", None), "bprime": xs, "videos": o.videos, "static": o.static,
                   "torch": o.torch_checkpoint, "seed": o.seed, "bins": o.bins, "sgs_impl": getattr(pipe.sgs, "impl", None),
                   "inputs": "standard normal random clips (seeded); back fed T'=B' frames of the real front features",
                   "wall_s": wall_s},
        "model": {"name": m.name, "arch": m.arch, "num_frames": m.input.num_frames, "crop_size": m.input.crop_size,
                  "num_pathways": m.num_pathways, "clip_shapes": [list(s) for s in m.clip_shapes(n)],
                  "sgs": [{"pathway": l.pathway, "frames": l.frames, "bins": l.bins} for l in m.sgs]},
        "harness": {"clock": "time.perf_counter_ns around each call; gc disabled while timing",
                    "interleaving": "round-robin: every candidate once per round, in a seeded random order per round",
                    "percentile_method": "linear", "std": "population (ddof=0)",
                    "candidates": [c for c in res], "overhead": overhead},
        "stages": {"front": front, "sgs": sgs, "end_to_end": e2e, "end_to_end_bprime": e2e_bp,
                   "back": _stats(res, "atfr.back")},
        "bprime_curve": curve,
        "fit": fit,
        "back_steps": steps,
        "load": load,
        "precision_speed": precision_speed,
        "model_onnx": mono,
        "default_threads": {"atfr_e2e": dflt, "static_e2e": sdflt} if dflt else None,
        "distribution": dist,
        "static": static_info,
        "torch": torch_info,
        "ratios": ratios,
        "gflops": gfl,
        "throughput": {"end_to_end": throughput(e2e["mean"], n, frames)},
        "memory": {"peak_rss_mb": float(peak_mb), "gpu_memory_mb": envmod.gpu_memory_used_mb()},
        "tensorrt": trt,
        "warnings": warnings,
    }
    return report
