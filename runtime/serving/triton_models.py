"""Python-backend models of an ``atfr triton-repo`` repository. Torch-free; imported by the
one-line ``model.py`` files inside Triton's Python backend stub (``triton_python_backend_utils``
exists only there).

* ``PreprocessModel``: uint8 frames -> ``clip{p}`` (the ``atfr run`` transform);
* ``OrtGraphModel``: the front or back graph on ONNX Runtime (``--flavor python``; the other
  flavors use Triton's onnxruntime/tensorrt backends for these two);
* ``SGSModel``: SGS per clip, clips grouped by B' across the whole dynamic batch, one BLS call to
  the back model per group, softmax/top-k, and the ATFR metrics (B' distribution, GFLOPs saved);
* ``AdaFuseReportModel``: an AdaFuse clip graph's logits and policies -> softmax/top-k, policy
  fractions and GFLOPs per clip (``clip_report``, as ``atfr infer --json``), and its metrics.

Errors are per request (``pb_utils.TritonError`` with one line): a bad request never fails the
requests it was batched with.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from atfr.errors import ATFRError

try:  # only importable inside Triton's Python backend
    import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - outside Triton
    pb_utils = None


def _param(cfg: dict[str, Any], key: str, default: str = "") -> str:
    return str((cfg.get("parameters") or {}).get(key, {}).get("string_value", default))


def _model_dir(args: dict[str, Any]) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def _load(args: dict[str, Any]):
    from atfr.runtime.manifest import load_manifest

    cfg = json.loads(args["model_config"])
    return cfg, load_manifest(_model_dir(args), check=False)


def _tensor(name: str, value: np.ndarray):
    return pb_utils.Tensor(name, np.ascontiguousarray(value))


def _error(e: BaseException):
    msg = str(e) if isinstance(e, ATFRError) else f"{type(e).__name__}: {e}"
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg.splitlines()[0]))


class OrtGraphModel:
    """The export's front or back graph (parameter ``atfr_graph``) on ONNX Runtime."""

    def initialize(self, args: dict[str, Any]) -> None:
        from atfr.runtime.backends import OrtRunner

        cfg, m = _load(args)
        threads = _param(cfg, "atfr_threads")
        self.runner = OrtRunner(m.path(_param(cfg, "atfr_graph")), int(threads) if threads else None)

    def execute(self, requests: list[Any]) -> list[Any]:
        names = self.runner.input_names
        feeds: dict[int, dict[str, np.ndarray]] = {}
        out: list[Any] = [None] * len(requests)
        for i, r in enumerate(requests):
            f = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in names}
            bad = [n for n, v in f.items() if not np.isfinite(v).all()]
            if bad:  # one request's NaN must not reach the batch it was merged into
                out[i] = _error(ATFRError(f"{bad[0]}: the clip contains NaN or Inf values"))
            else:
                feeds[i] = f
        if feeds:
            good = sorted(feeds)
            try:
                # requests of one dynamic batch have equal shapes (the batcher only merges those)
                res = self.runner.run({n: np.concatenate([feeds[i][n] for i in good], 0) for n in names})
            except Exception as e:  # noqa: BLE001 - one error response per request, the server keeps serving
                res, err = None, e
            start = 0
            for i in good:
                n = feeds[i][names[0]].shape[0]
                out[i] = (_error(err) if res is None else
                          pb_utils.InferenceResponse([_tensor(k, v[start:start + n]) for k, v in res.items()]))
                start += n
        return out


class PreprocessModel:
    """uint8 ``frames`` [N,T,H,W,3] -> ``clip{p}`` [N,3,T_p,S,S], exactly like ``atfr run``."""

    def initialize(self, args: dict[str, Any]) -> None:
        from atfr.runtime.pipeline import Pipeline
        from atfr.runtime.serving.service import ClipService, ServeLimits

        cfg, m = _load(args)
        limits = ServeLimits(max_clips=int(cfg.get("max_batch_size") or 64))
        self.service = ClipService(Pipeline(m, None, None, None), limits=limits)  # type: ignore[arg-type]

    def execute(self, requests: list[Any]) -> list[Any]:
        out = []
        for r in requests:
            try:
                clips = self.service.frames_to_clips(pb_utils.get_input_tensor_by_name(r, "frames").as_numpy())
                out.append(pb_utils.InferenceResponse([_tensor(f"clip{p}", c) for p, c in enumerate(clips)]))
            except Exception as e:  # noqa: BLE001
                out.append(_error(e))
        return out


class SGSModel:
    """SGS + B' grouping + BLS calls to the back model; responses and ATFR metrics."""

    def initialize(self, args: dict[str, Any]) -> None:
        from atfr.runtime.pipeline import Pipeline, SGSStep
        from atfr.runtime.serving.service import ClipService, gflops_per_bprime

        cfg, m = _load(args)
        self.m = m
        self.back_model = _param(cfg, "atfr_back_model")
        topk = int(_param(cfg, "atfr_topk", "5"))
        self.pipeline = Pipeline(m, None, None, SGSStep(m, "numpy") if m.sgs else None)  # type: ignore[arg-type]
        self.service = ClipService(self.pipeline, topk)
        self.front_names = [t.name for t in m.graphs["front"].outputs]
        self.back_names = [m.back_input_name(p) for p in range(m.num_pathways)]
        self.layer_names = [s.spec.name for s in m.sgs]
        self._gflops = gflops_per_bprime(m)
        model = args.get("model_name", "sgs")
        fam = pb_utils.MetricFamily
        # The families must outlive their metrics (the stub refuses to update an orphaned metric).
        self._families = {
            "bprime": fam(name="atfr_bprime_clips_total",
                          description="Clips per SGS layer and B' (number of sampled bins)", kind=fam.COUNTER),
            "saved": fam(name="atfr_gflops_saved_total",
                         description="GFLOPs not spent against the static model (manifest's table per B')",
                         kind=fam.COUNTER),
            "spent": fam(name="atfr_gflops_total",
                         description="GFLOPs spent (front + SGS + back at each clip's B')", kind=fam.COUNTER),
            "clips": fam(name="atfr_clips_total", description="Clips classified", kind=fam.COUNTER),
        }
        self._bp_family = self._families["bprime"]
        self._saved = self._families["saved"].Metric(labels={"model": model})
        self._spent = self._families["spent"].Metric(labels={"model": model})
        self._clips = self._families["clips"].Metric(labels={"model": model})
        self._bp_metrics: dict[tuple[str, int], Any] = {}
        self._model = model

    def _count(self, bprime: tuple[int, ...]) -> None:
        for layer, b in zip(self.layer_names, bprime):
            key = (layer, int(b))
            if key not in self._bp_metrics:
                self._bp_metrics[key] = self._bp_family.Metric(
                    labels={"model": self._model, "layer": layer, "bprime": str(int(b))})
            self._bp_metrics[key].increment(1)
        row = self._gflops.get(tuple(int(b) for b in bprime))
        if row:
            self._spent.increment(row[0])
            self._saved.increment(max(0.0, row[1] - row[0]))
        self._clips.increment(1)

    def _back(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        req = pb_utils.InferenceRequest(model_name=self.back_model, requested_output_names=["logits"],
                                        inputs=[_tensor(k, v) for k, v in feeds.items()])
        resp = req.exec()
        if resp.has_error():
            raise ATFRError(f"back model: {resp.error().message()}")
        return pb_utils.get_output_tensor_by_name(resp, "logits").as_numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        from atfr.runtime.pipeline import ClipResult, softmax

        # per clip of every request: (request index, back feeds, B')
        clips: list[tuple[int, dict[str, np.ndarray], tuple[int, ...]]] = []
        errors: dict[int, BaseException] = {}
        for ri, r in enumerate(requests):
            try:
                front = {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.front_names}
                for feeds, bp in self.pipeline.run_sgs(front):
                    clips.append((ri, feeds, bp))
            except Exception as e:  # noqa: BLE001
                errors[ri] = e
        clips = [c for c in clips if c[0] not in errors]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (_, _, bp) in enumerate(clips):
            groups[bp].append(i)
        results: dict[int, ClipResult] = {}
        for bp, idx in groups.items():
            try:
                logits = self._back({k: np.concatenate([clips[i][1][k] for i in idx], 0) for k in self.back_names})
            except Exception as e:  # noqa: BLE001
                for i in idx:
                    errors[clips[i][0]] = e
                continue
            for j, i in enumerate(idx):
                lg = logits[j].astype(np.float32)
                results[i] = ClipResult(lg, softmax(lg), bp)
        out = []
        for ri in range(len(requests)):
            if ri in errors:
                out.append(_error(errors[ri]))
                continue
            mine = [results[i] for i, c in enumerate(clips) if c[0] == ri]
            for res in mine:
                self._count(res.bprime)
            out.append(pb_utils.InferenceResponse([_tensor(k, v) for k, v in self.service.outputs(mine).items()]))
        return out


class AdaFuseReportModel:
    """AdaFuse: the clip graph's ``logits`` and ``policy{i}`` -> the responses and the metrics."""

    def initialize(self, args: dict[str, Any]) -> None:
        from atfr.runtime.adafuse_clip import AdaFuseClipRunner
        from atfr.runtime.serving.adafuse_pipeline import AdaFusePipeline
        from atfr.runtime.serving.service import ClipService

        cfg, m = _load(args)
        self.runner = AdaFuseClipRunner(m, None)  # its report half: the graph runs in the model before
        self.service = ClipService(AdaFusePipeline(self.runner), int(_param(cfg, "atfr_topk", "5")))
        self.names = ["logits"] + [f"policy{i}" for i in range(len(self.runner.blocks))]
        self.frames = m.input.num_frames
        self.static = float((m.gflops or {}).get("static_official") or 0.0)
        model = args.get("model_name", "report")
        fam = pb_utils.MetricFamily
        # The families must outlive their metrics (the stub refuses to update an orphaned metric).
        self._families = {
            "saved": fam(name="atfr_gflops_saved_total",
                         description="GFLOPs not spent against the static TSN (Eq. 5 of each clip's policy)",
                         kind=fam.COUNTER),
            "spent": fam(name="atfr_gflops_total", description="GFLOPs spent (Eq. 5 of each clip's policy)",
                         kind=fam.COUNTER),
            "clips": fam(name="atfr_clips_total", description="Clips classified", kind=fam.COUNTER),
        }
        self._metrics = {k: f.Metric(labels={"model": model}) for k, f in self._families.items()}

    def execute(self, requests: list[Any]) -> list[Any]:
        out = []
        for r in requests:
            try:
                results = self.runner.results(
                    {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.names}, self.frames)
                resp = self.service.outputs(results)
            except Exception as e:  # noqa: BLE001 - one error response per request
                out.append(_error(e))
                continue
            for res in results:
                g = float(res.report["gflops"]["eq5"])
                self._metrics["spent"].increment(g)
                self._metrics["saved"].increment(max(0.0, self.static - g))
            self._metrics["clips"].increment(len(results))
            out.append(pb_utils.InferenceResponse([_tensor(k, v) for k, v in resp.items()]))
        return out
