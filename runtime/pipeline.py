"""front -> SGS -> back, batch-independent and exact. Torch-free.

The pipeline runs the fixed-shape front graph on the whole batch, samples each clip alone
(its own B', no zero padding from batch-mates), then runs the dynamic-T back graph once per
group of clips with equal B'. Stage functions are public so benchmarks can time them.

A static export (no SGS layer) runs its monolithic ``model.onnx`` on ONNX Runtime instead
(``graph="auto"``): one session instead of two, the same logits (measured on the 2-core CPU with
benchmarks/runtime_speed.py: within noise of front + back with the defaults below, 9-32% faster
with ORT's workers spinning). ATFR exports keep the split:
model.onnx would hide B' and pad a batch to its largest B'. ``Pipeline.graph`` says which ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from atfr.errors import ATFRError

from . import ort_providers
from .backends import GraphRunner, OrtRunner, pipeline_loader, resolve_backend
from .budget import check_bins
from .manifest import Manifest, load_manifest
from .sgs_numpy import guard_zero_max, sgs_step
from .threads import DEFAULT_BLAS_THREADS, BlasLimit

GRAPHS = ("auto", "split", "model")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def check_clip_inputs(m: Manifest, clips: list[np.ndarray]) -> list[np.ndarray]:
    """Clips per pathway [N,3,T_p,S,S] of the export's shape, finite; contiguous float32 copies.
    (Every clip-graph runner of an export checks its inputs here: ATFR's Pipeline, AdaFuse served.)"""
    if len(clips) != m.num_pathways:
        raise ATFRError(f"expected {m.num_pathways} input pathway(s), got {len(clips)}")
    n = clips[0].shape[0] if clips[0].ndim == 5 else -1
    out = []
    for p, (x, want) in enumerate(zip(clips, m.clip_shapes(max(n, 1)))):
        if x.ndim != 5 or tuple(x.shape[1:]) != tuple(want[1:]) or x.shape[0] != n:
            raise ATFRError(f"pathway {p}: clip shape {tuple(x.shape)} does not match the export "
                            f"[N,{','.join(map(str, want[1:]))}]")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise ATFRError(f"pathway {p}: the clip contains NaN or Inf values")
        out.append(x)
    return out


@dataclass
class ClipResult:
    logits: np.ndarray  # [K]
    probs: np.ndarray  # [K]
    bprime: tuple[int, ...]  # one per SGS layer
    timings_ms: dict[str, float] = field(default_factory=dict)

    def top(self, k: int = 5) -> list[int]:
        return [int(i) for i in np.argsort(-self.probs, kind="stable")[:k]]

    def to_json(self, labels: list[str] | None = None, k: int = 5) -> dict[str, Any]:
        idx = self.top(k)
        lab = labels or []
        return {
            "logits": [float(v) for v in self.logits],
            "probs": [float(v) for v in self.probs],
            "bprime": list(self.bprime),
            "top5": [{"index": i, "label": lab[i] if i < len(lab) else str(i), "prob": float(self.probs[i])}
                     for i in idx],
        }


class SGSStep:
    """The SGS step for one clip at a time: numpy reference or the ONNX fallback graph.

    ``num_bins`` (None: the trained B): run-time bins B_run (paper Table A.4), the official
    arithmetic with NUM_BINS = B_run (bin width, centres and the 2B scaling all use B_run). The
    fallback graph has the trained B baked into its constants, so with B_run set the step uses the
    numpy SGS, which computes exactly that arithmetic for any B (tests/test_bins.py).
    """

    def __init__(self, manifest: Manifest, impl: str = "numpy", runner_factory: Callable | None = None):
        self.m = manifest
        self.impl = impl
        self.runner: GraphRunner | None = None
        self.num_bins: int | None = None
        if impl == "fallback":
            self.runner = (runner_factory or OrtRunner)(manifest.path("sgs_fallback"))
        elif impl != "numpy":
            raise ATFRError(f"unknown SGS implementation {impl!r} (numpy, fallback)")

    def __call__(self, feats: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], tuple[int, ...]]:
        """feats holds feat{p}/dist{p} for ONE clip (N=1); returns sgs{p} and B' per layer."""
        out: dict[str, np.ndarray] = {}
        bp: list[int] = []
        if self.runner is not None and self.num_bins is None:
            res = self.runner.run(feats)
            for layer in self.m.sgs:
                p = layer.pathway
                out[f"sgs{p}"] = res[f"sgs{p}"]
                bp.append(int(res[f"sgs{p}"].shape[2]))
            return out, tuple(bp)
        for layer in self.m.sgs:
            p, s = layer.pathway, layer.spec
            b = s.num_bins if self.num_bins is None else self.num_bins
            r = sgs_step(feats[f"feat{p}"], guard_zero_max(feats[f"dist{p}"]), b, s.kernel, s.drop_bins)
            out[f"sgs{p}"] = r.output
            bp.append(r.b_prime)
        return out, tuple(bp)


class LazyRunner:
    """A GraphRunner created on first use (the split graphs of a static export that runs model.onnx:
    only benchmarks and calibration ask for them)."""

    def __init__(self, factory: Callable[[], GraphRunner]):
        self._factory = factory
        self._runner: GraphRunner | None = None

    def get(self) -> GraphRunner:
        if self._runner is None:
            self._runner = self._factory()
        return self._runner

    def __getattr__(self, name: str) -> Any:  # input_names, output_names, session, path, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.get().run(feeds)


class Pipeline:
    def __init__(self, manifest: Manifest, front: GraphRunner, back: GraphRunner, sgs: SGSStep | None,
                 backend: str = "onnxruntime", model: GraphRunner | None = None, blas: BlasLimit | None = None):
        self.manifest = manifest
        self.front = front
        self.back = back
        self.sgs = sgs
        self.backend = backend
        self.provider: str | None = "cpu" if backend == "onnxruntime" else None  # ONNX Runtime's EP (--providers)
        self.model = model  # monolithic graph that infer() runs instead of front + back (static exports)
        self.blas = blas if blas is not None else BlasLimit()
        self.bins: int | None = None  # run-time bins B_run (None: the trained B); see set_bins

    @property
    def graph(self) -> str:
        """Which graphs infer() runs: 'model' (model.onnx) or 'split' (front + SGS + back)."""
        return "model" if self.model is not None else "split"

    @property
    def trained_bins(self) -> int:
        """The largest B_run every SGS layer accepts (the trained B; the smallest over layers)."""
        return min((layer.bins for layer in self.manifest.sgs), default=0)

    def set_bins(self, bins: int | None) -> None:
        """Run every SGS layer with ``bins`` bins from the next clip on (None: the trained B).

        Cheap, so a latency controller may call it between clips. The back graph needs no change:
        B' <= B_run <= B, and its T' axis is dynamic (ONNX) or profiled over 1..B (TensorRT).
        A TensorRT front engine with SGS inside (--sgs plugin/fallback) has num_bins baked into
        the plugin attribute or graph constants; rather than silently running the trained B there,
        it is refused: build with --sgs host to change bins at run time.
        """
        if bins is None:
            self.bins = None
            if self.sgs is not None:
                self.sgs.num_bins = None
            return
        check_bins(self.manifest, bins)
        if self.sgs is None:
            raise ATFRError(f"--bins {bins}: this front engine runs SGS inside with the trained {self.trained_bins} "
                            f"bins baked in; rebuild it with 'atfr build {self.manifest.root} --sgs host' to "
                            f"change bins at run time")
        self.bins = int(bins)
        self.sgs.num_bins = int(bins)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, outdir: str | Path, backend: str = "onnxruntime", sgs: str = "numpy",
             threads: int | None = None, providers: str | None = None, graph: str = "auto",
             spin: str | None = None, blas_threads: int | None = DEFAULT_BLAS_THREADS,
             bins: int | None = None, **trt_options: Any) -> "Pipeline":
        """``providers``: ONNX Runtime's execution provider, cpu (default), cuda or tensorrt
        (see atfr.runtime.ort_providers); it implies --backend onnxruntime where backend is auto.
        ``graph``: 'auto' (model.onnx for a static export on ONNX Runtime, else the split),
        'split', or 'model' (static exports only). ``spin``: ONNX Runtime's spin policy
        (see backends.SPIN_POLICIES). ``blas_threads``: BLAS threads in the SGS step (None: no cap).
        ``bins``: run-time B_run (see ``set_bins``)."""
        if graph not in GRAPHS:
            raise ATFRError(f"unknown graph {graph!r} (choose one of: {', '.join(GRAPHS)})")
        m = load_manifest(outdir, check=True)
        check_bins(m, bins)  # before minutes of engine loading
        if providers and backend == "auto":
            backend = "onnxruntime"
        backend = resolve_backend(backend)
        loader = pipeline_loader(backend)  # e.g. tensorrt: imported here, on first use
        if loader is not None:
            if providers and providers != "cpu":
                raise ATFRError(f"--providers {providers} applies to --backend onnxruntime, not {backend}")
            pipe = loader(m, **trt_options)
            pipe.set_bins(bins)
            return pipe
        if graph == "model" and m.sgs:
            raise ATFRError("model.onnx of an ATFR export hides B' and pads a batch to its largest B': "
                            "the runtime runs the split graphs (graph 'split' or 'auto')")
        mono = graph == "model" or (graph == "auto" and not m.sgs and "model" in m.graphs)
        choice = ort_providers.choose(providers, m.root)

        def runner(path: Path) -> GraphRunner:
            return ort_providers.make_runner(path, threads, choice, spin=spin)

        model = runner(m.path("model")) if mono else None
        front: GraphRunner = LazyRunner(lambda: runner(m.path("front"))) if mono else runner(m.path("front"))
        back: GraphRunner = LazyRunner(lambda: runner(m.path("back"))) if mono else runner(m.path("back"))
        step = SGSStep(m, sgs, runner) if m.sgs else None
        pipe = cls(m, front, back, step, backend, model=model, blas=BlasLimit(blas_threads))
        pipe.provider = choice.name
        pipe.set_bins(bins)
        return pipe

    # -- input checks --------------------------------------------------------------------------
    def check_inputs(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        return check_clip_inputs(self.manifest, clips)

    # -- stages (timed by benchmarks) ----------------------------------------------------------
    def run_front(self, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        return self.front.run({f"clip{p}": x for p, x in enumerate(clips)})

    def run_sgs(self, front_out: dict[str, np.ndarray]) -> list[tuple[dict[str, np.ndarray], tuple[int, ...]]]:
        """Per clip: (back feeds for N=1, B' per SGS layer)."""
        with self.blas.limit():
            return self._run_sgs(front_out)

    def _run_sgs(self, front_out: dict[str, np.ndarray]) -> list[tuple[dict[str, np.ndarray], tuple[int, ...]]]:
        m = self.manifest
        n = front_out["feat0"].shape[0]
        results = []
        for i in range(n):
            one = {k: v[i:i + 1] for k, v in front_out.items()}
            for layer in m.sgs:
                d = one[f"dist{layer.pathway}"]
                if not np.isfinite(d).all():
                    raise ATFRError("SGS distances are NaN/Inf (non-finite features from the front graph)")
            if self.sgs is not None:
                sg, bp = self.sgs(one)
            else:
                sg, bp = {}, ()
            feeds = {}
            for p in range(m.num_pathways):
                name = m.back_input_name(p)
                feeds[name] = sg[name] if name in sg else one[f"feat{p}"]
            results.append((feeds, bp))
        return results

    def run_back(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.back.run(feeds)["logits"]

    # -- end to end ----------------------------------------------------------------------------
    def infer(self, clips: list[np.ndarray]) -> list[ClipResult]:
        clips = self.check_inputs(clips)
        if self.model is not None:
            logits = self.model.run({f"clip{p}": x for p, x in enumerate(clips)})["logits"].astype(np.float32)
            return [ClipResult(lg, softmax(lg), ()) for lg in logits]
        front_out = self.run_front(clips)
        per_clip = self.run_sgs(front_out)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, bp) in enumerate(per_clip):
            groups[bp].append(i)
        results: list[ClipResult | None] = [None] * len(per_clip)
        for bp, idx in groups.items():
            names = per_clip[idx[0]][0].keys()
            feeds = {k: np.concatenate([per_clip[i][0][k] for i in idx], 0) for k in names}
            logits = self.run_back(feeds)
            for j, i in enumerate(idx):
                lg = logits[j].astype(np.float32)
                results[i] = ClipResult(lg, softmax(lg), bp)
        return results  # type: ignore[return-value]
