"""Two-stage INT8 calibration -> explicit Q/DQ ``front_int8.onnx`` / ``back_int8.onnx``.

Stage (a): the front graph is calibrated on the clips. Stage (b): the back graph is calibrated
on the *SGS outputs of those same clips*: the fp32 front + the runtime's numpy SGS step
(``Pipeline.run_front`` / ``Pipeline.run_sgs``, one clip at a time) give every clip its own B',
so the dynamic-T back sees the real B' distribution (a Q/DQ scale is per tensor, independent of
T', so one set of scales serves every B').

Why ONNX Runtime ``quantize_static`` (QDQ, QInt8 weights and activations, per-channel weights,
``ActivationSymmetric``/``WeightSymmetric`` -> zero-point 0 as TensorRT requires) and not NVIDIA
ModelOpt: ModelOpt's ONNX PTQ is not installable here without CUDA, its dynamic-shape
calibration is an open bug area (shared/docs/tensorrt-notes.md §4.3), while ORT runs real
inference per sample (so each clip may have its own T'), handles Conv3d QDQ (per-channel axis 0
weights) and writes plain QuantizeLinear/DequantizeLinear pairs that TensorRT 10.3+ parses.

Q/DQ placement follows TensorRT's explicit-quantization recipe: Q/DQ on the *inputs* of every
Conv (activation, per-tensor; weights, per-channel), nothing on their outputs; the classifier
Gemm, residual Adds (an identity shortcut reads the DQ of its block's first conv input) and
pooling left in float. TensorRT then fuses Conv+BN+ReLU into int8 kernels and the next layer's Q
into their epilogue. On the demo model (ONNX Runtime, fp32 front) this
placement gave 0.944 top-1 agreement where quantizing every tensor (ORT's default: also Conv
outputs, Add, pooling and the logits themselves) gave 0.906; adding the residual Adds dropped it
to 0.900 (the earlier delta-kernel demo model, 160 held-out clips).

The SGS embedding net and distance (the nodes feeding ``dist{p}`` after ``feat{p}``) are
excluded from quantization (``nodes_to_exclude``): B' is a threshold on those distances.

The first stage after SGS stays float by default (``float_stages=1``): it reads SGS outputs, sums
of 1..B frames whose range depends on how many frames a bin holds, which one per-tensor int8
scale cannot cover (its BN re-normalises what later stages see). On the linear-kernel demo model,
quantizing every back conv gave 0.81 top-1 agreement with fp32; the three convs reading the SGS
output and the block's second conv were the most sensitive by far (a per-layer sweep); keeping
the whole first stage float gave 0.975. ``float_stages=0`` quantizes every back conv.

Which graphs: by default only the back is quantized (``front="float"``); the front runs with the
fp16 policy (front_fp16 on ONNX Runtime, the fp16 plan in TensorRT). The front computes the
features whose distances set B', and an INT8 front moved B' on 62% of the linear-kernel demo
model's 320 held-out clips (top-1 agreement 0.844, vs 0.975 with the fp16 front). ``front="int8"`` quantizes it
as well (its ranges are in the cache either way, so switching needs no new data).

The calibration cache is JSON: per graph, ORT's ``TensorsData`` (tensor -> range/histogram
data) plus what produced it. Quantization *always* goes through the cache (compute -> save ->
load -> quantize), so a later run from the cache alone reproduces byte-identical Q/DQ graphs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import onnx

from atfr.errors import ATFRError
from atfr.export.precision import register_graphs, sgs_fp32_nodes, unregister_graphs
from atfr.fileio import write_json_atomic
from atfr.progress import progress as progress_bar
from atfr.runtime.manifest import Manifest, int8_front_mode, load_manifest  # noqa: F401 (re-exported)

from .workdir import PrivateGraphs, check_free_space, private_graphs

CACHE_FORMAT = "atfr-calibration-cache"
CACHE_VERSION = 1
DEFAULT_CACHE = "int8_calibration.json"
METHODS = ("minmax", "entropy", "percentile")
# On the demo model (int8 back with the first block after SGS float, 160 held-out clips), top-1
# agreement with fp32 was 0.956 with percentile (99.999%), 0.912 with minmax, 0.769 with entropy.
DEFAULT_METHOD = "percentile"
MIN_RECOMMENDED_CLIPS = 100
INT8_GRAPHS = {"front_int8": "front", "back_int8": "back"}


@dataclass
class CalibrationResult:
    graphs: dict[str, Path]
    cache: Path
    from_cache: bool
    clips: int
    method: str
    front: str = "float"
    bprime_hist: dict[str, dict[int, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise ATFRError(f"unknown calibration method {method!r}; choose one of: {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


# Ops whose inputs get Q/DQ (see the module docstring for the measurement behind this choice).
QUANTIZED_OPS = ("Conv",)
FRONT_MODES = ("float", "int8")


def _quant_kwargs(exclude: list[str]) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType

    return dict(
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=False,
        nodes_to_exclude=exclude,
        op_types_to_quantize=list(QUANTIZED_OPS),
        # Biases stay fp32 (TensorRT fuses them; an int32 bias DQ is not a TensorRT Q/DQ pattern).
        # No Q/DQ on Conv outputs: TensorRT fuses the *next* layer's input Q into the epilogue.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)},
    )


def first_stage_convs(model: onnx.ModelProto, n_stages: int) -> list[str]:
    """Conv nodes of the first ``n_stages`` stages of a back graph, in graph order.

    Stages are the top-level modules named ``s<k>`` (our models' official names); fusion convs
    (``s<k>_fuse``, SlowFast) that come before a stage belong to it. [] when n_stages <= 0 or the
    graph has no such names (the caller warns)."""
    if n_stages <= 0:
        return []
    out: list[str] = []
    stages: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        top = node.name.lstrip("/").split("/")[0]
        if re.fullmatch(r"s\d+", top) and top not in stages:
            if len(stages) == n_stages:
                break
            stages.append(top)
        out.append(node.name)
    return out if stages else []


def excluded_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes never quantized: the SGS embedding net + distance (B' is a threshold on them). With
    Conv-only Q/DQ they hold no Conv today; the list keeps that true if QUANTIZED_OPS grows."""
    return sorted(model.graph.node[i].name for i in sgs_fp32_nodes(model) if model.graph.node[i].name)


class _ListReader:
    """A CalibrationDataReader over a list of feed dicts (one clip each)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.i = 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def __len__(self) -> int:
        return len(self.feeds)


def compute_ranges(model_path: Path, feeds: Iterable[dict[str, np.ndarray]], method: str,
                   desc: str = "calibrating", progress: bool = True, total: int | None = None) -> dict[str, Any]:
    """Run ORT's calibrator one clip at a time (clips may differ in T'); return TensorsData as a
    JSON-able dict (ORT's own cache format). ``feeds`` may be a generator (``total`` for the
    progress line): each feed is dropped once collected. The histograms depend on the order."""
    from onnxruntime.quantization.calibrate import create_calibrator, load_tensors_data, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="atfr-calib-") as td:
        calib = create_calibrator(Path(model_path), None, augmented_model_path=str(Path(td) / "augmented.onnx"),
                                  calibrate_method=_ort_method(method),
                                  extra_options={"symmetric": True})
        it = progress_bar(feeds, desc, total=total, unit="clip", enabled=progress)
        for f in it:  # one clip per collect: histograms merge incrementally, ragged T' is fine
            calib.collect_data(_ListReader([f]))
        data = calib.compute_data()
        tmp = Path(td) / "ranges.json"
        save_tensors_data(data, tmp)
        del calib
        # Normalise through load -> save so the cached dict equals what a cache load sees.
        save_tensors_data(load_tensors_data(tmp), tmp)
        return json.loads(tmp.read_text())


def quantize_from_ranges(model_path: Path, out_path: Path, ranges: dict[str, Any], method: str,
                         exclude: list[str]) -> onnx.ModelProto:
    """quantize_static from a stored range dict (no data): deterministic Q/DQ graph."""
    from onnxruntime.quantization import quantize_static

    with tempfile.TemporaryDirectory(prefix="atfr-quant-") as td:
        cache = Path(td) / "ranges.json"
        cache.write_text(json.dumps(ranges))
        tmp_out = Path(td) / "q.onnx"
        import logging
        lvl = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # ORT logs a "consider pre-processing" warning
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(model_path), str(tmp_out), None, calibrate_method=_ort_method(method),
                                calibration_cache_path=str(cache), **_quant_kwargs(exclude))
        finally:
            logging.getLogger().setLevel(lvl)
        q = onnx.load(str(tmp_out))
    _check_symmetric(q, out_path.name)
    return q


def _check_symmetric(q: onnx.ModelProto, what: str) -> None:
    """TensorRT rejects non-zero zero-points: make sure every Q/DQ zero-point is 0 (int8)."""
    inits = {t.name: t for t in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zp = onnx.numpy_helper.to_array(inits[n.input[2]])
            if zp.dtype != np.int8 or np.any(zp != 0):
                raise ATFRError(f"{what}: {n.name} has a non-zero or non-int8 zero-point; TensorRT needs symmetric int8")


def qdq_scales(model: onnx.ModelProto | str | Path) -> dict[str, np.ndarray]:
    """Scale initializers of every QuantizeLinear/DequantizeLinear node (for tests/reports)."""
    m = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    inits = {t.name: t for t in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits:
            out[n.name] = onnx.numpy_helper.to_array(inits[n.input[1]])
    return out


def load_cache(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ATFRError(f"calibration cache {p} is not readable JSON ({e.__class__.__name__})") from None
    if d.get("format") != CACHE_FORMAT or "graphs" not in d:
        raise ATFRError(f"{p} is not an atfr calibration cache")
    if int(d.get("version", 0)) > CACHE_VERSION:
        raise ATFRError(f"{p}: calibration cache version {d['version']} is newer than this atfr-deploy")
    return d


def back_feeds(m: Manifest, clip_inputs: list[list[np.ndarray]], progress: bool = False,
               desc: str = "front + SGS (fp32)") -> tuple[list[dict[str, np.ndarray]], list[tuple[int, ...]]]:
    """Per clip: the back graph's inputs (its own T') from the fp32 front + numpy SGS step."""
    feeds, bps = [], []
    it = progress_bar(clip_inputs, desc, unit="clip", enabled=progress)
    for f, bp in iter_back_feeds(m, it):
        feeds.append(f)
        bps.append(bp)
    return feeds, bps


def iter_back_feeds(m: Manifest, clip_inputs: Iterable[list[np.ndarray]]) -> Iterator[tuple[dict[str, np.ndarray], tuple[int, ...]]]:
    """:func:`back_feeds` one clip at a time: (back feed, B') as each clip is read."""
    from atfr.runtime.backends import OrtRunner
    from atfr.runtime.pipeline import Pipeline, SGSStep

    pipe = Pipeline(m, OrtRunner(m.path("front")), OrtRunner(m.path("back")), SGSStep(m) if m.sgs else None)
    for x in clip_inputs:
        (f, bp), = pipe.run_sgs(pipe.run_front(pipe.check_inputs(x)))
        yield f, bp


def calibrate(outdir: str | Path, data: str | Path | None = None, clips: int = 256, method: str | None = None,
              cache: str | Path | None = None, seed: int = 0, force: bool = False, progress: bool = True,
              clip_inputs: list[list[np.ndarray]] | None = None,
              warn: Callable[[str], None] | None = None, front: str = "float",
              float_stages: int = 1) -> CalibrationResult:
    """Calibrate an export folder and write ``back_int8.onnx`` (and ``front_int8.onnx`` with
    ``front="int8"``). Both stages are always calibrated, so the cache serves either mode.
    ``float_stages``: stages of the back graph after SGS whose convs stay float.

    ``cache``: an existing cache is loaded (no data needed, no inference run); otherwise the
    ranges are computed from ``data`` (a video folder or a .txt list) or ``clip_inputs``
    (per-clip per-pathway arrays) and saved there (default ``OUTDIR/int8_calibration.json``).
    """
    root = Path(outdir)
    if front not in FRONT_MODES:
        raise ATFRError(f"--front {front!r}: choose one of {', '.join(FRONT_MODES)}")
    m = load_manifest(root, check=True)
    say = warn or (lambda s: warnings.warn(s, stacklevel=2))
    write = [k for k in INT8_GRAPHS if front == "int8" or k != "front_int8"]
    outs = {k: root / f"{k}.onnx" for k in write}
    # A front_int8 left by an earlier --front int8 run would contradict this run: it is replaced
    # (removed) under the same --force rule as the graphs written.
    stale = root / "front_int8.onnx" if front == "float" and (root / "front_int8.onnx").exists() else None
    if not force:
        clash = [p for p in outs.values() if p.exists()] + ([stale] if stale else [])
        if clash:
            raise ATFRError(f"{clash[0]} already exists; pass --force to overwrite it")
    cache_path = Path(cache) if cache else root / DEFAULT_CACHE
    sources = {k: m.path(v) for k, v in INT8_GRAPHS.items()}
    check_free_space(sources, root, Path(tempfile.gettempdir()))
    # ONNX Runtime only ever sees private copies (calibration/workdir.py: never beside the user's files)
    with private_graphs(sources) as work:
        return _calibrate(m, root, work, data=data, clips=clips, method=method, cache=cache, cache_path=cache_path,
                          seed=seed, progress=progress, clip_inputs=clip_inputs, say=say, front=front,
                          float_stages=float_stages, write=write, outs=outs, stale=stale)


def _calibrate(m: Manifest, root: Path, work: PrivateGraphs, *, data, clips, method, cache, cache_path: Path,
               seed, progress, clip_inputs, say, front, float_stages, write, outs, stale) -> CalibrationResult:
    """calibrate()'s work once the export is checked, on the private copies in ``work``."""
    src, checks = work.paths, work.sha256
    fp_models = {k: onnx.load(str(p), load_external_data=False) for k, p in src.items()}
    excl = {k: excluded_nodes(g) for k, g in fp_models.items()}
    warn_list: list[str] = []

    def _warn(s: str) -> None:
        warn_list.append(s)
        say(s)

    from_cache = cache is not None and cache_path.exists()
    bhist: dict[str, dict[int, int]] = {}
    if from_cache:
        c = load_cache(cache_path)
        if method is not None and method != c["method"]:
            raise ATFRError(f"{cache_path} was calibrated with --method {c['method']}, not {method}; "
                            "use another --cache path to recalibrate")
        method = c["method"]
        for k, digest in checks.items():
            if c["graphs"].get(k, {}).get("source_sha256") != digest:
                raise ATFRError(f"{cache_path} was made for another export ({INT8_GRAPHS[k]}.onnx differs); "
                                "recalibrate with --data and a new --cache")
        n_clips = int(c.get("clips", 0))
        bhist = c.get("bprime_hist", {})
        excl = {k: list(c["graphs"][k].get("nodes_to_exclude", excl[k])) for k in INT8_GRAPHS}
    else:
        method = method or DEFAULT_METHOD
        _ort_method(method)
        if clip_inputs is None:
            if data is None:
                raise ATFRError("--data VIDEOS_DIR|LIST.txt is required (no calibration cache to reuse)")
            from .data import sample_clips
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = sample_clips(data, m.input, clips, seed, progress=progress)
            for w in caught:
                _warn(str(w.message))
            clip_inputs = [c.inputs for c in got]
            del got
        else:
            clip_inputs = list(clip_inputs)  # a copy: its slots are released below, not the caller's
        n_clips = len(clip_inputs)
        if n_clips == 0:
            raise ATFRError("no calibration clips")
        if n_clips < MIN_RECOMMENDED_CLIPS:
            _warn(f"only {n_clips} calibration clip(s); {MIN_RECOMMENDED_CLIPS}+ are recommended for stable INT8 ranges")
        # Both stages read the clips in clip order (ORT's histograms depend on the order, and the
        # cache must not depend on how the videos were decoded). The front stage reads them first;
        # the back stage then turns clip j into its back feed (fp32 front + SGS), collects it and
        # releases both, so no list of back feeds is ever held and the clips go one by one.
        front_feeds = ({f"clip{p}": np.ascontiguousarray(x, np.float32) for p, x in enumerate(ci)} for ci in clip_inputs)
        front_ranges = compute_ranges(src["front_int8"], front_feeds, method, "calibrating front", progress, n_clips)
        bps: list[tuple[int, ...]] = []

        def release() -> Iterator[list[np.ndarray]]:
            for j in range(n_clips):
                x, clip_inputs[j] = clip_inputs[j], None
                yield x

        def b_feeds() -> Iterator[dict[str, np.ndarray]]:
            for f, bp in iter_back_feeds(m, release()):
                bps.append(bp)
                yield f

        ranges = {
            "front_int8": front_ranges,
            "back_int8": compute_ranges(src["back_int8"], b_feeds(), method, "calibrating back", progress, n_clips),
        }
        for j, layer in enumerate(m.sgs):
            h: dict[int, int] = {}
            for bp in bps:
                h[int(bp[j])] = h.get(int(bp[j]), 0) + 1
            bhist[f"sgs{layer.pathway}"] = dict(sorted(h.items()))
        c = {
            "format": CACHE_FORMAT, "version": CACHE_VERSION, "method": method, "seed": int(seed),
            "clips": n_clips, "data": str(data) if data is not None else None,
            "bprime_hist": {k: {str(b): n for b, n in v.items()} for k, v in bhist.items()},
            "graphs": {k: {"source": src[k].name, "source_sha256": checks[k], "nodes_to_exclude": excl[k],
                           "tensors": ranges[k]} for k in INT8_GRAPHS},
        }
        write_json_atomic(cache_path, c)
        c = load_cache(cache_path)  # quantize from what was written: the cache round-trips by construction

    if float_stages < 0:
        raise ATFRError(f"--float-stages {float_stages}: must be >= 0")
    keep_float = first_stage_convs(fp_models["back_int8"], float_stages)
    if float_stages and not keep_float:
        _warn(f"--float-stages {float_stages}: the back graph has no stage-named convs (s<k>/...); "
              "every conv is quantized")
    # The cache holds ranges and the SGS exclusions only, so any float_stages reuses it.
    q_excl = {k: list(excl[k]) + (keep_float if k == "back_int8" else []) for k in write}
    models = {k: quantize_from_ranges(src[k], outs[k], c["graphs"][k]["tensors"], method, q_excl[k]) for k in write}
    for k, q in models.items():
        try:
            onnx.checker.check_model(q)
        except onnx.checker.ValidationError as e:
            raise ATFRError(f"int8: {k}.onnx fails onnx.checker ({str(e).splitlines()[0]})") from None
    from atfr.fileio import write_bytes_atomic
    for k, q in models.items():
        write_bytes_atomic(outs[k], q.SerializeToString())
    try:
        cache_rel = os.path.relpath(cache_path, root)
    except ValueError:
        cache_rel = str(cache_path)
    register_graphs(root, outs, precision_update={"int8": {
        "graphs": sorted(outs), "front": front,
        "format": "QDQ (symmetric int8, zero-point 0; per-channel weights; inputs of "
                  + ", ".join(QUANTIZED_OPS) + " only)",
        "tool": "onnxruntime.quantization.quantize_static", "method": method, "clips": n_clips,
        "cache": cache_rel, "nodes_to_exclude": excl["front_int8"],
        "float_stages": int(float_stages), "float_convs": keep_float,
        "bprime_hist": {k: {str(b): n for b, n in v.items()} for k, v in bhist.items()},
    }})
    if stale is not None:
        unregister_graphs(root, ["front_int8"])
        stale.unlink(missing_ok=True)
    return CalibrationResult(outs, cache_path, from_cache, n_clips, method, front,
                             {k: {int(b): int(n) for b, n in v.items()} for k, v in bhist.items()}, warn_list)
