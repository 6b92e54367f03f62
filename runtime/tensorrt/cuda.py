"""The few CUDA runtime calls the TensorRT backend and builder need, over cuda-python.

cuda-python is versioned with CUDA: its major version must not be newer than the driver's CUDA
(drivers run older runtimes), and best matches the TensorRT build's. A plain ``pip install cuda-python`` gives 13.x, while JetPack 6
is CUDA 12.6; with a 13.x binding on a 12.x driver the first runtime call (``cudaGetDevice``) fails
with cudaErrorInsufficientDriver, which says nothing about the cause. :meth:`Cuda.device_info`
turns any such failure into one line naming both versions and the install that fixes it
(DependencyError, exit code 4).

Written against cuda-python 12.x/13.x (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6);
not executed in this repository's CI (no GPU). Torch-free.
"""

from __future__ import annotations

import ctypes
import importlib
import re
import shutil
import subprocess
from typing import Any

import numpy as np

from atfr.errors import ATFRError, DependencyError


class CudaPythonMissing(DependencyError):
    """cuda-python is not installed at all (the builder can still record an unknown GPU)."""


def cuda_python_pin(driver_cuda: str | None) -> str:
    """The pip requirement matching a driver's CUDA version: '12.6' -> 'cuda-python>=12.6,<13'."""
    if not driver_cuda:
        return "cuda-python (the major version of your driver's CUDA)"
    major, _, minor = driver_cuda.partition(".")
    return f"cuda-python>={major}.{minor or 0},<{int(major) + 1}"


def cuda_python_version() -> str | None:
    """The installed cuda-python (cuda-bindings) version, e.g. '12.6.2'; None when unknown."""
    for mod in ("cuda.bindings", "cuda"):
        try:
            v = getattr(importlib.import_module(mod), "__version__", None)
        except ImportError:
            v = None
        if v:
            return str(v)
    from importlib import metadata  # noqa: PLC0415

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _fmt_cuda(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


def driver_cuda_version(rt: Any = None) -> str | None:
    """The CUDA version the driver supports ('12.6'), from cudaDriverGetVersion, libcuda's
    cuDriverGetVersion, or nvidia-smi's header, whichever answers first; None without a driver."""
    if rt is not None:
        try:
            res = rt.cudaDriverGetVersion()
            err, v = res[0], res[1]
            if int(getattr(err, "value", err)) == 0 and int(v) > 0:
                return _fmt_cuda(int(v))
        except Exception:  # noqa: BLE001 - a mismatched binding may fail here too; try the others
            pass
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cu = ctypes.CDLL(lib)
            out = ctypes.c_int(0)
            if cu.cuDriverGetVersion(ctypes.byref(out)) == 0 and out.value > 0:
                return _fmt_cuda(out.value)
        except (OSError, AttributeError):
            continue
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            txt = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            txt = ""
        m = re.search(r"CUDA Version:\s*(\d+\.\d+)", txt)
        if m:
            return m.group(1)
    return None


def no_driver_reason(e: BaseException) -> str:
    """What an exception from a CUDA binding means, in words. cuda-python 12.x raises
    ``RuntimeError: Failed to dlopen libcuda.so.1`` (no error code) where no NVIDIA driver is installed."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "libcuda" in msg and ("dlopen" in msg or "load" in msg.lower()):
        return "the NVIDIA driver library libcuda.so.1 cannot be loaded"
    return f"{type(e).__name__}: {msg}"


def mismatch_message(what: str, error: str, binding: str | None, driver: str | None) -> str:
    """One line for a failed first CUDA call, naming both versions (and the fix when they differ)."""
    b = binding or "unknown"
    d = driver or "unknown (no NVIDIA driver found)"
    base = f"{what} failed ({error}) with cuda-python {b} on a driver for CUDA {d}"
    if binding and driver and binding.split(".")[0] != driver.split(".")[0]:
        return (f"{base}: cuda-python's major version must match the driver's CUDA: "
                f"pip install '{cuda_python_pin(driver)}'")
    if not driver:
        return f"{base}: is an NVIDIA GPU and driver present?"
    return base


def import_cuda_runtime() -> Any:
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6  # noqa: PLC0415
    except ImportError:
        try:
            from cuda import cudart as rt  # older cuda-python  # noqa: PLC0415
        except ImportError:
            raise CudaPythonMissing("cuda-python is not installed (pip install 'cuda-python>=12.6,<13' on JetPack 6 / "
                                    "CUDA 12 drivers, 'cuda-python>=13,<14' on CUDA 13); the TensorRT backend needs "
                                    "it") from None
    return rt


class Cuda:
    """The CUDA runtime calls the backend needs; errors become ATFRError (exit code 4)."""

    _instance: "Cuda | None" = None

    @classmethod
    def get(cls) -> "Cuda":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self, rt: Any = None) -> None:
        self.rt = rt if rt is not None else import_cuda_runtime()
        self.H2D = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.D2H = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.D2D = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice

    def _error(self, err: Any) -> str:
        name = getattr(err, "name", err)
        try:
            desc = self.rt.cudaGetErrorString(err)[1].decode(errors="replace")
        except Exception:  # noqa: BLE001 - cuda-python 12.x raises here too where libcuda.so.1 is missing
            return str(name)  # the name alone (str(err) would repeat it as a bare number)
        return f"{name} ({desc})"

    def ok(self, res: Any, what: str = "CUDA call") -> Any:
        err, vals = (res[0], res[1:]) if isinstance(res, tuple) else (res, ())
        if err != self.rt.cudaError_t.cudaSuccess:
            raise ATFRError(f"{what} failed: {self._error(err)}", exit_code=4)
        if not vals:
            return None
        return vals[0] if len(vals) == 1 else vals

    # memory
    def malloc(self, nbytes: int) -> int:
        return int(self.ok(self.rt.cudaMalloc(max(int(nbytes), 1)), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self.ok(self.rt.cudaFree(ptr), "cudaFree")

    def malloc_host(self, nbytes: int) -> int:
        return int(self.ok(self.rt.cudaMallocHost(max(int(nbytes), 1)), f"cudaMallocHost({nbytes})"))

    def free_host(self, ptr: int) -> None:
        self.ok(self.rt.cudaFreeHost(ptr), "cudaFreeHost")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: Any, stream: Any) -> None:
        if nbytes:
            self.ok(self.rt.cudaMemcpyAsync(dst, src, int(nbytes), kind, stream), "cudaMemcpyAsync")

    # streams, events
    def stream(self) -> Any:
        return self.ok(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate")

    def sync(self, stream: Any) -> None:
        self.ok(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def event(self) -> Any:
        return self.ok(self.rt.cudaEventCreate(), "cudaEventCreate")

    def record(self, ev: Any, stream: Any) -> None:
        self.ok(self.rt.cudaEventRecord(ev, stream), "cudaEventRecord")

    def elapsed_ms(self, a: Any, b: Any) -> float:
        return float(self.ok(self.rt.cudaEventElapsedTime(a, b), "cudaEventElapsedTime"))

    # graphs
    def begin_capture(self, stream: Any) -> None:
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        self.ok(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")

    def end_capture(self, stream: Any) -> Any:
        return self.ok(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")

    def instantiate(self, graph: Any) -> Any:
        try:
            return self.ok(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except TypeError:  # binding without the flags overload
            return self.ok(self.rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiateWithFlags")

    def launch(self, graph_exec: Any, stream: Any) -> None:
        self.ok(self.rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def device_info(self) -> dict[str, Any]:
        """GPU name, compute capability 'X.Y', CUDA runtime and driver versions, cuda-python version.

        This is the first CUDA call anything makes, so its failure is where a cuda-python/driver
        mismatch shows: it becomes one line naming both versions (DependencyError, exit 4)."""
        try:
            dev = self.ok(self.rt.cudaGetDevice(), "cudaGetDevice")
            prop = self.ok(self.rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
            rtv = int(self.ok(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        except Exception as e:  # noqa: BLE001 - error codes, or RuntimeError from a binding that cannot bind libcuda
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            what, _, err = msg.partition(" failed: ")
            if not err:
                what, err = "the first CUDA call", no_driver_reason(e)
            raise DependencyError(mismatch_message(what, err[:160], cuda_python_version(),
                                                   driver_cuda_version(self.rt))) from None
        name = prop.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0")[0].decode(errors="replace")
        return {"gpu_name": str(name).strip(), "compute_capability": f"{prop.major}.{prop.minor}",
                "cuda_runtime": _fmt_cuda(rtv), "cuda_driver": driver_cuda_version(self.rt),
                "cuda_python": cuda_python_version()}


def gpu_info() -> dict[str, Any]:
    """Cuda.device_info(), or unknown entries when cuda-python is not installed at all (a build
    does not need it; the sidecar then records an unknown GPU). A cuda-python that is installed but
    does not work with this driver is an error: the runtime would fail the same way later."""
    try:
        return Cuda.get().device_info()
    except CudaPythonMissing:
        return {"gpu_name": None, "compute_capability": None, "cuda_runtime": None,
                "cuda_driver": driver_cuda_version(),
                "cuda_python": None}


def host_view(ptr: int, nbytes: int, dtype: np.dtype) -> np.ndarray:
    """A flat numpy array over pinned host memory (no copy)."""
    buf = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr)
    return np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize)
