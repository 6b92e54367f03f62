"""Build the front and back TensorRT engines of an export (``atfr build``).

Written against the documented TensorRT Python API of 10.3 (JetPack 6.1/6.2) through 11.x and
NOT executed in this repository's CI (TensorRT cannot be installed there); the version choices
it applies come from :mod:`atfr.runtime.tensorrt.compat`, which is tested without TensorRT.

Outputs, next to the export (or in ``engine_dir``):

* ``front.engine`` / ``back.engine``: the raw serialized plans (nothing prepended, so trtexec
  and Polygraphy can load them too), written atomically;
* ``front.engine.json`` / ``back.engine.json``: sidecars with the TensorRT version, GPU, compute
  capability, precision plan, profiles, plugin and ONNX sha256, creation time. The runtime
  checks them before deserializing and prints one line telling the user to rebuild.

Torch-free. ``tensorrt`` is imported only inside the functions that need it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from atfr import __version__
from atfr.errors import ATFRError
from atfr.fileio import atomic_path, check_writable, sha256_file, write_json_atomic

from ..manifest import Manifest, fp16_front_is_fp32, int8_front_mode, load_manifest
from .api import first_line, import_tensorrt, make_logger
from .compat import (BuildOptions, PrecisionPlan, Profile, TRange, check_supported, default_profiles, fp32_layers,
                     graph_has_sgs, layers_matching, parse_profiles, parse_version, plan_engines, sm_name,
                     validate_build_options)
from .cuda import gpu_info
from .plugin import PLUGIN_NAME, PLUGIN_VERSION, load_plugin_library, plugin_variant

ENGINE_NAMES = ("front.engine", "back.engine")


# -- progress ------------------------------------------------------------------------------------

def _make_progress_monitor(trt: Any, report: Callable[[str], None]):
    """A trt.IProgressMonitor printing phase starts and step progress (TensorRT >= 10.0)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class _Progress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}
            self.depth: dict[str, int] = {}
            self.last = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.depth[phase_name] = self.depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self.steps[phase_name] = int(num_steps)
            if self.depth[phase_name] <= 1:
                report(f"{'  ' * self.depth[phase_name]}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            if self.depth.get(phase_name, 0) <= 1 and now - self.last > 2.0:
                self.last = now
                report(f"{'  ' * self.depth.get(phase_name, 0)}{phase_name}: {step + 1}/{self.steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            self.steps.pop(phase_name, None)

    return _Progress()


# -- network construction ------------------------------------------------------------------------

def _parse_onnx(trt: Any, builder: Any, logger: Any, onnx_path: Path, strongly_typed: bool):
    flags = 0
    st = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and st is not None:
        flags |= 1 << int(st)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    if not ok:
        errs = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        hint = ""
        if any("plugin" in e.lower() or "SGS" in e for e in errs):
            hint = " (is the SGS plugin library loaded with --plugin, and built for this TensorRT?)"
        raise ATFRError(f"TensorRT cannot parse {onnx_path.name}: {first_line(errs[0] if errs else 'unknown error')}"
                        f"{hint}")
    return network, parser


def network_layers(network: Any) -> list[tuple[str, list[str], list[str], str, list[int]]]:
    """(name, input tensor names, output tensor names, layer type name, input ranks) per layer, in
    network order: what the fp32 selections (compat.fp32_layers, adafuse_plan.policy_head_layers) read."""
    layers = []
    for i in range(network.num_layers):
        ly = network.get_layer(i)
        ins: list[str] = []
        ranks: list[int] = []
        for j in range(ly.num_inputs):
            t = ly.get_input(j)
            if t is not None:  # an optional input left out
                ins.append(t.name)
                ranks.append(len(t.shape))
        outs = [ly.get_output(k).name for k in range(ly.num_outputs)]
        layers.append((ly.name, ins, outs, str(ly.type).split(".")[-1], ranks))
    return layers


def sgs_fp32_selection(feat: list[str], dist: list[str], patterns: Sequence[str] = ()) -> Callable[[list], set[str]]:
    """Weakly typed fp16 of an ATFR front: SGS and the embedding/distance branch, plus the layers
    named by ``patterns`` (the export's fp16 policy, e.g. the feature block)."""
    def select(layers: list) -> set[str]:
        return (fp32_layers([ly[:3] for ly in layers], feat, dist)
                | layers_matching([ly[0] for ly in layers], patterns))

    return select


def _pin_fp32(trt: Any, network: Any, select: Callable[[list], set[str]]) -> int:
    """Weakly typed fp16: keep the layers ``select`` names (from :func:`network_layers`) in fp32
    (precision constraints). Only the 10.x weakly typed plans get here (TensorRT 11 has no
    ILayer.precision)."""
    keep = select(network_layers(network))
    floats = (trt.float32, trt.float16)
    n = 0
    for i in range(network.num_layers):
        ly = network.get_layer(i)
        if ly.name not in keep:
            continue
        if all(ly.get_output(k).dtype in floats for k in range(ly.num_outputs)):
            ly.precision = trt.float32
        for k in range(ly.num_outputs):
            if ly.get_output(k).dtype in floats:
                ly.set_output_type(k, trt.float32)
        n += 1
    return n


def _set_flags(trt: Any, config: Any, plan: PrecisionPlan) -> bool | None:
    """Set the plan's precision flags (by name) and set or clear TF32 as the plan says.

    Returns whether TF32 is on for this build as the config reports it, or None where this
    TensorRT has no BuilderFlag.TF32 (then nothing can switch it off; the caller warns)."""
    for name in plan.builder_flags:
        flag = getattr(trt.BuilderFlag, name, None)
        if flag is None:  # TensorRT 11 removed the weak-typing flags; the plan should not ask for them
            raise ATFRError(f"this TensorRT ({trt.__version__}) has no BuilderFlag.{name}; "
                            f"plan '{plan.describe()}' does not apply")
        config.set_flag(flag)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is None:
        return None
    # TensorRT sets TF32 by default; it has no per-layer switch, so the SGS-feeding layers stay
    # exact only with the flag cleared for the whole build (see PrecisionPlan.tf32).
    if plan.tf32:
        config.set_flag(tf32)
    else:
        config.clear_flag(tf32)
    state = config.get_flag(tf32) if hasattr(config, "get_flag") else plan.tf32
    if bool(state) != plan.tf32:
        raise ATFRError(f"TensorRT {trt.__version__} did not {'set' if plan.tf32 else 'clear'} BuilderFlag.TF32")
    return bool(state)


def _apply_timing_cache(config: Any, cache_bytes: bytes | None, source: str | None) -> bool:
    """Give the builder the timing cache (or a fresh one); True when ``cache_bytes`` was rejected.

    IBuilderConfig.set_timing_cache returns False for a cache from another GPU or TensorRT version
    (ignore_mismatch=False: reusing foreign timings picks slow tactics), and create_timing_cache
    returns None for bytes that are not a cache. Either way the build continues with a fresh cache
    and says so; a build that cannot even set a fresh cache fails."""
    if cache_bytes:
        cache = config.create_timing_cache(cache_bytes)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return False
        print(f"WARNING ⚠️ timing cache {source or ''} was not accepted by this TensorRT/GPU "
              "(written by another TensorRT version or GPU, or not a timing cache); starting a fresh one",
              file=sys.stderr)
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ATFRError("TensorRT refused a new, empty timing cache (IBuilderConfig.set_timing_cache returned False)",
                        exit_code=4)
    return bool(cache_bytes)


@dataclass
class BuiltEngine:
    plan: bytes
    timing_cache: bytes | None
    io: list[dict[str, Any]]
    pinned_layers: int
    tf32: bool | None  # None: this TensorRT has no BuilderFlag.TF32
    cache_rejected: bool


def _io_specs(network: Any) -> list[dict[str, Any]]:
    out = []
    for i in range(network.num_inputs):
        t = network.get_input(i)
        out.append({"name": t.name, "mode": "input", "dtype": str(t.dtype).split(".")[-1], "shape": list(t.shape)})
    for i in range(network.num_outputs):
        t = network.get_output(i)
        out.append({"name": t.name, "mode": "output", "dtype": str(t.dtype).split(".")[-1], "shape": list(t.shape)})
    return out


# -- profiles --------------------------------------------------------------------------------------

def front_profile_shapes(m: Manifest, max_batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """clip{p}: N in [1, max_batch], opt 1 (the pipeline runs SGS fronts clip by clip)."""
    lo, hi = m.clip_shapes(1), m.clip_shapes(max_batch)
    return {f"clip{p}": (tuple(lo[p]), tuple(lo[p]), tuple(hi[p])) for p in range(m.num_pathways)}


def back_profile_shapes(m: Manifest, profiles: list[Profile], max_batch: int) -> list[dict[str, tuple[tuple[int, ...], ...]]]:
    """Per profile, per back input: (min, opt, max) with N in [1, max_batch] and T' from the profile."""
    out = []
    sgs_paths = [l.pathway for l in m.sgs]
    for prof in profiles:
        shapes = {}
        for p in range(m.num_pathways):
            c, t, h, w = m.split_shapes[p]
            name = m.back_input_name(p)
            if p in sgs_paths:
                layer = m.sgs_for(p)
                assert layer is not None
                r: TRange = prof[sgs_paths.index(p)]
                c, h, w = layer.channels, layer.height, layer.width
                shapes[name] = ((1, c, r.lo, h, w), (1, c, r.opt, h, w), (max_batch, c, r.hi, h, w))
            else:
                shapes[name] = ((1, c, t, h, w), (1, c, t, h, w), (max_batch, c, t, h, w))
        out.append(shapes)
    return out


def resolve_profiles(m: Manifest, profiles: str | None, opt_bprime: int | None) -> list[Profile]:
    bins = [l.bins for l in m.sgs]
    if not bins:
        return [()]
    if profiles:
        return parse_profiles(profiles, bins)
    stats = {int(x["pathway"]): x.get("opt") for x in m.bprime_stats.get("layers", [])}
    opts = [opt_bprime or stats.get(l.pathway) for l in m.sgs]
    return default_profiles(bins, opts)


# -- the build -------------------------------------------------------------------------------------

def _build_one(trt: Any, logger: Any, onnx_path: Path, shapes: list[dict[str, tuple]], plan: PrecisionPlan,
               workspace_mb: int | None, cache_bytes: bytes | None, progress: Callable[[str], None] | None,
               pin: Callable[[list], set[str]] | None, cache_source: str | None = None) -> BuiltEngine:
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, onnx_path, plan.strongly_typed)
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    tf32 = _set_flags(trt, config, plan)
    pinned = _pin_fp32(trt, network, pin) if (plan.pin_fp32 and pin is not None) else 0
    for shp in shapes:
        prof = builder.create_optimization_profile()
        for name, (mn, op, mx) in shp.items():
            prof.set_shape(name, mn, op, mx)
        if config.add_optimization_profile(prof) < 0:
            raise ATFRError(f"{onnx_path.name}: TensorRT rejected optimization profile {shp}")
    rejected = _apply_timing_cache(config, cache_bytes, cache_source)
    monitor = _make_progress_monitor(trt, progress) if progress else None
    if monitor is not None:
        config.progress_monitor = monitor
    plan_mem = builder.build_serialized_network(network, config)
    if plan_mem is None:
        err = logger.errors[-1] if logger.errors else "no error message"
        raise ATFRError(f"TensorRT failed to build {onnx_path.name}: {first_line(err)}")
    new_cache = config.get_timing_cache()
    cache_out = bytes(memoryview(new_cache.serialize())) if new_cache is not None else None
    return BuiltEngine(bytes(memoryview(plan_mem)), cache_out, _io_specs(network), pinned, tf32, rejected)


def engine_paths(engine_dir: Path) -> list[Path]:
    return [engine_dir / n for n in ENGINE_NAMES] + [engine_dir / (n + ".json") for n in ENGINE_NAMES]


def build_engines(outdir: str | os.PathLike, precision: str = "fp32", sgs: str = "plugin",
                  workspace_mb: int | None = None, timing_cache: str | None = None, profiles: str | None = None,
                  plugin_path: str | None = None, opt_bprime: int | None = None, max_batch: int = 1,
                  progress: Callable[[str], None] | bool | None = True, force: bool = False,
                  engine_dir: str | os.PathLike | None = None, plugin_variant_: str = "auto",
                  verbose: bool = False, opts: BuildOptions | None = None, tf32: bool = False) -> list[Path]:
    """Build front.engine and back.engine (+ sidecars) for the export in ``outdir``.

    Returns the written paths. Raises ATFRError/DependencyError with one-line messages.
    """
    m = load_manifest(outdir, check=True)
    edir = Path(engine_dir) if engine_dir else m.root
    report: Callable[[str], None] | None
    if progress is True:
        report = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    else:
        report = progress or None
    int8_front = int8_front_mode(m.raw)
    if opts is None:  # called from Python rather than the CLI: validate here
        opts = validate_build_options(
            BuildOptions(precision, sgs, plugin_path, workspace_mb, timing_cache, profiles, opt_bprime, max_batch,
                         force, tf32=tf32), [l.bins for l in m.sgs], m.graphs, int8_front=int8_front)
        for w in opts.warnings:
            print(w, file=sys.stderr)
    for p in engine_paths(edir):
        check_writable(p, opts.force)

    trt = import_tensorrt()
    version = parse_version(trt.__version__)
    check_supported(version, opts.sgs)
    outs = {k: [t.name for t in g.outputs] for k, g in m.graphs.items()}
    engine_plans, plan_warnings = plan_engines(version, opts.precision, outs, opts.sgs, has_sgs_layers=bool(m.sgs),
                                               int8_front=int8_front, tf32=opts.tf32,
                                               front_fp32=fp16_front_is_fp32(m.raw))
    plans = {e.role: e for e in engine_plans}
    for w in dict.fromkeys(plan_warnings):
        print(f"WARNING ⚠️ {w}", file=sys.stderr)
    if report:
        for e in engine_plans:
            report(f"building {m.name} {e.role}: {e.plan.describe()}; {e.graph}.onnx")

    logger = make_logger(trt, verbose)
    if hasattr(trt, "init_libnvinfer_plugins"):
        trt.init_libnvinfer_plugins(logger, "")
    front_has_sgs = graph_has_sgs(outs[plans["front"].graph])
    plugin_meta = None
    if opts.sgs == "plugin" and front_has_sgs and m.sgs:
        ns = (m.raw.get("sgs", [{}])[0].get("plugin") or {}).get("namespace", "atfr")
        assert opts.plugin_path
        digest = load_plugin_library(trt, opts.plugin_path, ns, plugin_variant_)
        plugin_meta = {"file": Path(opts.plugin_path).name, "path": os.path.abspath(opts.plugin_path),
                       "sha256": digest, "variant": plugin_variant(opts.plugin_path, plugin_variant_),
                       "name": PLUGIN_NAME, "version": PLUGIN_VERSION, "namespace": ns}

    cache_bytes = None
    if opts.timing_cache and Path(opts.timing_cache).is_file():
        cache_bytes = Path(opts.timing_cache).read_bytes()
    gpu = gpu_info()
    t_profiles = resolve_profiles(m, opts.profiles, opts.opt_bprime)
    sgs_feat = [f"feat{l.pathway}" for l in m.sgs]
    # Layers the export's fp16 policy keeps fp32 beyond SGS (e.g. the feature block), per graph.
    fp32_patterns = (m.raw.get("precision") or {}).get("fp32_layers_by_graph") or {}
    sgs_dist = [f"dist{l.pathway}" for l in m.sgs]
    front_fp32 = list(fp32_patterns.get(plans["front"].graph, []))
    front_pin = sgs_fp32_selection(sgs_feat, sgs_dist, front_fp32) if (sgs_feat or sgs_dist or front_fp32) else None
    jobs = [
        ("front", plans["front"].graph, [front_profile_shapes(m, opts.max_batch)], front_pin,
         plugin_meta if front_has_sgs else None),
        ("back", plans["back"].graph, back_profile_shapes(m, t_profiles, opts.max_batch), None, None),
    ]
    written: list[Path] = []
    cache_rejected = False
    common = {
        "format": "atfr-engine", "version": 1, "atfr_deploy": __version__,
        "tensorrt_version": str(trt.__version__), "gpu_name": gpu.get("gpu_name"),
        "compute_capability": gpu.get("compute_capability"),
        "sm": sm_name(gpu.get("compute_capability")) if gpu.get("compute_capability") else None,
        "cuda_runtime": gpu.get("cuda_runtime"), "platform": f"{platform.system()}-{platform.machine()}",
        "precision": opts.precision, "model": m.name, "max_batch": opts.max_batch, "workspace_mb": opts.workspace_mb,
    }
    for role, key, shapes, pin, plug in jobs:
        onnx_path = m.path(key)
        t0 = time.perf_counter()
        if report:
            report(f"[{role}] parsing {onnx_path.name} and building ({len(shapes)} profile(s)) ...")
        plan = plans[role].plan
        built = _build_one(trt, logger, onnx_path, shapes, plan, opts.workspace_mb, cache_bytes, report,
                           pin if role == "front" else None, cache_source=opts.timing_cache)
        if built.tf32 is None and not plan.tf32:
            print(f"WARNING ⚠️ TensorRT {trt.__version__} has no BuilderFlag.TF32: TF32 could not be switched off, "
                  "so B' may differ from ONNX Runtime on Ampere and newer GPUs", file=sys.stderr)
        cache_rejected = cache_rejected or (built.cache_rejected and role == "front")
        data, io, pinned = built.plan, built.io, built.pinned_layers
        if built.timing_cache:
            cache_bytes = built.timing_cache  # the back build reuses what the front learned
        eng = edir / f"{role}.engine"
        with atomic_path(eng) as tmp:
            tmp.write_bytes(data)
        side = dict(common)
        side.update({
            "engine": eng.name, "engine_sha256": sha256_file(eng), "engine_bytes": len(data), "role": role,
            "engine_precision": plan.precision, "strongly_typed": plan.strongly_typed,
            "builder_flags": list(plan.builder_flags),
            "graph": key, "onnx_file": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
            "sgs": opts.sgs if m.sgs else None, "contains_sgs": bool(role == "front" and graph_has_sgs(outs[key])),
            "plugin": plug, "fp32_pinned_layers": pinned, "io": io, "tf32": built.tf32,
            "profiles": [{n: [list(s) for s in mmo] for n, mmo in shp.items()} for shp in shapes],
            "tprime_profiles": [[str(r) for r in pr] for pr in t_profiles] if role == "back" else None,
            "build_seconds": round(time.perf_counter() - t0, 1),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        })
        write_json_atomic(edir / f"{role}.engine.json", side)
        written += [eng, edir / f"{role}.engine.json"]
        if report:
            report(f"[{role}] wrote {eng} ({len(data) / 2**20:.1f} MiB) in {side['build_seconds']} s")
    written += save_timing_cache(opts, cache_bytes, cache_rejected)
    return written


def save_timing_cache(opts: Any, cache_bytes: bytes | None, rejected: bool) -> list[Path]:
    """Write the build's timing cache to ``--timing-cache`` (atomically); a cache TensorRT rejected
    (another version or GPU) is replaced only with --force. Returns what was written."""
    if not (opts.timing_cache and cache_bytes):
        return []
    if rejected and not opts.force:
        print(f"WARNING ⚠️ not replacing the rejected timing cache {opts.timing_cache} (pass --force to replace it "
              "with this build's)", file=sys.stderr)
        return []
    with atomic_path(opts.timing_cache) as tmp:
        tmp.write_bytes(cache_bytes)
    return [Path(opts.timing_cache)]

