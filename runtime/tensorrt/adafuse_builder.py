"""``atfr build`` on an AdaFuse export: one TensorRT engine per graph (``model.engine``, and for
AdaFuse-TSN ``online.engine``, ``online_gathered.engine``), each with a JSON sidecar as ATFR's
front/back engines, so the runtime's checks (TensorRT version, GPU, ONNX checksum) apply unchanged.

Written against the documented TensorRT Python API of 10.3 through 11.x (checked name by name
against NVIDIA's binding wheels, tests/test_real_bindings.py) and NOT executed here (no TensorRT).
What it builds, and why, is decided in :mod:`atfr.runtime.tensorrt.adafuse_plan` (tested).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Callable

from atfr import __version__
from atfr.fileio import atomic_path, check_writable, sha256_file, write_json_atomic

from ..manifest import load_manifest
from .adafuse_plan import describe, engine_name, graphs_to_build, policy_head_layers, precision_plan, profile_shapes
from .api import import_tensorrt, make_logger
from .builder import _build_one, save_timing_cache
from .cuda import gpu_info
from .compat import BuildOptions, check_supported, parse_version, sm_name


def _policy_selection(policy_outputs: list[str]) -> Callable[[list], set[str]]:
    return lambda layers: policy_head_layers(layers, policy_outputs)


def build_adafuse_engines(outdir: str | os.PathLike, opts: BuildOptions, progress: Callable[[str], None] | bool = True,
                          engine_dir: str | os.PathLike | None = None, verbose: bool = False) -> list[Path]:
    """Build every graph's engine (+ sidecar) of the AdaFuse export in ``outdir``; ``opts`` were
    checked by adafuse_plan.validate_options. Returns the written paths."""
    m = load_manifest(outdir, check=True)
    edir = Path(engine_dir) if engine_dir else m.root
    report = (lambda s: print(s, file=sys.stderr, flush=True)) if progress is True else (progress or None)  # noqa: E731
    graphs = graphs_to_build(m.graphs)
    shapes = {g: profile_shapes(m.graphs[g].inputs, opts.max_batch, g) for g in graphs}  # before any TensorRT call
    for g in graphs:
        for p in (edir / engine_name(g), edir / (engine_name(g) + ".json")):
            check_writable(p, opts.force)

    trt = import_tensorrt()
    version = parse_version(trt.__version__)
    check_supported(version, "host")
    plan = precision_plan(version, opts.precision, opts.tf32)
    for w in plan.warnings:
        print(f"WARNING ⚠️ {w}", file=sys.stderr)
    if report:
        report(f"building {m.name}: {describe(plan)}; {', '.join(g + '.onnx' for g in graphs)}")
    logger = make_logger(trt, verbose)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    cache_bytes = None
    if opts.timing_cache and Path(opts.timing_cache).is_file():
        cache_bytes = Path(opts.timing_cache).read_bytes()
    gpu = gpu_info()
    common = {
        "format": "atfr-engine", "version": 1, "atfr_deploy": __version__, "family": "adafuse",
        "tensorrt_version": str(trt.__version__), "gpu_name": gpu.get("gpu_name"),
        "compute_capability": gpu.get("compute_capability"),
        "sm": sm_name(gpu.get("compute_capability")) if gpu.get("compute_capability") else None,
        "cuda_runtime": gpu.get("cuda_runtime"), "platform": f"{platform.system()}-{platform.machine()}",
        "precision": opts.precision, "engine_precision": plan.precision, "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags), "model": m.name, "max_batch": opts.max_batch,
        "workspace_mb": opts.workspace_mb, "sgs": None, "plugin": None, "contains_sgs": False,
    }
    written: list[Path] = []
    cache_rejected = False
    for g in graphs:
        onnx_path = m.path(g)
        policy = [t.name for t in m.graphs[g].outputs if re.fullmatch(r"policy\d+", t.name)]
        if report:
            report(f"[{g}] parsing {onnx_path.name} and building (1 profile) ...")
        t0 = time.perf_counter()
        built = _build_one(trt, logger, onnx_path, [shapes[g]], plan, opts.workspace_mb, cache_bytes, report,
                           _policy_selection(policy), cache_source=opts.timing_cache)
        if built.tf32 is None and not plan.tf32:
            print(f"WARNING ⚠️ TensorRT {trt.__version__} has no BuilderFlag.TF32: TF32 could not be switched off",
                  file=sys.stderr)
        cache_rejected = cache_rejected or (built.cache_rejected and g == graphs[0])
        if built.timing_cache:
            cache_bytes = built.timing_cache  # the next graph reuses what this one learned
        eng = edir / engine_name(g)
        with atomic_path(eng) as tmp:
            tmp.write_bytes(built.plan)
        side = dict(common)
        side.update({
            "engine": eng.name, "engine_sha256": sha256_file(eng), "engine_bytes": len(built.plan), "role": g,
            "graph": g, "onnx_file": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
            "fp32_pinned_layers": built.pinned_layers, "fp32_pinned": "policy head" if built.pinned_layers else None,
            "io": built.io, "tf32": built.tf32,
            "profiles": [{n: [list(s) for s in mmo] for n, mmo in shapes[g].items()}],
            "build_seconds": round(time.perf_counter() - t0, 1),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        write_json_atomic(edir / (eng.name + ".json"), side)
        written += [eng, edir / (eng.name + ".json")]
        if report:
            report(f"[{g}] wrote {eng} ({len(built.plan) / 2**20:.1f} MiB) in {side['build_seconds']} s")
    written += save_timing_cache(opts, cache_bytes, cache_rejected)
    return written
