"""TensorRT version logic without TensorRT: capabilities, precision plans, profiles, engine checks.

Everything here is pure Python (no tensorrt, no torch, no CUDA) so the choices the builder and the
runtime make on TensorRT 10.3 (JetPack 6.1/6.2) through 11.x can be unit-tested anywhere. The
modules that touch TensorRT (``builder``, ``backend`` in this package) only *apply* these plans.

Version facts used (see docs/tensorrt-notes.md in the shared research notes):

* IPluginV3 / data-dependent plugin outputs: 10.0; ONNX-parser import of V3 plugins: 10.1.
* Implicit INT8 calibration deprecated in 10.1; weak typing (BuilderFlag FP16/INT8,
  precision constraints) deprecated in 10.12; all of it removed in 11.0, where networks are
  always strongly typed and the remaining BuilderFlag values were renumbered (so flags are
  always looked up by *name*, never by number).
* ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` exists on every 10.x, but NVIDIA calls
  strong typing complete only from 10.12.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

from atfr.errors import ATFRError, DependencyError

PRECISIONS = ("fp32", "fp16", "int8")
SGS_MODES = ("plugin", "fallback", "host")
MIN_TRT = (10, 0)  # IPluginV3 / data-dependent outputs; JetPack 6.0 (8.6) and older cannot run the plugin
WARN = "WARNING ⚠️"


# -- versions ----------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class TRTVersion:
    major: int
    minor: int = 0
    patch: int = 0
    build: int = 0

    @property
    def release(self) -> tuple[int, int, int]:
        """What engine compatibility depends on (the build number does not matter)."""
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)


_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?")


def parse_version(v: "str | TRTVersion | Sequence[int]") -> TRTVersion:
    """'10.3.0.26', '10.13.3.9', '11.0', '10.16.1.11+cuda13', 'v10.3' -> TRTVersion."""
    if isinstance(v, TRTVersion):
        return v
    if isinstance(v, (tuple, list)):
        parts = [int(x) for x in v][:4]
        if not parts:
            raise ATFRError("empty TensorRT version")
        return TRTVersion(*parts)
    m = _VERSION_RE.match(str(v))
    if not m:
        raise ATFRError(f"cannot parse TensorRT version {v!r}")
    nums = [int(g) for g in m.groups() if g is not None]
    return TRTVersion(*nums)


# -- capabilities ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Capabilities:
    version: TRTVersion
    has_fp16_flag: bool  # BuilderFlag.FP16 (weak typing); removed in 11.0
    has_int8_flag: bool  # BuilderFlag.INT8; removed in 11.0
    has_precision_constraints: bool  # OBEY/PREFER_PRECISION_CONSTRAINTS; removed in 11.0
    has_implicit_int8: bool  # IInt8Calibrator (deprecated 10.1, removed 11.0); atfr never uses it
    weak_typing_deprecated: bool  # 10.12+
    strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED exists (all 10.x/11.x)
    strongly_typed_available: bool  # strong typing complete (10.12+), the recommended mode
    strongly_typed_default: bool  # always on (11.0+); the creation flag is ignored
    supports_ipluginv3: bool  # 10.0+
    onnx_v3_plugin: bool  # parser imports V3 plugins: 10.1+
    has_progress_monitor: bool  # trt.IProgressMonitor: 10.0+
    output_allocator_async: bool  # IOutputAllocator.reallocate_output_async: 10.0+
    parser_namespace_from_domain: bool  # 10.10+
    device_memory_v2: bool  # get_device_memory_size_for_profile_v2 / set_device_memory: 10.1+


def capabilities(version: "str | TRTVersion") -> Capabilities:
    v = parse_version(version)
    weak = v.major < 11
    return Capabilities(
        version=v,
        has_fp16_flag=weak,
        has_int8_flag=weak,
        has_precision_constraints=weak,
        has_implicit_int8=weak,
        weak_typing_deprecated=v.at_least(10, 12),
        strongly_typed_flag=v.major >= 9,
        strongly_typed_available=v.at_least(10, 12),
        strongly_typed_default=v.major >= 11,
        supports_ipluginv3=v.major >= 10,
        onnx_v3_plugin=v.at_least(10, 1),
        has_progress_monitor=v.major >= 10,
        output_allocator_async=v.major >= 10,
        parser_namespace_from_domain=v.at_least(10, 10),
        device_memory_v2=v.at_least(10, 1),
    )


def check_supported(version: "str | TRTVersion", sgs: str = "plugin") -> None:
    """TensorRT older than 10.0 cannot host the SGS plugin (no IPluginV3 / data-dependent shapes)."""
    v = parse_version(version)
    if (v.major, v.minor) < MIN_TRT:
        raise DependencyError(f"TensorRT {v} is too old: atfr needs TensorRT >= 10.0 (IPluginV3, data-dependent "
                              "shapes; JetPack 6.1+); use the ONNX Runtime backend on this device")
    if sgs == "plugin" and not capabilities(v).onnx_v3_plugin:
        raise DependencyError(f"TensorRT {v}'s ONNX parser cannot import V3 plugins (needs >= 10.1); "
                              "use --sgs fallback or --sgs host")


# -- precision plans ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PrecisionPlan:
    """How to build one precision on one TensorRT version.

    graph_suffix: "" (the fp32 graphs), "_fp16" or "_int8" (graphs the export/calibration wrote).
    builder_flags: BuilderFlag *names* (looked up with getattr; numbers differ between 10 and 11).
    strongly_typed: create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED.
    pin_fp32: pin SGS, embedding and distance layers to fp32 (layer precision constraints; only
              meaningful on weakly typed fp16 builds).
    tf32: leave BuilderFlag.TF32 set. TensorRT sets it by default, and on Ampere and newer (Orin is
          sm_87) fp32 convolutions and MatMuls then round their inputs to 10-bit mantissas: about
          1e-3 relative error in the SGS distances, which SGS turns into bin shifts of up to ~0.06
          at B=32, far beyond the golden cases' bin margins (>= 0.005), so B' would differ from
          ONNX Runtime. TensorRT has no per-layer TF32 switch (layer precision float32 still allows
          TF32 kernels, and strongly typed fp32 islands use them too), so the only way to keep the
          SGS-feeding layers exact is to clear the flag for the whole build, in every precision.
          It costs little where it matters least: fp16/int8 builds run their bulk in fp16/int8
          anyway. ``atfr build --tf32`` opts back in.
    """

    precision: str
    version: TRTVersion
    graph_suffix: str
    builder_flags: tuple[str, ...] = ()
    strongly_typed: bool = False
    pin_fp32: bool = False
    warnings: tuple[str, ...] = ()
    tf32: bool = False

    @property
    def weakly_typed(self) -> bool:
        return not self.strongly_typed

    def describe(self) -> str:
        mode = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = "+".join(self.builder_flags) or "no precision flags"
        graphs = f"*{self.graph_suffix}.onnx graphs" if self.graph_suffix else "fp32 graphs"
        pin = ", SGS/embedding/distance layers pinned to fp32" if self.pin_fp32 else ""
        tf32 = "TF32 on (--tf32)" if self.tf32 else "TF32 off"
        return f"{self.precision} on TensorRT {self.version}: {mode}, {flags}, {tf32}, {graphs}{pin}"


def choose_precision_plan(version: "str | TRTVersion", precision: str, int8_graph_present: bool = False,
                          fp16_graph_present: bool = False, tf32: bool = False) -> PrecisionPlan:
    """See :func:`_choose_precision_plan`; ``tf32`` (default off, see PrecisionPlan.tf32) is
    carried into the plan for every precision."""
    plan = _choose_precision_plan(version, precision, int8_graph_present, fp16_graph_present)
    if not tf32:
        return plan
    warn = ("--tf32: TensorRT may run the fp32 SGS embedding/distance layers with TF32 (10-bit mantissas); "
            "B' can then differ from ONNX Runtime and PyTorch on Ampere and newer GPUs",)
    return replace(plan, tf32=True, warnings=plan.warnings + warn)


def _choose_precision_plan(version: "str | TRTVersion", precision: str, int8_graph_present: bool = False,
                           fp16_graph_present: bool = False) -> PrecisionPlan:
    """Decide how to build ``precision`` on TensorRT ``version``. Never an implicit INT8 calibrator.

    * fp32: plain network (strongly typed on 11.x, where that is the only mode; the fp32 graph
      has no casts, so the result is identical).
    * fp16, 10.x < 10.12: the fp32 graphs with BuilderFlag FP16 + OBEY_PRECISION_CONSTRAINTS,
      SGS/embedding/distance layers pinned to fp32 (the bin assignment is sensitive to the
      distances; B' must not change with precision).
    * fp16, >= 10.12: a strongly typed network from an fp16-cast ONNX (``*_fp16`` graphs: the
      graph carries the casts and the fp32 islands). On 10.12-10.x without such graphs the
      (deprecated) flag route is still possible and is used with a warning; on 11.x it is an error.
    * int8: explicit Q/DQ graphs only (``*_int8``, written by 'atfr calibrate'); weakly typed
      with INT8+FP16 on 10.x, strongly typed on 11.x.
    """
    v = parse_version(version)
    caps = capabilities(v)
    if precision not in PRECISIONS:
        raise ATFRError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return PrecisionPlan("fp32", v, "", (), strongly_typed=caps.strongly_typed_default)
    if precision == "fp16":
        if not caps.strongly_typed_available:
            warn = ()
            if fp16_graph_present:
                warn = (f"TensorRT {v} predates complete strong typing (10.12); building fp16 from the fp32 "
                        "graphs with the FP16 builder flag, not from the *_fp16 graphs",)
            return PrecisionPlan("fp16", v, "", ("FP16", "OBEY_PRECISION_CONSTRAINTS"), strongly_typed=False,
                                 pin_fp32=True, warnings=warn)
        if fp16_graph_present:
            return PrecisionPlan("fp16", v, "_fp16", (), strongly_typed=True)
        if caps.has_fp16_flag:  # 10.12 .. 10.x: deprecated but present
            return PrecisionPlan(
                "fp16", v, "", ("FP16", "OBEY_PRECISION_CONSTRAINTS"), strongly_typed=False, pin_fp32=True,
                warnings=("the export has no fp16 graphs (front_fp16/back_fp16); using the FP16 builder flag, "
                          "deprecated since TensorRT 10.12 and removed in 11.0 - export fp16 graphs for "
                          "TensorRT 11",))
        raise ATFRError(f"fp16 on TensorRT {v} needs fp16 ONNX graphs (TensorRT 11 removed the FP16 builder "
                        "flag; networks are strongly typed): the export has no front_fp16/back_fp16 graphs - "
                        "convert them (e.g. ModelOpt AutoCast, keeping SGS in fp32) and record them in "
                        "atfr.json, or build fp32")
    # int8
    if not int8_graph_present:
        raise ATFRError("int8 needs explicit Q/DQ graphs (front_int8/back_int8) in the export: run "
                        "'atfr calibrate OUTDIR' first (implicit INT8 calibration is deprecated since "
                        "TensorRT 10.1, removed in 11.0, and not supported by atfr)")
    if caps.has_int8_flag:
        warn = ()
        if caps.weak_typing_deprecated:
            warn = ("weakly typed INT8 (BuilderFlag INT8+FP16) is deprecated since TensorRT 10.12; "
                    "TensorRT 11 builds the same Q/DQ graphs strongly typed",)
        return PrecisionPlan("int8", v, "_int8", ("INT8", "FP16"), strongly_typed=False, warnings=warn)
    return PrecisionPlan("int8", v, "_int8", (), strongly_typed=True)


# -- which graphs to build ---------------------------------------------------------------------

def front_base_graph(sgs: str) -> str:
    if sgs not in SGS_MODES:
        raise ATFRError(f"unknown --sgs {sgs!r}; choose one of: {', '.join(SGS_MODES)}")
    return {"plugin": "front_plugin", "fallback": "front_fallback", "host": "front"}[sgs]


def graph_has_sgs(graph_outputs: Iterable[str]) -> bool:
    """A front graph whose outputs include sgs{p} already ran SGS (plugin or standard ops)."""
    return any(re.fullmatch(r"sgs\d+", n) for n in graph_outputs)


@dataclass(frozen=True)
class GraphChoice:
    front: str
    back: str
    warnings: tuple[str, ...] = ()


def resolve_graphs(plan: PrecisionPlan, graphs: dict[str, Sequence[str]] | Iterable[str], sgs: str,
                   has_sgs_layers: bool = True) -> GraphChoice:
    """Pick the manifest graph keys for the front and back engines.

    ``graphs``: manifest graph keys, or key -> list of output names (to tell whether a front graph
    contains SGS). Suffixed graphs are searched as ``<front base><suffix>`` then ``front<suffix>``.
    """
    outs: dict[str, Sequence[str]] = dict(graphs) if isinstance(graphs, dict) else {k: () for k in graphs}
    warns: list[str] = []
    if not has_sgs_layers and sgs != "host":
        sgs = "host"  # nothing to sample: the plain front graph
    base = front_base_graph(sgs)
    sfx = plan.graph_suffix
    cands = [base + sfx] if not sfx else [base + sfx, "front" + sfx]
    front = next((c for c in cands if c in outs), None)
    if front is None:
        hint = "re-run 'atfr export'" if not sfx else (
            "run 'atfr calibrate OUTDIR'" if sfx == "_int8" else "convert/export fp16 graphs")
        raise ATFRError(f"the export has no {' or '.join(repr(c) for c in cands)} graph: {hint}")
    back = "back" + sfx
    if back not in outs:
        raise ATFRError(f"the export has {front!r} but no {back!r} graph; re-run the step that wrote it")
    if has_sgs_layers and outs[front]:
        inside = graph_has_sgs(outs[front])
        if sgs != "host" and not inside:
            warns.append(f"{front} does not contain SGS; SGS will run on the host (numpy) between the engines")
    return GraphChoice(front, back, tuple(warns))


# -- fp32 islands for weakly typed fp16 --------------------------------------------------------

def layers_matching(names: Iterable[str], patterns: Iterable[str]) -> set[str]:
    """Layer names that ``re.fullmatch`` one of ``patterns`` (the manifest's
    ``precision.fp32_layers_by_graph``: escaped ONNX node names, which the parser uses as layer
    names). Bad patterns are ignored rather than failing a build."""
    regs = []
    for p in patterns:
        try:
            regs.append(re.compile(p))
        except re.error:
            continue
    return {n for n in names if any(r.fullmatch(n) for r in regs)}


def fp32_layers(layers: Sequence[tuple[str, Sequence[str], Sequence[str]]], feat_names: Iterable[str],
                dist_names: Iterable[str]) -> set[str]:
    """Names of the layers to keep in fp32: the embedding/distance branch and SGS itself.

    ``layers``: (layer name, input tensor names, output tensor names) in network order. The
    embedding/distance layers are those that feed dist{p} but not feat{p}; SGS is everything that
    consumes feat{p}/dist{p} downstream (the plugin layer, or the fallback's standard ops).
    """
    producer: dict[str, int] = {}
    for i, (_, _, outs) in enumerate(layers):
        for o in outs:
            producer[o] = i

    def ancestors(tensors: Iterable[str]) -> set[int]:
        seen: set[int] = set()
        stack = [producer[t] for t in tensors if t in producer]
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            stack.extend(producer[t] for t in layers[i][1] if t in producer)
        return seen

    feat, dist = set(feat_names), set(dist_names)
    keep = ancestors(dist) - ancestors(feat)
    live = feat | dist
    for i, (_, ins, outs) in enumerate(layers):  # network order is topological
        if any(t in live for t in ins):
            keep.add(i)
            live.update(outs)
    return {layers[i][0] for i in keep}


# -- optimisation profiles ---------------------------------------------------------------------

@dataclass(frozen=True)
class TRange:
    lo: int
    hi: int
    opt: int

    def __str__(self) -> str:
        return f"{self.lo}-{self.hi}:{self.opt}"


Profile = tuple[TRange, ...]  # one TRange per SGS pathway, in manifest order


def _parse_range(s: str) -> TRange:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*(?::\s*(\d+))?\s*", s)
    if not m:
        raise ATFRError(f"bad profile range {s.strip()!r}: expected MIN-MAX[:OPT] (e.g. 1-8:4) or T[:OPT]")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    opt = int(m.group(3)) if m.group(3) else (lo + hi + 1) // 2
    if lo < 1 or hi < lo:
        raise ATFRError(f"bad profile range {s.strip()!r}: need 1 <= MIN <= MAX")
    if not lo <= opt <= hi:
        raise ATFRError(f"bad profile range {s.strip()!r}: OPT {opt} is outside {lo}-{hi}")
    return TRange(lo, hi, opt)


def parse_profiles(text: str, bins: Sequence[int]) -> list[Profile]:
    """'1-4:2,5-32:8' -> back-engine profiles over T' per SGS pathway.

    Profiles are separated by ',' ; within a profile, pathways by '/' (e.g. '1-2:2/1-16:8,3-4:4/17-32:24'
    for SlowFast). One range for several pathways applies to each of them, capped at its B. The
    profiles together must cover T' = 1..B for every pathway, or some clips could not run.
    """
    if not bins:
        raise ATFRError("--profiles: this export has no SGS layer, so the back engine has a fixed T")
    profs: list[Profile] = []
    for chunk in [c for c in text.split(",") if c.strip()]:
        parts = [_parse_range(x) for x in chunk.split("/")]
        if len(parts) == 1 and len(bins) > 1:
            parts = [TRange(min(parts[0].lo, b), min(parts[0].hi, b), min(parts[0].opt, b)) for b in bins]
        if len(parts) != len(bins):
            raise ATFRError(f"--profiles {chunk.strip()!r}: {len(parts)} range(s) for {len(bins)} SGS pathway(s)")
        for r, b in zip(parts, bins):
            if r.hi > b:
                raise ATFRError(f"--profiles {chunk.strip()!r}: T' max {r.hi} exceeds B={b} (the most SGS can emit)")
        profs.append(tuple(parts))
    if not profs:
        raise ATFRError("--profiles is empty")
    if len(profs) > 16:
        raise ATFRError(f"--profiles: {len(profs)} profiles is too many (at most 16)")
    for i, b in enumerate(bins):
        covered = set()
        for pr in profs:
            covered.update(range(pr[i].lo, pr[i].hi + 1))
        missing = [t for t in range(1, b + 1) if t not in covered]
        if missing:
            raise ATFRError(f"--profiles leave T'={_ranges(missing)} uncovered for SGS pathway #{i} (B={b}); "
                            f"the profiles must cover 1-{b}")
    return profs


def _ranges(vals: list[int]) -> str:
    out, start, prev = [], vals[0], vals[0]
    for x in vals[1:] + [None]:  # type: ignore[list-item]
        if x is not None and x == prev + 1:
            prev = x
            continue
        out.append(f"{start}-{prev}" if prev != start else str(start))
        if x is not None:
            start = prev = x
    return ",".join(out)


def default_profiles(bins: Sequence[int], opts: Sequence[int | None]) -> list[Profile]:
    """One profile T' in [1, B] per pathway, opt = the typical B' (manifest bprime_stats or --opt)."""
    prof = []
    for b, o in zip(bins, opts):
        o = int(o) if o else max(1, (b + 1) // 2)
        prof.append(TRange(1, b, min(max(o, 1), b)))
    return [tuple(prof)]


def tightest_profile(profiles: Sequence[Sequence[tuple[int, int]]], values: Sequence[int]) -> int:
    """Index of the profile whose (lo, hi) ranges all contain ``values`` (one range per value)
    with the smallest total width; -1 when none does. TensorRT runs fastest in the tightest
    profile that fits, since its tactics were chosen around that profile's opt shape."""
    best, best_w = -1, None
    for i, ranges in enumerate(profiles):
        if all(lo <= v <= hi for (lo, hi), v in zip(ranges, values)):
            w = sum(hi - lo for lo, hi in ranges)
            if best_w is None or w < best_w:
                best, best_w = i, w
    return best


def pick_profile(profiles: Sequence[Profile], tprimes: Sequence[int]) -> int:
    """Index of the tightest profile whose ranges contain every pathway's T'."""
    best = tightest_profile([[(r.lo, r.hi) for r in pr] for pr in profiles], tprimes)
    if best < 0:
        raise ATFRError(f"no optimization profile of the back engine covers T'={tuple(tprimes)}; "
                        "rebuild with 'atfr build --profiles' covering 1..B")
    return best


# -- engine compatibility ------------------------------------------------------------------------

def normalize_cc(cc: "str | Sequence[int] | None") -> tuple[int, int] | None:
    """'8.7', 'sm_87', '87', (8, 7) -> (8, 7)."""
    if cc is None or cc == "":
        return None
    if isinstance(cc, (tuple, list)):
        return int(cc[0]), int(cc[1])
    s = str(cc).strip().lower().removeprefix("sm_").removeprefix("sm").removeprefix("compute_")
    m = re.fullmatch(r"(\d+)\.(\d+)", s)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = re.fullmatch(r"(\d+?)(\d)", s)
    if m:
        return int(m.group(1)), int(m.group(2))
    raise ATFRError(f"cannot parse compute capability {cc!r}")


def sm_name(cc: "str | Sequence[int] | None") -> str:
    n = normalize_cc(cc)
    return f"sm_{n[0]}{n[1]}" if n else "sm_?"


def engine_compat_problem(sidecar: dict[str, Any], runtime_version: "str | TRTVersion", gpu_name: str | None,
                          compute_capability: "str | Sequence[int] | None", plugin_hash: str | None,
                          outdir: str = "OUTDIR") -> str | None:
    """One line saying why an engine cannot run here, or None.

    TensorRT plans are tied to the TensorRT release (major.minor.patch) and the GPU architecture;
    the SGS plugin's serialized state to the plugin library that built it. A different GPU model
    with the same compute capability is allowed (TensorRT itself only warns).
    """
    rv = parse_version(runtime_version)
    try:
        bv = parse_version(sidecar.get("tensorrt_version", ""))
    except ATFRError:
        return f"engine metadata has no TensorRT version (built by another tool?): rebuild with 'atfr build {outdir}'"
    bcc = normalize_cc(sidecar.get("compute_capability"))
    rcc = normalize_cc(compute_capability)
    bgpu = sidecar.get("gpu_name") or "an unknown GPU"
    here = f"this is TensorRT {rv} on {gpu_name or 'an unknown GPU'} ({sm_name(rcc)})"
    built = f"engine built with TensorRT {bv} on {bgpu} ({sm_name(bcc)})"
    if bv.release != rv.release or (bcc and rcc and bcc != rcc):
        return f"{built}; {here}: rebuild with 'atfr build {outdir}'"
    plug = sidecar.get("plugin") or None
    if plug and plug.get("sha256"):
        if not plugin_hash:
            return (f"{sidecar.get('engine') or 'the engine'} contains the SGS plugin: pass --plugin PATH (the "
                    f"{plug.get('file') or 'libatfr_sgs.so'} it was built with)")
        if plugin_hash != plug["sha256"]:
            return (f"engine built with a different SGS plugin library (sha256 {plug['sha256'][:12]}..., this one "
                    f"{plugin_hash[:12]}...): rebuild with 'atfr build {outdir} --plugin PATH'")
    return None


def stale_problem(sidecar: dict[str, Any], onnx_sha256: str | None, outdir: str = "OUTDIR") -> str | None:
    """The engine was built from a different ONNX than the export now holds."""
    want = sidecar.get("onnx_sha256")
    if want and onnx_sha256 and want != onnx_sha256:
        return (f"{sidecar.get('engine', 'engine')} was built from an older {sidecar.get('onnx_file', 'ONNX graph')} "
                f"(the export changed since): rebuild with 'atfr build {outdir} --force'")
    return None


# -- build options (validated before tensorrt is imported) ----------------------------------------

@dataclass
class BuildOptions:
    precision: str = "fp32"
    sgs: str = "plugin"
    plugin_path: str | None = None
    workspace_mb: int | None = None
    timing_cache: str | None = None
    profiles: str | None = None
    opt_bprime: int | None = None
    max_batch: int = 1
    force: bool = False
    warnings: list[str] = field(default_factory=list)
    tf32: bool = False  # opt back in to TensorRT's TF32 default (see PrecisionPlan.tf32)


@dataclass(frozen=True)
class EnginePlan:
    """What one engine (role "front" or "back") is built from and how."""

    role: str
    plan: PrecisionPlan
    graph: str


def plan_engines(version: "str | TRTVersion", precision: str, graphs: "dict[str, Sequence[str]] | Iterable[str]",
                 sgs: str, has_sgs_layers: bool = True, int8_front: str | None = "int8", tf32: bool = False,
                 front_fp32: bool = False) -> tuple[list[EnginePlan], tuple[str, ...]]:
    """Per-engine plans and graphs for ``atfr build --precision``; returns (plans, warnings).

    Front and back are separate engines, so they may differ: an INT8 export calibrated with
    ``--front float`` (the default; see atfr/calibration/int8.py) builds the front with the fp16
    plan of this TensorRT version (the features that set B' stay float; SGS stays fp32) and the
    back from back_int8. ``front_fp32`` (the export's fp16 policy keeps the whole front fp32,
    ``atfr export --fp16``'s default): wherever the front would take the fp16 plan it takes the
    plain fp32 plan and graph instead; the same numbers as the all-fp32 ``front_fp16`` graph or
    every layer pinned, without an FP16 flag or casts for TensorRT to work around. Every other
    case uses one plan for both.
    """
    outs: dict[str, Sequence[str]] = dict(graphs) if isinstance(graphs, dict) else {k: () for k in graphs}
    float_front = precision == "int8" and int8_front == "float"
    if float_front or (front_fp32 and precision == "fp16"):
        # Front and back get their own plans: the back its precision's, the front fp32 or fp16.
        if precision == "int8":
            back_plan = choose_precision_plan(version, "int8", int8_graph_present="back_int8" in outs, tf32=tf32)
            back, fix = "back_int8", "run 'atfr calibrate OUTDIR'"
        else:
            back_plan = choose_precision_plan(version, "fp16", fp16_graph_present="back_fp16" in outs, tf32=tf32)
            back, fix = "back" + back_plan.graph_suffix, "re-export with --fp16"
        if front_fp32:
            front_plan = choose_precision_plan(version, "fp32", tf32=tf32)
        else:
            front_plan = choose_precision_plan(
                version, "fp16", tf32=tf32, fp16_graph_present="front_fp16" in outs
                or f"{front_base_graph(sgs if has_sgs_layers else 'host')}_fp16" in outs)
        fchoice = resolve_graphs(front_plan, outs, sgs, has_sgs_layers)
        if back not in outs:
            raise ATFRError(f"the export has no {back!r} graph: {fix}")
        return ([EnginePlan("front", front_plan, fchoice.front), EnginePlan("back", back_plan, back)],
                tuple(dict.fromkeys(front_plan.warnings + back_plan.warnings + fchoice.warnings)))
    plan = choose_precision_plan(version, precision, int8_graph_present="back_int8" in outs,
                                 fp16_graph_present="back_fp16" in outs, tf32=tf32)
    choice = resolve_graphs(plan, outs, sgs, has_sgs_layers)
    return [EnginePlan("front", plan, choice.front), EnginePlan("back", plan, choice.back)], plan.warnings + choice.warnings


def validate_build_options(opts: BuildOptions, bins: Sequence[int], graph_keys: Iterable[str],
                           exists=None, int8_front: str | None = "int8") -> BuildOptions:
    """Check option combinations per precision; append Ultralytics-style warnings; raise ATFRError.

    ``exists``: path predicate (os.path.exists by default; injectable for tests).
    """
    import os

    exists = exists or os.path.exists
    keys = set(graph_keys)
    w = opts.warnings
    if opts.precision not in PRECISIONS:
        raise ATFRError(f"--precision {opts.precision!r}: choose one of {', '.join(PRECISIONS)}")
    if opts.sgs not in SGS_MODES:
        raise ATFRError(f"--sgs {opts.sgs!r}: choose one of {', '.join(SGS_MODES)}")
    if not bins:
        opts.sgs = "host"  # nothing to sample: the plain front graph
        if opts.profiles or opts.opt_bprime:
            w.append(f"{WARN} this export has no SGS layer (fixed T); --profiles/--opt are ignored")
            opts.profiles, opts.opt_bprime = None, None
    if opts.sgs == "plugin":
        if not opts.plugin_path:
            raise ATFRError("--sgs plugin needs --plugin PATH (libatfr_sgs.so or libatfr_sgs_vc.so built from "
                            "plugins/sgs); or build with --sgs fallback (standard ONNX ops) or --sgs host")
        if not exists(opts.plugin_path):
            raise ATFRError(f"--plugin {opts.plugin_path}: no such file (build plugins/sgs first)")
    elif opts.plugin_path:
        w.append(f"{WARN} --plugin is ignored with --sgs {opts.sgs}")
        opts.plugin_path = None
    front_q = int8_front != "float"  # 'float': calibrated with --front float, only back_int8 exists
    if opts.precision == "int8" and not ((not front_q or {"front_int8", f"{front_base_graph(opts.sgs)}_int8"} & keys)
                                         and "back_int8" in keys):
        need = "front_int8, back_int8" if front_q else "back_int8"
        raise ATFRError(f"--precision int8 needs Q/DQ graphs ({need}) in the export: run "
                        "'atfr calibrate OUTDIR' first (atfr never uses implicit INT8 calibration)")
    if opts.precision == "fp16" and "back_fp16" not in keys:
        w.append(f"{WARN} the export has no fp16 graphs: fp16 uses the FP16 builder flag on TensorRT 10.x "
                 "(deprecated since 10.12) and fails on TensorRT 11")
    if opts.sgs == "fallback":
        w.append(f"{WARN} --sgs fallback runs SGS as standard ops inside the front engine; the plugin is "
                 "usually faster (--sgs plugin --plugin PATH)")
    if opts.max_batch < 1:
        raise ATFRError(f"--max-batch {opts.max_batch}: must be >= 1")
    if opts.max_batch > 64:
        raise ATFRError(f"--max-batch {opts.max_batch}: at most 64")
    if opts.max_batch > 1 and opts.sgs in ("plugin", "fallback") and bins:
        w.append(f"{WARN} --max-batch {opts.max_batch}: the front engine still runs one clip at a time "
                 "(SGS gives each clip its own B'); the batch size applies to the back engine")
    if opts.workspace_mb is not None:
        if opts.workspace_mb <= 0:
            raise ATFRError(f"--workspace {opts.workspace_mb}: must be > 0 (MiB)")
        if opts.workspace_mb < 256:
            w.append(f"{WARN} --workspace {opts.workspace_mb} MiB is small; TensorRT may skip fast 3D-conv "
                     "tactics (1024+ recommended, 512 on Jetson Orin Nano)")
    if opts.profiles and opts.opt_bprime:
        w.append(f"{WARN} --opt is ignored when --profiles gives each profile its own OPT")
        opts.opt_bprime = None
    if opts.opt_bprime is not None:
        if opts.opt_bprime < 1 or any(opts.opt_bprime > b for b in bins):
            raise ATFRError(f"--opt {opts.opt_bprime}: must be within 1..B ({', '.join(map(str, bins))})")
    if opts.profiles:
        parse_profiles(opts.profiles, bins)  # raises on bad syntax or coverage
    if opts.timing_cache:
        parent = os.path.dirname(os.path.abspath(opts.timing_cache))
        if not exists(parent):
            raise ATFRError(f"--timing-cache {opts.timing_cache}: folder {parent} does not exist")
    return opts
