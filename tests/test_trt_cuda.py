"""cuda-python / driver mismatch (issue 14, review item 3), driven by a fake cuda-python module.

A cuda-python whose major version differs from the driver's CUDA (pip gives 13.x; JetPack 6 is
CUDA 12.6) makes the first runtime call fail with cudaErrorInsufficientDriver. That must reach the
user as one line naming both versions and the matching install, with exit code 4, from
``atfr build`` and from the TensorRT backend alike.
"""

from __future__ import annotations

import enum
import sys
import types

import pytest

from atfr.errors import DependencyError

class _Err(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100

_MSG = {35: b"CUDA driver version is insufficient for CUDA runtime version", 100: b"no CUDA-capable device is detected"}

def _fake_cuda(monkeypatch, binding: str, driver: int, get_device_error: _Err = _Err.cudaSuccess):
    """Install cuda / cuda.bindings / cuda.bindings.runtime modules: cuda-python ``binding`` on a
    driver reporting ``driver`` (cudaDriverGetVersion's 1000*major + 10*minor)."""
    prop = types.SimpleNamespace(name=b"NVIDIA H200\0\0", major=9, minor=0)
    rt = types.SimpleNamespace(
        cudaError_t=_Err,
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2,
                                             cudaMemcpyDeviceToDevice=3),
        cudaGetErrorString=lambda e: (_Err.cudaSuccess, _MSG.get(int(e), b"?")),
        cudaDriverGetVersion=lambda: (_Err.cudaSuccess, driver),
        cudaGetDevice=lambda: (get_device_error, 0),
        cudaGetDeviceProperties=lambda d: (_Err.cudaSuccess, prop),
        cudaRuntimeGetVersion=lambda: (_Err.cudaSuccess, int(binding.split(".")[0]) * 1000 + 60),
    )
    bindings = types.ModuleType("cuda.bindings")
    bindings.__version__ = binding
    bindings.runtime = rt
    pkg = types.ModuleType("cuda")
    pkg.bindings = bindings
    pkg.__path__ = []
    monkeypatch.setitem(sys.modules, "cuda", pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", rt)
    from atfr.runtime.tensorrt.cuda import Cuda

    monkeypatch.setattr(Cuda, "_instance", None)
    return rt

def test_device_info_with_matching_versions(monkeypatch):
    from atfr.runtime.tensorrt.cuda import Cuda

    _fake_cuda(monkeypatch, "12.6.2", 12060)
    info = Cuda.get().device_info()
    assert info == {"gpu_name": "NVIDIA H200", "compute_capability": "9.0", "cuda_runtime": "12.6",
                    "cuda_driver": "12.6", "cuda_python": "12.6.2"}

@pytest.mark.parametrize("binding, driver, pin", [("13.0.1", 12060, "cuda-python>=12.6,<13"),
                                                  ("12.6.2", 13000, "cuda-python>=13.0,<14")])
def test_major_mismatch_is_one_line_naming_both_versions(monkeypatch, binding, driver, pin):
    from atfr.runtime.tensorrt.cuda import Cuda, gpu_info

    _fake_cuda(monkeypatch, binding, driver, _Err.cudaErrorInsufficientDriver)
    drv = f"{driver // 1000}.{driver % 1000 // 10}"
    for call in (lambda: Cuda.get().device_info(), gpu_info):  # gpu_info no longer swallows it into "unknown GPU"
        with pytest.raises(DependencyError) as ei:
            call()
        msg = str(ei.value)
        assert "\n" not in msg and ei.value.exit_code == 4
        assert f"cuda-python {binding}" in msg and f"CUDA {drv}" in msg and pin in msg
        assert "cudaErrorInsufficientDriver" in msg

def test_same_major_failure_names_versions_without_install_hint(monkeypatch):
    from atfr.runtime.tensorrt.cuda import Cuda

    _fake_cuda(monkeypatch, "12.6.2", 12060, _Err.cudaErrorNoDevice)
    with pytest.raises(DependencyError) as ei:
        Cuda.get().device_info()
    msg = str(ei.value)
    assert "cudaErrorNoDevice" in msg and "cuda-python 12.6.2" in msg and "CUDA 12.6" in msg
    assert "pip install" not in msg

def test_binding_that_cannot_bind_libcuda(monkeypatch):
    """cuda-python raises RuntimeError (not an error code) when libcuda lacks a symbol it needs."""
    from atfr.runtime.tensorrt.cuda import Cuda

    rt = _fake_cuda(monkeypatch, "13.0.1", 12020)

    def boom():
        raise RuntimeError('Function "cuDeviceGetUuid_v2" not found')

    rt.cudaGetDevice = boom
    with pytest.raises(DependencyError, match=r"RuntimeError: Function .* with cuda-python 13\.0\.1 on a driver for "
                                              r"CUDA 12\.2: .*cuda-python>=12\.2,<13"):
        Cuda.get().device_info()

def test_cuda_python_missing_keeps_unknown_gpu(monkeypatch):
    from atfr.runtime.tensorrt import cuda as cu

    monkeypatch.setitem(sys.modules, "cuda", None)
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    monkeypatch.setattr(cu.Cuda, "_instance", None)
    monkeypatch.setattr(cu, "driver_cuda_version", lambda rt=None: None)
    assert cu.gpu_info()["gpu_name"] is None
    with pytest.raises(cu.CudaPythonMissing, match=r"cuda-python>=12\.6,<13"):
        cu.Cuda.get()

def test_atfr_build_mismatch_exit_4_one_line(tmp_path, monkeypatch, capsys):
    from test_tensorrt_backend import _fake_builder_trt
    from test_trt_compat import _fake_export

    from atfr.cli import main

    exp = _fake_export(tmp_path / "exp")
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_builder_trt("10.3.0.26", {}))
    _fake_cuda(monkeypatch, "13.0.1", 12060, _Err.cudaErrorInsufficientDriver)
    rc = main(["build", str(exp), "--sgs", "host", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4
    assert len(err) == 1 and "cuda-python 13.0.1" in err[0] and "CUDA 12.6" in err[0], err
    assert not (exp / "front.engine").exists()  # nothing half-written


def test_trt_backend_load_mismatch_one_line(tmp_path, tiny_export, monkeypatch):
    """The TensorRT backend's first CUDA call is device_info too: same one line before any engine loads."""
    import json

    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.tensorrt.backend import load_trt_pipeline

    for role in ("front", "back"):
        (tmp_path / f"{role}.engine").write_bytes(b"plan")
        (tmp_path / f"{role}.engine.json").write_text(json.dumps(
            {"format": "atfr-engine", "engine": f"{role}.engine", "engine_bytes": 4, "tensorrt_version": "10.3.0.30"}))
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    _fake_cuda(monkeypatch, "13.0.1", 12060, _Err.cudaErrorInsufficientDriver)
    with pytest.raises(DependencyError) as ei:
        load_trt_pipeline(load_manifest(tiny_export), engine_dir=tmp_path)
    assert "\n" not in str(ei.value) and "cuda-python 13.0.1" in str(ei.value) and "CUDA 12.6" in str(ei.value)
