"""CPU checks of the SGS TensorRT plugin sources (plugins/sgs).

(a) every ``.cu`` under ``plugins/`` compiles with nvcc (one arch, sm_87 = Jetson Orin), so a kernel
    that does not compile fails CI; skipped only where nvcc is absent;
(b) the kernels' per-element bin arithmetic (``plugins/sgs/sgsMath.h``, ``__host__ __device__``) is
    built host-only into a small shared library (g++, and nvcc's host compiler where nvcc exists) and
    called through ctypes: scaled distances, bin centres, widths, raw kernel matrix, compacted kernel,
    per-sample k and B' must equal every golden SGS-op case BIT FOR BIT when fed the stored Δ;
(c) the same library agrees bit for bit with ``runtime/sgs_numpy.py`` on random inputs (including
    B not a power of two) and implements the ``guard_zero`` rule;
(d) the plugin C++ sources compile against each of NVIDIA's public TensorRT header sets (10.3, 10.16,
    11.1) in ../shared/third_party/tensorrt-headers, or the include dirs ``ATFR_TRT_INCLUDE`` names
    (``os.pathsep``-separated; never fetched here; see scripts/check_plugin_compile.sh, which also
    checks the exported symbols with nm and runs both libraries against a recording plugin
    registry), and the plugin class itself (creator, shape/format methods, enqueue) runs on the CPU
    CUDA emulation of tests/cuda_emu (under ASan+UBSan with 10.3, plain with the others);
(e) the plugin identity (name, version, namespace) is one triple: the C++ header sgsPluginId.h
    (compiled and printed) equals the ONNX node the exporter writes, and the registration sources use
    the header's constants (the static library registers under kSGS_PLUGIN_NAMESPACE, not "");
    the vc library's export list holds only the V3-era entry points.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_tools import EMU_DIR, assert_bits_equal, build_emulated, find_nvcc, golden_cases

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "sgs"
GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden"
GOLDEN_OPS = GOLDEN / "sgs_op"
CU_FILES = sorted((ROOT / "plugins").rglob("*.cu"))
TEST_ARCH = os.environ.get("ATFR_NVCC_ARCH", "sm_87")
COMPILE_TIMEOUT = 900


NVCC = find_nvcc()


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    assert proc.returncode == 0, f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"


# ---- (a) every .cu compiles -------------------------------------------------------------------
@pytest.mark.parametrize("cu", CU_FILES, ids=[str(p.relative_to(ROOT)) for p in CU_FILES])
def test_cu_compiles_with_nvcc(cu: Path, tmp_path: Path) -> None:
    if NVCC is None:
        pytest.skip("nvcc not found (PATH, /usr/local/cuda/bin, /usr/local/bin or $ATFR_NVCC): cannot compile the CUDA kernels")
    _run([NVCC, "-std=c++17", "-O2", f"-arch={TEST_ARCH}", "-fmad=false", "-Xcompiler", "-Wall",
          "-I", str(cu.parent), "-c", str(cu), "-o", str(tmp_path / (cu.stem + ".o"))])


def test_there_are_cuda_sources() -> None:
    assert any(p.name == "sgsKernel.cu" for p in CU_FILES), "plugins/sgs/sgsKernel.cu is missing"


# ---- (b) host build of the kernel math -------------------------------------------------------
F32P = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
I32P = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
HOST_COMPILERS = ["g++", "nvcc"]


def _build_host_lib(compiler: str, out_dir: Path) -> Path:
    src = PLUGIN_DIR / "sgsHostRef.cpp"
    lib = out_dir / f"libatfr_sgs_host_{compiler.replace('+', 'p')}.so"
    if compiler == "g++":
        cxx = shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            pytest.skip("no host C++ compiler (g++/c++) to build the kernel math for the CPU")
        # -ffp-contract=off: never fuse a*b+c (GCC does by default where FMA exists, e.g. aarch64).
        _run([cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-fno-fast-math",
              "-shared", "-fPIC", "-I", str(PLUGIN_DIR), str(src), "-o", str(lib)])
    else:
        if NVCC is None:
            pytest.skip("nvcc not found: host build of sgsMath.h through nvcc (__CUDACC__ path) skipped")
        # -x cu: the header is seen with __CUDACC__ (__host__ __device__ functions), host side only runs.
        _run([NVCC, "-std=c++17", "-O2", f"-arch={TEST_ARCH}", "-x", "cu", "-shared", "-Xcompiler", "-fPIC",
              "-Xcompiler", "-ffp-contract=off", "-I", str(PLUGIN_DIR), str(src), "-o", str(lib)])
    return lib


@pytest.fixture(scope="module", params=HOST_COMPILERS)
def host_lib(request, tmp_path_factory):
    lib = ctypes.CDLL(str(_build_host_lib(request.param, tmp_path_factory.mktemp(f"sgs_host_{request.param}"))))
    fn = lib.atfr_sgs_host_weights
    fn.restype = ctypes.c_int
    fn.argtypes = [F32P] + [ctypes.c_int] * 7 + [F32P] * 5 + [I32P]
    return fn


def host_weights(fn, delta: np.ndarray, num_bins: int, kernel: str, drop_bins: bool, guard_zero: bool = False):
    delta = np.ascontiguousarray(delta, dtype=np.float32)
    n, t = delta.shape
    b = t if num_bins == -1 else int(num_bins)
    out = dict(scaled=np.zeros((n, t), np.float32), centers=np.zeros((n, b), np.float32),
               width=np.zeros(n, np.float32), kernel_raw=np.zeros((n, b, t), np.float32),
               kernel_compact=np.zeros((n, b, t), np.float32), k=np.zeros(n, np.int32))
    bp = fn(delta, n, t, int(num_bins), 1 if kernel.startswith("delta") else 0, int(kernel.endswith("_normalized")),
            int(bool(drop_bins)), int(bool(guard_zero)), out["scaled"], out["centers"], out["width"],
            out["kernel_raw"], out["kernel_compact"], out["k"])
    assert bp >= 0, "atfr_sgs_host_weights rejected its arguments"
    out["B_prime"] = bp
    return out


GOLDEN_CASES = golden_cases()


@pytest.mark.parametrize("case", GOLDEN_CASES or [None], ids=[p.stem for p in GOLDEN_CASES] or ["no-golden"])
def test_host_math_bit_exact_vs_golden(host_lib, case: Path | None) -> None:
    if case is None:
        pytest.skip(f"golden SGS-op cases not found at {GOLDEN_OPS} (they live in ../shared/golden beside the repo)")
    z = np.load(case, allow_pickle=False)
    kernel = str(z["kernel_type"])
    num_bins = int(z["num_bins_arg"])
    drop = bool(z["drop_bins"])
    got = host_weights(host_lib, z["distances"], num_bins, kernel, drop)
    # Stored for every case (error cases keep what was computed before the exception).
    assert_bits_equal(got["scaled"], z["distances_scaled"], "distances_scaled")
    assert_bits_equal(got["centers"], z["bin_centers"], "bin_centers")
    assert_bits_equal(got["width"], z["bin_width"], "bin_width")
    assert_bits_equal(got["kernel_raw"], z["kernel_raw"], "kernel_raw")
    status = str(z["status"])
    if status != "ok":
        # Official code raised (delta kernel, NaN Δ, no active bin). The plugin reports B' = 0 instead.
        assert got["B_prime"] == 0 and not got["k"].any(), f"{case.name}: expected no active bin ({status})"
        return
    assert np.array_equal(got["k"], z["k_per_sample"].astype(np.int32)), "k_per_sample"
    assert got["B_prime"] == int(z["B_prime"]), "B_prime"
    bp = got["B_prime"]
    assert_bits_equal(got["kernel_compact"][:, :bp], z["kernel"], "kernel (compacted, padded)")
    if drop:
        assert not got["kernel_compact"][:, bp:].any(), "rows beyond B' must be zero"


def test_golden_cover_all_kernels() -> None:
    if not GOLDEN_CASES:
        pytest.skip(f"golden SGS-op cases not found at {GOLDEN_OPS}")
    kinds = {str(np.load(p, allow_pickle=False)["kernel_type"]) for p in GOLDEN_CASES}
    assert kinds >= {"linear", "linear_normalized", "delta", "delta_normalized"}, kinds


# ---- (c) agreement with runtime/sgs_numpy.py on random inputs, and guard_zero ----------------
def _sgs_numpy():
    try:
        from atfr.runtime import sgs_numpy
    except ImportError:
        import importlib.util
        spec = importlib.util.spec_from_file_location("sgs_numpy", ROOT / "runtime" / "sgs_numpy.py")
        sgs_numpy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sgs_numpy)
    return sgs_numpy


@pytest.mark.parametrize("kernel", ["linear", "linear_normalized", "delta", "delta_normalized"])
def test_host_math_matches_numpy_reference_random(host_lib, kernel: str) -> None:
    ref = _sgs_numpy()
    rng = np.random.default_rng(20261121)
    for trial in range(60):
        n = int(rng.integers(1, 4))
        t = int(rng.choice([1, 3, 4, 7, 8, 13, 16, 31, 32, 64]))
        num_bins = int(rng.choice([-1, max(1, t // 2), max(1, t - 1), 5, 12]))
        drop = bool(trial % 2)
        delta = (rng.random((n, t)) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)
        if trial % 7 == 0:
            delta[:, :: 2] = delta[:, :1]  # exact ties
        scaled, centers, width, kraw = ref.bin_weights(delta, num_bins, kernel)
        got = host_weights(host_lib, delta, num_bins, kernel, drop)
        assert_bits_equal(got["scaled"], scaled, f"trial {trial} scaled")
        assert_bits_equal(got["centers"], centers, f"trial {trial} centers")
        assert_bits_equal(got["width"], width, f"trial {trial} width")
        assert_bits_equal(got["kernel_raw"], kraw, f"trial {trial} kernel_raw")
        if drop:
            kmat, k = ref.drop_empty(kraw)
        else:
            kmat, k = kraw, (kraw.sum(axis=2) != 0).sum(axis=1)
        assert np.array_equal(got["k"], k.astype(np.int32)), f"trial {trial} k"
        assert got["B_prime"] == kmat.shape[1], f"trial {trial} B'"
        assert_bits_equal(got["kernel_compact"][:, : kmat.shape[1]], kmat, f"trial {trial} compacted kernel")


@pytest.mark.parametrize("kernel", ["linear", "delta"])
def test_guard_zero(host_lib, kernel: str) -> None:
    t = 8
    delta = np.zeros((2, t), np.float32)
    delta[1] = np.linspace(0.5, 2.0, t, dtype=np.float32)
    on = host_weights(host_lib, delta, -1, kernel, True, guard_zero=True)
    # Sample 0 behaves as constant distances: a single active bin, the last one.
    assert on["k"][0] == 1
    last_w = np.float32(2.0 ** -23) if kernel == "linear" else np.float32(1.0)
    assert_bits_equal(on["kernel_compact"][0, 0], np.full(t, last_w, np.float32), "guarded sample row 0")
    assert_bits_equal(on["kernel_raw"][0, -1], np.full(t, last_w, np.float32), "guarded sample, last bin")
    # Sample 1 (max Δ != 0) is unaffected by the guard.
    off = host_weights(host_lib, delta, -1, kernel, True, guard_zero=False)
    assert_bits_equal(on["kernel_raw"][1], off["kernel_raw"][1], "unguarded sample")
    # Without the guard, 2B/0 gives NaN everywhere (linear: every bin active; delta: none).
    if kernel == "linear":
        assert np.isnan(off["kernel_raw"][0]).all() and off["k"][0] == t
    else:
        assert off["k"][0] == 0


# ---- (d) plugin sources against TensorRT headers ------------------------------------------------
# ATFR_TRT_INCLUDE names include dirs explicitly; otherwise NVIDIA's public headers of 10.3, 10.16 and
# 11.1 in ../shared/third_party/tensorrt-headers (beside the repository; $ATFR_TRT_HEADER_SETS moves it)
# are used, each in turn.
SHARED_HEADERS = Path(os.environ.get("ATFR_TRT_HEADER_SETS") or ROOT.parent / "shared" / "third_party" / "tensorrt-headers")
_ENV_INCLUDES = [p for p in os.environ.get("ATFR_TRT_INCLUDE", "").split(os.pathsep) if p]
_SHARED_SETS = sorted((d / "include" for d in SHARED_HEADERS.glob("*") if (d / "include" / "NvInferRuntime.h").is_file()),
                      key=lambda d: tuple(int(x) for x in re.findall(r"\d+", d.parent.name)))
TRT_INCLUDES = _ENV_INCLUDES or [str(d) for d in _SHARED_SETS]
NO_HEADERS = (f"no TensorRT headers: {SHARED_HEADERS} is absent and ATFR_TRT_INCLUDE is unset "
              "(=<TensorRT include dir>[:<dir>...]); TensorRT's headers are not vendored in this repository")


def _inc_id(p: str) -> str:
    return Path(p).parent.name


def _cuda_include() -> str:
    """The CUDA include dir for scripts/check_plugin_compile.sh: $CUDA_INC, nvcc's own (its --dryrun TOP),
    or, without nvcc, the CPU emulation's headers (tests/cuda_emu), where the script checks syntax only."""
    if os.environ.get("CUDA_INC"):
        return os.environ["CUDA_INC"]
    if NVCC is not None:
        out = subprocess.run([NVCC, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=120)
        m = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
        if m and (Path(m.group(1).strip()) / "include" / "cuda_runtime_api.h").is_file():
            return str(Path(m.group(1).strip()) / "include")
    return str(EMU_DIR)


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory) -> Path:
    """nvcc's kernel objects, shared by the header sets (the kernels include no TensorRT header)."""
    return tmp_path_factory.mktemp("sgs_kernel_objects")


@pytest.mark.parametrize("inc", TRT_INCLUDES or [None], ids=[_inc_id(p) for p in TRT_INCLUDES] or ["unset"])
def test_plugin_compiles_against_trt_headers(inc: str | None, kernel_cache: Path) -> None:
    """sgsPlugin.cpp + registration files compile (-Werror); with nvcc the two libraries link, export exactly
    exports.map's names, and register ("SGS", "1", "atfr") with a recording plugin registry."""
    if not inc:
        pytest.skip(NO_HEADERS)
    if not (Path(inc) / "NvInferRuntime.h").exists():
        pytest.fail(f"ATFR_TRT_INCLUDE entry {inc} has no NvInferRuntime.h")
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("g++ not found")
    cuda_inc = _cuda_include()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "check_plugin_compile.sh"), inc, cuda_inc], cwd=ROOT,
                          capture_output=True, text=True, timeout=COMPILE_TIMEOUT,
                          env={**os.environ, "ATFR_SGS_KERNEL_CACHE": str(kernel_cache)})
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    if NVCC is not None and cuda_inc != str(EMU_DIR):  # the link, nm and registration steps ran
        assert "OK registration" in proc.stdout and "libatfr_sgs_vc.so exports: getCreators setLoggerFinder" \
            in proc.stdout, proc.stdout


def _enqueue_cases() -> list[tuple[str | None, str | None]]:
    """Explicit ATFR_TRT_INCLUDE dirs: plain and ASan+UBSan each. The shared header sets: ASan+UBSan on
    10.3 (JetPack 6, the deployment target), plain on the others (an ASan build costs ~20 s on 2 cores)."""
    if _ENV_INCLUDES:
        return [(i, s) for i in _ENV_INCLUDES for s in (None, "asan")]
    return [(i, "asan" if k == 0 else None) for k, i in enumerate(TRT_INCLUDES)] or [(None, None)]


@pytest.mark.parametrize("inc,sanitize", _enqueue_cases(),
                         ids=[f"{_inc_id(i) if i else 'unset'}-{s or 'plain'}" for i, s in _enqueue_cases()])
def test_plugin_enqueue_on_emulated_cuda(inc: str | None, sanitize: str | None, tmp_path: Path) -> None:
    """SgsPlugin's build and runtime methods, enqueue included, on the CPU CUDA emulation (tests/cuda_emu):
    B' and outputs byte-identical to the harness entry point, exact-size workspace (ASan build), N = 0."""
    if not inc:
        pytest.skip(NO_HEADERS)
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    exe = build_emulated(tmp_path, sanitize=sanitize, driver=EMU_DIR / "plugin_enqueue_check.cpp",
                         extra_sources=(PLUGIN_DIR / "sgsPlugin.cpp",), system_includes=(inc,))
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1 halt_on_error=1", "UBSAN_OPTIONS": "halt_on_error=1"}
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=COMPILE_TIMEOUT, env=env)
    assert proc.returncode == 0 and "OK enqueue" in proc.stdout, f"{proc.stdout}\n{proc.stderr[-4000:]}"


# ---- (e) one (name, version, namespace) triple; export list ------------------------------------
def _cxx_triple(tmp_path: Path) -> tuple[str, str, str]:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no host C++ compiler to read sgsPluginId.h")
    src = tmp_path / "triple.cpp"
    src.write_text('#include "sgsPluginId.h"\n#include <cstdio>\nint main() { using namespace atfr::sgs;\n'
                   '  std::printf("%s\\n%s\\n%s\\n", kSGS_PLUGIN_NAME, kSGS_PLUGIN_VERSION, kSGS_PLUGIN_NAMESPACE); }\n')
    exe = tmp_path / "triple"
    _run([cxx, "-std=c++17", "-I", str(PLUGIN_DIR), str(src), "-o", str(exe)])
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0], out[1], out[2]


def test_plugin_triple_matches_exported_onnx_node(tmp_path: Path) -> None:
    from atfr.export import sgs_graphs
    from atfr.runtime.manifest import SGSLayer
    from atfr.spec import SGSSpec

    name, version, namespace = _cxx_triple(tmp_path)
    assert (name, version, namespace) == ("SGS", "1", "atfr")
    assert (sgs_graphs.PLUGIN_NAME, sgs_graphs.PLUGIN_VERSION, sgs_graphs.PLUGIN_NAMESPACE) == (name, version, namespace)
    # The node the exporter writes: op_type = name, plugin_version / plugin_namespace attributes.
    layer = SGSLayer(spec=SGSSpec(num_bins=-1, kernel="delta_normalized"), frames=8, bins=8, channels=4, height=2, width=2)
    model = sgs_graphs.plugin_graph([layer], opset=17)
    (node,) = [n for n in model.graph.node if n.domain == sgs_graphs.PLUGIN_DOMAIN]
    attrs = {a.name: a for a in node.attribute}
    assert node.op_type == name
    assert attrs["plugin_version"].s.decode() == version
    assert attrs["plugin_namespace"].s.decode() == namespace
    # Every field the node carries is one the creator lists (the parser forwards only those).
    fields = set(re.findall(r'kField\w+ = "(\w+)"', (PLUGIN_DIR / "sgsPlugin.cpp").read_text()))
    assert {a for a in attrs if not a.startswith("plugin_")} == fields


def _code(path: Path) -> str:
    return re.sub(r"//[^\n]*|/\*.*?\*/", "", path.read_text(), flags=re.S)


def test_registration_sources_use_the_one_triple() -> None:
    static = _code(PLUGIN_DIR / "sgsRegisterStatic.cpp")
    # REGISTER_TENSORRT_PLUGIN registers under "" (PluginRegistrar in NvInferRuntime.h, 10.3 to 11.1).
    assert "REGISTER_TENSORRT_PLUGIN" not in static
    assert re.search(r"registerCreator\(\s*\w+\s*,\s*(atfr::sgs::)?kSGS_PLUGIN_NAMESPACE\s*\)", static), \
        "the static library must register its creator under kSGS_PLUGIN_NAMESPACE"
    for f in ("sgsPlugin.cpp", "sgsPlugin.h", "sgsRegisterStatic.cpp", "sgsRegisterDynamic.cpp"):
        code = _code(PLUGIN_DIR / f)
        assert '"atfr"' not in code and '"SGS"' not in code, f"{f}: use the constants of sgsPluginId.h"


def test_vc_export_list() -> None:
    """exports.map lists getCreators and setLoggerFinder only, and sgsRegisterDynamic.cpp defines exactly
    those C entry points: getPluginCreators is typed IPluginCreator* const* (V1 creators) in TensorRT 10.0."""
    m = (PLUGIN_DIR / "exports.map").read_text()
    glob = re.search(r"global:(.*?)local:", m, re.S).group(1)
    assert sorted(re.findall(r"(\w+)\s*;", glob)) == ["getCreators", "setLoggerFinder"]
    dyn = _code(PLUGIN_DIR / "sgsRegisterDynamic.cpp")
    assert sorted(re.findall(r'extern "C"[^(]*?\b(\w+)\(', dyn)) == ["getCreators", "setLoggerFinder"]
