"""Our TensorRT objects and error paths with NVIDIA's real bindings and a stub CUDA driver (issue 23).

Each case runs in a subprocess whose ``tensorrt`` and ``cuda.bindings`` are the real wheels
(tests/real_bindings.py) over stub libraries: TensorRT's factories return null, and the stub
``libcuda.so.1`` has no device and reports the driver version the case chooses. What runs is our code
with NVIDIA's classes: the ILogger, IOutputAllocator and IProgressMonitor subclasses constructed and
called, and ``atfr doctor`` and ``atfr build`` up to their first CUDA call. A real engine build or
run needs TensorRT's libraries and a GPU, which are not here.
"""

from __future__ import annotations

import textwrap

import pytest

import real_bindings as rb

TRT_KEYS = [p.key for p in rb.TRT_PINS]
# The cuda-python that goes with each TensorRT line (the 11.x wheels here are built for CUDA 12 as
# well; 13.0 is JetPack 7's).
CUDA_FOR = {"10.3": "cuda-12.6", "10.16": "cuda-12.6", "11.4": "cuda-13.0"}


def need(*keys: str) -> None:
    for key in keys:
        rb.need(key)


def run(stubs, code: str, trt: str | None, cuda: str | None, driver: int | None, *args: str, timeout: float = 180):
    env = rb.env_for(stubs, trt=trt, cuda=cuda, driver=driver)
    env.pop("ATFR_SGS_PLUGIN", None)
    return rb.run_python(["-c", textwrap.dedent(code), *args], env, timeout=timeout, cwd=rb.ROOT)


OBJECTS = r"""
import numpy as np
import tensorrt as trt
from atfr.runtime.tensorrt.api import make_logger
from atfr.runtime.tensorrt.backend import make_output_allocator
from atfr.runtime.tensorrt.builder import _make_progress_monitor

assert trt.__file__.startswith(__import__("sys").argv[1]), trt.__file__
log = make_logger(trt, verbose=True)
assert isinstance(log, trt.ILogger)
S = trt.ILogger.Severity
for sev, msg in ((S.INTERNAL_ERROR, "internal"), (S.ERROR, " bad input \n"), (S.WARNING, "careful"),
                 (S.INFO, "info"), (S.VERBOSE, "chatter")):
    log.log(sev, msg)
assert log.errors == ["internal", "bad input"], log.errors

said = []
mon = _make_progress_monitor(trt, said.append)
assert isinstance(mon, trt.IProgressMonitor)
mon.phase_start("Building engine", None, 3)
mon.phase_start("Tactics", "Building engine", 10)
mon.phase_start("Deep", "Tactics", 2)  # depth 2: not reported
assert mon.step_complete("Tactics", 4) is True
mon.phase_finish("Tactics")
assert said[:2] == ["Building engine (3 steps)", "  Tactics (10 steps)"], said
assert "Tactics" not in mon.steps and mon.depth["Deep"] == 2

class FakeCuda:  # device memory is the one thing a real run needs a GPU for
    def __init__(self):
        self.next, self.freed = 4096, []
    def malloc(self, n):
        self.next += 4096
        return self.next
    def free(self, p):
        self.freed.append(p)

cu = FakeCuda()
alloc = make_output_allocator(trt, cu)
assert isinstance(alloc, trt.IOutputAllocator)
ptr = alloc.reserve("sgs0", 1024)
assert alloc.reallocate_output_async("sgs0", 0, 512, 256, None) == ptr and alloc.reallocations == 0
assert alloc.reallocate_output("sgs0", 0, 1024, 256) == ptr
big = alloc.reallocate_output_async("sgs0", 0, 4096, 256, None)
assert big != ptr and cu.freed == [ptr] and alloc.reallocations == 1
alloc.notify_shape("sgs0", trt.Dims([1, 64, 5, 7, 7]))
assert alloc.shapes["sgs0"] == (1, 64, 5, 7, 7), alloc.shapes
alloc.reset()
assert alloc.shapes == {} and alloc.error is None

# Plain objects (the SGS node's attributes as a plugin creator receives them).
f = trt.PluginField("num_bins", np.array([8], np.int32), trt.PluginFieldType.INT32)
fc = trt.PluginFieldCollection([f, trt.PluginField("kernel", np.frombuffer(b"linear\0", np.int8), trt.PluginFieldType.CHAR)])
assert len(fc) == 2 and fc[0].name == "num_bins" and fc[0].type == trt.PluginFieldType.INT32
print("OK objects", trt.__version__)
"""


@pytest.mark.parametrize("key", TRT_KEYS)
def test_our_subclasses_and_plain_objects_with_real_bindings(binding_stubs, key: str) -> None:
    need(key)
    p = run(binding_stubs, OBJECTS, key, None, None, str(rb.PINS[key].folder))
    assert p.returncode == 0 and "OK objects" in p.stdout, p.stdout + p.stderr[-3000:]


def _one_line(p, code: int = 4) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == code, p.stdout[-2000:] + p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "RuntimeError" not in p.stderr, p.stderr[-3000:]
    return lines[-1]


CLI = "import sys\nfrom atfr.cli import main\nsys.exit(main(sys.argv[1:]))\n"

# (case, cuda-python, driver CUDA version reported by the stub, or None for no libcuda at all)
DRIVER_CASES = [
    ("no-driver", "cuda-12.6", None),
    ("no-device", "cuda-12.6", 12060),
    ("driver-older-major", "cuda-13.0", 12060),  # cuda-python 13 on a CUDA 12 driver
    ("bindings-newer-minor", "cuda-12.6", 12020),  # cuda-python 12.6 on a 12.2 driver
    ("no-driver-13", "cuda-13.0", None),
    ("driver-newer-major", "cuda-12.6", 13000),  # cuda-python 12.6 on a CUDA 13 driver: runs (older runtime)
]


# The doctor probes every module in subprocesses (torch included: ~4 s a case), so it runs the three
# cases whose rows differ; every stub-driver case has no device.
DOCTOR_CASES = [c for c in DRIVER_CASES
                if c[0] in ("no-driver", "driver-older-major", "bindings-newer-minor", "driver-newer-major")]


@pytest.mark.parametrize("case,cuda,driver", DOCTOR_CASES, ids=[c[0] for c in DOCTOR_CASES])
def test_doctor_with_real_bindings_and_stub_driver(binding_stubs, case: str, cuda: str, driver: int | None) -> None:
    need("10.3", cuda)
    p = run(binding_stubs, CLI, "10.3", cuda, driver, "doctor", "--backend", "tensorrt", "--json")
    last = _one_line(p)
    assert last.startswith("atfr doctor: backend tensorrt cannot run here"), last
    import json

    rep = json.loads(p.stdout)
    rows = {c["name"]: c for c in rep["checks"]}
    assert rows["tensorrt"]["status"] == "ok" and "10.3.0" in rows["tensorrt"]["detail"], rows["tensorrt"]
    cp = rows["cuda-python"]
    assert "RuntimeError" not in p.stdout, cp
    if driver is None:
        assert cp["status"] == "fail" and "no CUDA driver (the NVIDIA driver library libcuda.so.1 cannot be loaded)" \
            in cp["detail"], cp
    elif case == "driver-older-major":
        assert cp["status"] == "fail" and "is for CUDA 13" in cp["detail"] and "12.6" in cp["detail"], cp
        assert "cuda-python>=12.0,<13" in cp["fix"], cp
    elif case == "bindings-newer-minor":
        assert cp["status"] == "warn" and "newer than the driver's CUDA 12.2" in cp["detail"], cp
    elif case == "driver-newer-major":  # a warning, not a failure: the 12.6 bindings reach the driver
        assert cp["status"] == "warn" and "supports CUDA 13.0 and runs it" in cp["detail"], cp
        assert "cuda-python>=13.0,<14" in cp["fix"] and not cp.get("blocks"), cp
    if driver is not None:  # a driver but no device: the gpu row says what CUDA answered, and blocks tensorrt
        want = "cudaErrorInsufficientDriver" if case == "driver-older-major" else "cudaErrorNoDevice"
        assert rows["gpu"]["status"] == "fail" and "tensorrt" in rows["gpu"]["blocks"], rows["gpu"]
        assert f"cudaGetDeviceCount: {want}" in rows["gpu"]["detail"], rows["gpu"]


@pytest.mark.parametrize("case,cuda,driver", DRIVER_CASES, ids=[c[0] for c in DRIVER_CASES])
def test_build_prechecks_with_real_bindings_and_stub_driver(binding_stubs, tiny_export, tmp_path, case: str,
                                                            cuda: str, driver: int | None) -> None:
    """atfr build gets as far as its first CUDA call (TensorRT imported, version checked, plans made, logger
    and plugins initialised) and stops there with one line and exit 4, writing nothing."""
    need("10.3", cuda)
    p = run(binding_stubs, CLI, "10.3", cuda, driver, "build", str(tiny_export), "--sgs", "host",
            "--engine-dir", str(tmp_path))
    last = _one_line(p)
    assert "cuda-python" in last and ("13.0" in last if cuda == "cuda-13.0" else "12.6" in last), last
    if driver is None:
        assert "no NVIDIA driver found" in last, last
        if cuda == "cuda-12.6":  # 12.x raises RuntimeError instead of returning an error code
            assert "the NVIDIA driver library libcuda.so.1 cannot be loaded" in last, last
    elif case == "driver-older-major":
        assert "major version must match the driver's CUDA" in last and "cuda-python>=12.6,<13" in last, last
    else:
        assert "cudaErrorNoDevice" in last and "driver for CUDA " + f"{driver // 1000}.{driver % 1000 // 10}" in last, last
    assert "building tiny front" in p.stderr  # the plan was made with the real module's version
    assert list(tmp_path.iterdir()) == []


# -- polygraphy ----------------------------------------------------------------------------------------

POLYGRAPHY = r"""
import importlib, pkgutil, sys
import polygraphy
import polygraphy.backend.trt as ptrt
from polygraphy import mod
from polygraphy.backend.trt import util
import tensorrt as trt

names = sorted(m.name for m in pkgutil.walk_packages(ptrt.__path__, "polygraphy.backend.trt."))
for name in names:
    importlib.import_module(name)
assert mod.lazy_import("tensorrt").__version__ == trt.__version__  # polygraphy sees the real module
logger = util.get_trt_logger()
assert isinstance(logger, trt.ILogger), type(logger).__mro__
print("OK polygraphy", polygraphy.__version__, trt.__version__, len(names))
"""


@pytest.mark.parametrize("key", TRT_KEYS)
def test_polygraphy_trt_backend_imports_with_real_bindings(binding_stubs, key: str) -> None:
    """Polygraphy's TensorRT backend (loaders, runner, config, calibrator, ...) imports and builds its
    ILogger subclass over each version's real bindings."""
    pytest.importorskip("polygraphy")
    need(key)
    p = run(binding_stubs, POLYGRAPHY, key, None, None)
    assert p.returncode == 0 and "OK polygraphy" in p.stdout, p.stdout + p.stderr[-3000:]
    assert int(p.stdout.split()[-1]) >= 6  # loader, runner, config, profile, util, calibrator, ...


def polygraphy_uses(root) -> list[tuple[str, int, str, str, list[str]]]:
    """(file, line, module, name, attributes/keywords used on it) for every 'from polygraphy... import'."""
    import ast

    out = []
    for path in sorted(p for d in ("atfr", "export", "runtime", "calibration", "bench", "benchmarks", "scripts",
                                   "models") for p in (root / d).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("polygraphy"):
                for a in node.names:
                    local = a.asname or a.name
                    used = sorted({n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                                   and isinstance(n.value, ast.Name) and n.value.id == local}
                                  | {"kw:" + k.arg for n in ast.walk(tree) if isinstance(n, ast.Call)
                                     and isinstance(n.func, ast.Name) and n.func.id == local for k in n.keywords if k.arg})
                    out.append((str(path.relative_to(root)), node.lineno, node.module, a.name, used))
    return out


def test_polygraphy_names_the_project_uses_exist() -> None:
    """Every polygraphy class/function the project imports exists in the installed polygraphy, with the
    attributes and keyword arguments the project uses (pyproject: polygraphy>=0.49)."""
    import importlib
    import inspect

    pg = pytest.importorskip("polygraphy")
    uses = polygraphy_uses(rb.ROOT)
    assert {u[3] for u in uses} >= {"IterationResult", "SimpleCompareFunc", "G_LOGGER"}, uses
    problems = []
    for file, line, module, name, used in uses:
        obj = getattr(importlib.import_module(module), name, None)
        if obj is None:
            problems.append(f"{file}:{line}: polygraphy {pg.__version__} has no {module}.{name}")
            continue
        for u in used:
            if u.startswith("kw:"):
                if u[3:] not in inspect.signature(obj).parameters:
                    problems.append(f"{file}:{line}: {module}.{name} takes no keyword {u[3:]!r}")
            elif not hasattr(obj, u):
                problems.append(f"{file}:{line}: {module}.{name} has no attribute {u!r}")
    assert not problems, "\n".join(problems)
    assert tuple(int(x) for x in pg.__version__.split(".")[:2]) >= (0, 49)


CUDA_OBJECTS = r"""
import sys
from cuda.bindings import runtime as rt
from atfr.errors import ATFRError
from atfr.runtime.tensorrt.cuda import Cuda, cuda_python_version

assert rt.__file__.startswith(sys.argv[1]), rt.__file__
cu = Cuda(rt)
assert (cu.H2D, cu.D2H, cu.D2D) == (rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                    rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice)
assert cu.ok((rt.cudaError_t.cudaSuccess, 7), "x") == 7 and cu.ok((rt.cudaError_t.cudaSuccess,), "x") is None
try:
    cu.ok((rt.cudaError_t.cudaErrorNoDevice, None), "cudaGetDevice")
    raise SystemExit("ok() accepted an error")
except ATFRError as e:
    assert e.exit_code == 4, e.exit_code
    if sys.argv[2] == "driver":  # cudaGetErrorString's text
        assert str(e) == "cudaGetDevice failed: cudaErrorNoDevice (no CUDA-capable device is detected)", str(e)
    else:  # cuda-python 12.x cannot even describe an error without libcuda: the name alone, no '(100)'
        assert str(e) in ("cudaGetDevice failed: cudaErrorNoDevice",
                          "cudaGetDevice failed: cudaErrorNoDevice (no CUDA-capable device is detected)"), str(e)
# The backend keeps streams as ints (execute_async_v3 takes an int handle).
assert int(rt.cudaStream_t()) == 0 and int(rt.cudaEvent_t()) == 0
print("OK cuda", cuda_python_version())
"""


@pytest.mark.parametrize("driver", [None, 12060], ids=["no-driver", "stub-driver"])
@pytest.mark.parametrize("key", [p.key for p in rb.CUDA_PINS])
def test_cuda_wrapper_with_real_bindings(binding_stubs, key: str, driver: int | None) -> None:
    """Cuda's enum lookups, its error formatting (real cudaError_t, cudaGetErrorString) and the stream
    handle's int() with each real cuda-python, with and without a (stub) driver."""
    need(key)
    p = run(binding_stubs, CUDA_OBJECTS, None, key, driver, str(rb.PINS[key].folder), "driver" if driver else "none")
    want = rb.PINS[key].requirements[-1 if key == "cuda-12.6" else 1].split("==")[1]
    assert p.returncode == 0 and f"OK cuda {want}" in p.stdout, p.stdout + p.stderr[-3000:]


def test_build_prechecks_on_tensorrt_11(binding_stubs, tiny_export, tmp_path) -> None:
    """TensorRT 11.4 (strongly typed fp32 plan) with cuda-python 13.0 on a CUDA 13.0 driver without a device."""
    need("11.4", "cuda-13.0")
    p = run(binding_stubs, CLI, "11.4", "cuda-13.0", 13000, "build", str(tiny_export), "--sgs", "host",
            "--engine-dir", str(tmp_path))
    last = _one_line(p)
    assert "cudaErrorNoDevice" in last and "cuda-python 13.0.3 on a driver for CUDA 13.0" in last, last
    assert "fp32 on TensorRT 11.4.0: strongly typed, no precision flags" in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


# -- AdaFuse exports --------------------------------------------------------------------------------------

@pytest.mark.parametrize("trt_key,cuda,driver,precision,plan", [
    ("10.3", "cuda-12.6", 12060, "fp16", "fp16 on TensorRT 10.3.0: weakly typed, FP16+OBEY_PRECISION_CONSTRAINTS, "
                                         "TF32 off, policy head pinned to fp32"),
    ("11.4", "cuda-13.0", 13000, "fp32", "fp32 on TensorRT 11.4.0: strongly typed, no precision flags, TF32 off"),
])
def test_adafuse_build_prechecks_with_real_bindings(binding_stubs, tiny_adafuse_export, tmp_path, trt_key, cuda,
                                                    driver, precision, plan) -> None:
    """atfr build on an AdaFuse export: the real module's version picks the plan (named on stderr), the
    logger and plugins are initialised, and the first CUDA call (no device) ends it: one line, exit 4,
    nothing written. fp16 on TensorRT 11 is refused before that (exit 2)."""
    need(trt_key, cuda)
    p = run(binding_stubs, CLI, trt_key, cuda, driver, "build", str(tiny_adafuse_export), "--precision", precision,
            "--engine-dir", str(tmp_path))
    assert "cudaErrorNoDevice" in _one_line(p), p.stderr
    assert f"building tiny_adafuse: {plan}; model.onnx, online.onnx, online_gathered.onnx" in p.stderr, p.stderr
    if trt_key == "11.4":
        p = run(binding_stubs, CLI, trt_key, cuda, driver, "build", str(tiny_adafuse_export), "--precision", "fp16",
                "--engine-dir", str(tmp_path))
        assert "AdaFuse exports have none: build --precision fp32" in _one_line(p, 2), p.stderr
    assert list(tmp_path.iterdir()) == []
