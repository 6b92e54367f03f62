"""Our TensorRT and cuda-python code against NVIDIA's real Python bindings (issue 23).

TensorRT 10.3 (JetPack 6.1/6.2), 10.16 and 11.4, cuda-python 12.6 and 13.0, imported over stub
libraries (tests/real_bindings.py). Without the wheels (no package index when bootstrapping) or a C
compiler these tests skip with the reason; they never need a GPU or TensorRT's libraries.

* the bindings import and are the pinned versions;
* static conformance (tests/trt_conformance.py) of runtime/tensorrt/, the doctor, the device check, the
  benchmark scripts: every name, enum member, method and call signature, per version, on the paths
  compat.py takes on that version; trampoline overrides the bindings call;
* compat.py's capability table agrees with what each version's module really has;
* perturbations (a misspelled method, BuilderFlag.FP16 on the 11.x path, a misnamed notify_shape
  override) are each caught, naming the version, file and line.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import replace
from pathlib import Path

import pytest

import real_bindings as rb
import trt_conformance as tc
from real_bindings import Surfaces

ROOT = rb.ROOT
TRT_KEYS = [p.key for p in rb.TRT_PINS]
CUDA_KEYS = [p.key for p in rb.CUDA_PINS]
CUDA_MODULES = rb.CUDA_MODULES


# -- compat.py's version branches -----------------------------------------------------------------

def all_plans(version: str):
    """Every precision plan compat.py can choose on ``version`` (all graph and TF32 combinations)."""
    from atfr.errors import ATFRError
    from atfr.runtime.tensorrt.compat import PRECISIONS, choose_precision_plan

    plans = []
    for prec, i8, f16, tf32 in itertools.product(PRECISIONS, (False, True), (False, True), (False, True)):
        try:
            plans.append(choose_precision_plan(version, prec, int8_graph_present=i8, fp16_graph_present=f16,
                                               tf32=tf32))
        except ATFRError:
            continue
    return plans


def version_paths(version: str) -> tuple[dict[str, set[str]], set[str]]:
    """(names read with getattr per enum, functions never reached) on ``version``, from compat.py.

    builder._set_flags reads each plan's builder_flags with getattr(trt.BuilderFlag, name);
    builder._pin_fp32 runs only for plans with pin_fp32 (checked by test_pin_fp32_call_is_guarded)."""
    plans = all_plans(version)
    dynamic = {"BuilderFlag": {f for p in plans for f in p.builder_flags}}
    unreachable = set() if any(p.pin_fp32 for p in plans) else {"_pin_fp32"}
    return dynamic, unreachable


def check_trt(surfaces: Surfaces, key: str, sources: dict[Path, str] | None = None, version: str | None = None):
    s = surfaces.trt(key)
    dynamic, unreachable = version_paths(version or s["trt"].version)
    return tc.Checker(s, f"TensorRT {key}", dynamic, unreachable).check_files(tc.source_files(), sources)


# -- 1. the bindings themselves ------------------------------------------------------------------------

@pytest.mark.parametrize("key", TRT_KEYS + CUDA_KEYS)
def test_bindings_import_as_pinned(binding_surfaces: Surfaces, key: str) -> None:
    mod = "tensorrt" if key in TRT_KEYS else CUDA_MODULES["rt"]
    d = binding_surfaces.get(key, mod)
    pinned = rb.PINS[key].requirements[0].split("==")[1]
    if key in TRT_KEYS:
        assert d["version"] == pinned, (d["version"], pinned)
        assert {"Builder", "Runtime", "ICudaEngine", "IExecutionContext", "IOutputAllocator"} <= set(d["names"])
    else:
        assert {"cudaMalloc", "cudaGetDevice", "cudaMemcpyKind"} <= set(d["names"])


# -- 2. static conformance -----------------------------------------------------------------------------

@pytest.mark.parametrize("key", TRT_KEYS)
def test_tensorrt_calls_conform(binding_surfaces: Surfaces, key: str) -> None:
    r = check_trt(binding_surfaces, key)
    assert not r.problems, "\n".join(r.lines())
    # The walk really reached the builder, backend and plugin code (a checker that sees nothing passes).
    core = {"trt.Builder", "Builder.create_network", "Builder.build_serialized_network", "IBuilderConfig.set_flag",
            "IBuilderConfig.set_timing_cache", "IOptimizationProfile.set_shape", "OnnxParser.parse_from_file",
            "Runtime.deserialize_cuda_engine", "ICudaEngine.get_tensor_profile_shape",
            "IExecutionContext.execute_async_v3", "IExecutionContext.set_output_allocator",
            "IPluginRegistry.get_creator", "ILogger.Severity"}
    assert core <= r.seen, sorted(core - r.seen)
    assert r.checked_calls >= 40, r.checked_calls
    assert set(r.subclasses.values()) == {"ILogger", "IOutputAllocator", "IProgressMonitor"}, r.subclasses


@pytest.mark.parametrize("key", CUDA_KEYS)
def test_cuda_python_calls_conform(binding_surfaces: Surfaces, key: str) -> None:
    r = tc.Checker(binding_surfaces.cuda(key), f"cuda-python {key}").check_files(tc.source_files())
    assert not r.problems, "\n".join(r.lines())
    core = {"rt.cudaMalloc", "rt.cudaMemcpyAsync", "cudaMemcpyKind.cudaMemcpyHostToDevice", "rt.cudaGetDevice",
            "rt.cudaStreamBeginCapture", "rt.cudaGraphLaunch", "drv.cuDriverGetVersion", "rt.cudaGetDeviceCount"}
    assert core <= r.seen, sorted(core - r.seen)
    assert r.checked_calls >= 20, r.checked_calls


def test_guarded_names_exist_in_some_version(binding_surfaces: Surfaces) -> None:
    """A name behind hasattr/getattr(..., default)/try may be missing in one version, never in all:
    a misspelling under a guard would silently disable the feature everywhere."""
    missing = None
    for key in TRT_KEYS:
        g = check_trt(binding_surfaces, key).guarded_missing
        missing = set(g) if missing is None else missing & set(g)
        where = g
    assert not missing, [str(where[m]) for m in sorted(missing)]


def test_pin_fp32_call_is_guarded() -> None:
    """version_paths skips _pin_fp32 on versions without pinning plans: its one call must sit under plan.pin_fp32."""
    tree = ast.parse((ROOT / "runtime/tensorrt/builder.py").read_text())
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.IfExp) and any(isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_pin_fp32"
                                               for c in ast.walk(node.body)):
            calls.append("pin_fp32" in ast.unparse(node.test))
    n = sum(isinstance(c, ast.Call) and getattr(c.func, "id", "") == "_pin_fp32" for c in ast.walk(tree))
    assert calls == [True] and n == 1, (calls, n)


@pytest.mark.parametrize("key", TRT_KEYS)
def test_compat_capabilities_match_the_bindings(binding_surfaces: Surfaces, key: str) -> None:
    from atfr.runtime.tensorrt.compat import capabilities

    s = binding_surfaces.trt(key)["trt"]
    caps = capabilities(s.version)
    flag = lambda n: s.member("BuilderFlag", n) is not None  # noqa: E731
    real = {
        "has_fp16_flag": flag("FP16"), "has_int8_flag": flag("INT8"),
        "has_precision_constraints": flag("OBEY_PRECISION_CONSTRAINTS") and flag("PREFER_PRECISION_CONSTRAINTS"),
        "has_implicit_int8": s.entry("IInt8Calibrator") is not None,
        "strongly_typed_flag": s.member("NetworkDefinitionCreationFlag", "STRONGLY_TYPED") is not None,
        "has_progress_monitor": s.entry("IProgressMonitor") is not None,
        "device_memory_v2": s.member("ICudaEngine", "get_device_memory_size_for_profile_v2") is not None,
        "output_allocator_async": "reallocate_output_async" in s.so_strings,
    }
    claimed = {k: getattr(caps, k) for k in real}
    assert claimed == real, f"TensorRT {key}: compat.capabilities says {claimed}, the bindings have {real}"


# -- 7. perturbations: each mistake is caught with version, file and line -------------------------------

def _perturbed(rel: str, old: str, new: str) -> tuple[dict[Path, str], int]:
    path = ROOT / rel
    text = path.read_text()
    assert text.count(old) == 1, f"{rel}: {old!r} occurs {text.count(old)} times"
    line = text[: text.index(old)].count("\n") + 1
    return {path: text.replace(old, new)}, line


def test_misspelled_method_is_caught(binding_surfaces: Surfaces) -> None:
    src, line = _perturbed("runtime/tensorrt/builder.py", "config.set_memory_pool_limit(", "config.set_memory_pool_limt(")
    for key in TRT_KEYS:
        lines = check_trt(binding_surfaces, key, src).lines()
        assert any(f"runtime/tensorrt/builder.py:{line}:" in ln and "set_memory_pool_limt" in ln
                   and ln.startswith(f"TensorRT {key}") for ln in lines), lines


def test_fp16_flag_on_the_11x_path_is_caught(binding_surfaces: Surfaces, monkeypatch) -> None:
    """compat.py wrongly claiming BuilderFlag.FP16 on 11.x makes the fp16 plan ask for it there."""
    from atfr.runtime.tensorrt import compat

    real = compat.capabilities
    monkeypatch.setattr(compat, "capabilities", lambda v: replace(real(v), has_fp16_flag=True,
                                                                   strongly_typed_available=False))
    assert "FP16" in compat.choose_precision_plan("11.4", "fp16").builder_flags
    text = (ROOT / "runtime/tensorrt/builder.py").read_text()
    line = text[: text.index("getattr(trt.BuilderFlag, name")].count("\n") + 1
    lines = check_trt(binding_surfaces, "11.4").lines()
    assert any(f"runtime/tensorrt/builder.py:{line}:" in ln and "'FP16'" in ln and ln.startswith("TensorRT 11.4")
               for ln in lines), lines
    assert not check_trt(binding_surfaces, "10.3").problems  # FP16 exists there


def test_misnamed_trampoline_override_is_caught(binding_surfaces: Surfaces) -> None:
    src, line = _perturbed("runtime/tensorrt/backend.py", "def notify_shape(", "def notify_shapes(")
    for key in TRT_KEYS:
        lines = check_trt(binding_surfaces, key, src).lines()
        assert any(f"runtime/tensorrt/backend.py:{line}:" in ln and "notify_shapes" in ln for ln in lines), lines


def test_wrong_arguments_are_caught(binding_surfaces: Surfaces) -> None:
    """A call with a keyword the pybind signature does not have, and one with an extra argument."""
    src, line = _perturbed("runtime/tensorrt/builder.py", "config.set_timing_cache(cache, ignore_mismatch=False):\n"
                           "            return False", "config.set_timing_cache(cache, ignore_mismatches=False):\n"
                           "            return False")
    lines = check_trt(binding_surfaces, "10.3", src).lines()
    assert any(f"builder.py:{line}:" in ln and "ignore_mismatches" in ln for ln in lines), lines
    src, line = _perturbed("runtime/tensorrt/builder.py", "builder.create_builder_config()",
                           "builder.create_builder_config(1)")
    lines = check_trt(binding_surfaces, "11.4", src).lines()
    assert any(f"builder.py:{line}:" in ln and "create_builder_config" in ln for ln in lines), lines


def test_renamed_cuda_call_is_caught(binding_surfaces: Surfaces) -> None:
    src, line = _perturbed("runtime/tensorrt/cuda.py", "self.rt.cudaStreamSynchronize(", "self.rt.cudaStreamSync(")
    for key in CUDA_KEYS:
        lines = tc.Checker(binding_surfaces.cuda(key), key).check_files(tc.source_files(), src).lines()
        assert any(f"runtime/tensorrt/cuda.py:{line}:" in ln and "cudaStreamSync" in ln for ln in lines), lines


# -- 8. AdaFuse engines (runtime/tensorrt/adafuse_*.py, builder.network_layers) ---------------------------

def test_adafuse_engine_code_is_checked(binding_surfaces: Surfaces) -> None:
    """The AdaFuse builder and loader are walked on every version: the layer type and input ranks the
    policy-head pins read, the runtime and engine calls of the loader."""
    files = {str(p.relative_to(ROOT)) for p in tc.source_files()}
    assert {"runtime/tensorrt/adafuse_builder.py", "runtime/tensorrt/adafuse_backend.py"} <= files
    for key in TRT_KEYS:
        r = check_trt(binding_surfaces, key)
        assert not r.problems, "\n".join(r.lines())
        want = {"ILayer.type", "ILayer.get_input", "ITensor.shape", "ITensor.name", "INetworkDefinition.get_layer",
                "trt.Runtime", "trt.init_libnvinfer_plugins"}
        assert want <= r.seen, (key, sorted(want - r.seen))


@pytest.mark.parametrize("rel, old, new, word", [
    ("runtime/tensorrt/adafuse_backend.py", "runtime = trt.Runtime(logger)", "runtime = trt.Runtim(logger)", "Runtim"),
    ("runtime/tensorrt/builder.py", "str(ly.type)", "str(ly.kind)", "kind"),
    ("runtime/tensorrt/builder.py", "ranks.append(len(t.shape))", "ranks.append(len(t.dims))", "dims"),
])
def test_adafuse_mistakes_are_caught(binding_surfaces: Surfaces, rel: str, old: str, new: str, word: str) -> None:
    src, line = _perturbed(rel, old, new)
    for key in TRT_KEYS:
        lines = check_trt(binding_surfaces, key, src).lines()
        assert any(f"{rel}:{line}:" in ln and word in ln and ln.startswith(f"TensorRT {key}") for ln in lines), lines


@pytest.mark.parametrize("key", TRT_KEYS)
def test_adafuse_fp16_plan_fits_each_version(binding_surfaces: Surfaces, key: str) -> None:
    """The AdaFuse fp16 plan pins (ILayer.precision, set_output_type) and asks for BuilderFlag names only
    where the version has them; where it has not (11.x), fp16 is refused before any TensorRT call."""
    from atfr.errors import ATFRError
    from atfr.runtime.tensorrt.adafuse_plan import precision_plan

    s = binding_surfaces.trt(key)["trt"]
    has_pins = s.member("ILayer", "precision") is not None and s.member("ILayer", "set_output_type") is not None
    try:
        plan = precision_plan(s.version, "fp16")
    except ATFRError as e:
        assert not has_pins and "build --precision fp32" in str(e), (key, str(e))
        return
    assert plan.pin_fp32 and has_pins, key
    assert all(s.member("BuilderFlag", f) is not None for f in plan.builder_flags), plan.builder_flags
    assert not precision_plan(s.version, "fp32").pin_fp32
