"""What ``atfr build`` makes of an AdaFuse export, without TensorRT: engines, profiles, options,
precision plan and the policy-head layers kept in fp32. Pure Python (tested anywhere); the
builder (:mod:`atfr.runtime.tensorrt.adafuse_builder`) applies it, written against the TensorRT
10.3-11.x API and not executed here.

* One engine per graph of the export: ``model.engine`` (the clip graph), and for AdaFuse-TSN
  ``online.engine`` and ``online_gathered.engine``; each with a JSON sidecar as ATFR engines.
* One optimisation profile per engine, from the manifest's input specs: a symbolic first
  dimension (``N``: the clip graph, the dense online graph) is the batch, 1..``--max-batch`` with
  opt 1; every other dimension must be static (the gathered graph is all static: batch 1), and a
  static input gets min = opt = max = its shape (allowed by IOptimizationProfile::setDimensions).
  Input names come from the manifest, never from here.
* fp16 pins the policy head to fp32 (see :func:`policy_head_layers`); int8 is refused.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Iterable, Sequence

from atfr.errors import ATFRError

from .compat import WARN, BuildOptions, PrecisionPlan, capabilities, choose_precision_plan, parse_version

GRAPHS = ("model", "online", "online_gathered")  # the graphs an AdaFuse export may hold, in build order

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]
# (layer name, input tensor names, output tensor names, layer type name e.g. "REDUCE", input ranks)
LayerInfo = tuple[str, Sequence[str], Sequence[str], str, Sequence[int]]


def engine_name(graph: str) -> str:
    return f"{graph}.engine"


def graphs_to_build(graph_keys: Iterable[str]) -> list[str]:
    keys = set(graph_keys)
    if "model" not in keys:
        raise ATFRError("the AdaFuse export has no 'model' graph (model.onnx): re-run 'atfr export'")
    return [g for g in GRAPHS if g in keys]


def profile_shapes(inputs: Sequence[Any], max_batch: int, graph: str = "graph") -> Shapes:
    """(min, opt, max) per input from its manifest spec (``.name``, ``.shape``): a symbolic first
    dimension is the batch, 1..max_batch (opt 1: a camera or one clip); any other symbolic
    dimension has no bound to build for, which is an error naming it."""
    out: Shapes = {}
    for t in inputs:
        lo, hi = [], []
        for i, d in enumerate(t.shape):
            if isinstance(d, int) and d >= 0:
                lo.append(d)
                hi.append(d)
            elif i == 0:
                lo.append(1)
                hi.append(int(max_batch))
            else:
                raise ATFRError(f"{graph}.onnx input {t.name!r} has a dynamic dimension {i} ({d!r}) that only the "
                                "batch may have: re-run 'atfr export'")
        out[t.name] = (tuple(lo), tuple(lo), tuple(hi))
    return out


def validate_options(opts: BuildOptions, exists=None) -> BuildOptions:
    """``atfr build`` options for an AdaFuse export: ATFR's SGS options do not apply (warned and
    dropped), int8 is refused, the rest is checked as for ATFR exports."""
    exists = exists or os.path.exists
    w = opts.warnings
    if opts.precision == "int8":
        raise ATFRError("--precision int8: AdaFuse exports have no Q/DQ graphs ('atfr calibrate' calibrates ATFR "
                        "exports only); build --precision fp32 or fp16")
    if opts.precision not in ("fp32", "fp16"):
        raise ATFRError(f"--precision {opts.precision!r}: choose fp32 or fp16 for an AdaFuse export")
    for flag, value in (("--plugin", opts.plugin_path), ("--profiles", opts.profiles), ("--opt", opts.opt_bprime)):
        if value:
            w.append(f"{WARN} {flag} is ignored: an AdaFuse export has no SGS layer")
    opts.sgs, opts.plugin_path, opts.profiles, opts.opt_bprime = "host", None, None, None
    if not 1 <= opts.max_batch <= 64:
        raise ATFRError(f"--max-batch {opts.max_batch}: must be within 1..64")
    if opts.workspace_mb is not None and opts.workspace_mb <= 0:
        raise ATFRError(f"--workspace {opts.workspace_mb}: must be > 0 (MiB)")
    if opts.timing_cache:
        parent = os.path.dirname(os.path.abspath(opts.timing_cache))
        if not exists(parent):
            raise ATFRError(f"--timing-cache {opts.timing_cache}: folder {parent} does not exist")
    return opts


def precision_plan(version: Any, precision: str, tf32: bool = False) -> PrecisionPlan:
    """fp32: as ATFR. fp16: AdaFuse exports have no fp16 graphs, so the FP16 builder flag route
    with the policy head pinned to fp32 (precision constraints); deprecated from 10.12 (warned),
    gone in 11.x (refused: TensorRT 11 builds fp16 only from graphs that carry the casts)."""
    v = parse_version(version)
    if precision == "fp16" and not capabilities(v).has_fp16_flag:
        raise ATFRError(f"fp16 on TensorRT {v} needs fp16 ONNX graphs (TensorRT 11 removed the FP16 builder flag; "
                        "networks are strongly typed) and AdaFuse exports have none: build --precision fp32")
    plan = choose_precision_plan(v, precision, tf32=tf32)
    if precision == "fp16":  # ATFR's wording names its front/back graphs; say it for AdaFuse
        warn = tuple(w for w in plan.warnings if "front_fp16" not in w)
        if capabilities(v).weak_typing_deprecated:
            warn = ("the FP16 builder flag is deprecated since TensorRT 10.12 and removed in 11.0; AdaFuse exports "
                    "have no fp16 graphs for strongly typed builds",) + warn
        plan = replace(plan, warnings=warn, pin_fp32=True)
    return plan


def describe(plan: PrecisionPlan) -> str:
    mode = "strongly typed" if plan.strongly_typed else "weakly typed"
    flags = "+".join(plan.builder_flags) or "no precision flags"
    pin = ", policy head pinned to fp32" if plan.pin_fp32 else ""
    return f"{plan.precision} on TensorRT {plan.version}: {mode}, {flags}, TF32 {'on' if plan.tf32 else 'off'}{pin}"


def is_feature_pool(kind: str, ranks: Sequence[int]) -> bool:
    """A reduction or pooling of a feature map ([N,C,H,W] or larger): the block input pooled for the
    policy. The head itself works on [N,C], [N,T,C] and [N*T,C,3] tensors (rank <= 3)."""
    return kind in ("REDUCE", "POOLING") and bool(ranks) and ranks[0] >= 4


def policy_head_layers(layers: Sequence[LayerInfo], policy_outputs: Iterable[str]) -> set[str]:
    """Names of the layers of the policy heads: everything ``policy{i}`` depends on, walked back
    from those outputs up to and including the pooling of the block input (or a state input such
    as the online graph's ``pool{i}``). Shape layers end the walk without being kept (their
    outputs are integers; a Reshape's shape read from a feature map must not pull the backbone in).

    Why fp32: the policy is the first maximum of log(softmax(gate_fc1(...))) over 3 actions per
    channel. fp16 keeps 11 significant bits: log-probabilities in [-2, -1) are rounded to steps of
    2^-10 (~1e-3), so actions closer than that can become exact ties, which the first-maximum rule
    resolves to the lower index (skip over reuse over keep): another policy than fp32 gives. The
    fp16 backbone still feeds the head, so this removes the head's own flips, not all of them
    (benchmarks/adafuse_fp16_policy.py)."""
    producer: dict[str, int] = {}
    for i, ly in enumerate(layers):
        for o in ly[2]:
            producer[o] = i
    keep: set[int] = set()
    stack = [producer[t] for t in policy_outputs if t in producer]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        name, ins, _outs, kind, ranks = layers[i]
        if kind == "SHAPE":
            continue
        keep.add(i)
        if is_feature_pool(kind, ranks):
            continue
        stack.extend(producer[t] for t in ins if t in producer)
    return {layers[i][0] for i in keep}
