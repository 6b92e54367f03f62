"""scripts/device_check.sh / device_check.py without a GPU: the summary it writes, its pins, and the
pieces that make a bare machine usable (the import shim, the nvcc-wheel wrapper), all in seconds."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"


def _module():
    spec = importlib.util.spec_from_file_location("device_check", ROOT / "scripts" / "device_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _run(out: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHON=sys.executable, **env)
    e.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], capture_output=True, text=True, env=e, timeout=120)


def test_no_gpu_writes_summary_with_skip_reasons(tmp_path):
    out = tmp_path / "out"
    r = _run(out, ATFR_NVIDIA_SMI="")  # as on a machine without the NVIDIA driver
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "summary.json").read_text())
    assert doc["schema"] == "atfr-device-check/1" and doc["facts"]["gpu"] is None
    names = [s["name"] for s in doc["steps"]]
    assert names == ["env", "setup", "harness", "gpu_tests", "bandwidth", "exports", "tensorrt", "ort_cuda"]
    skipped = [s for s in doc["steps"] if s["status"] == "skipped"]
    assert len(skipped) == 7 and all("no NVIDIA GPU" in s["reason"] for s in skipped)
    assert doc["counts"] == {"ok": 1, "failed": 0, "skipped": 7}
    assert doc["facts"]["packages"]["python"] == sys.version.split()[0]
    assert "summary:" in r.stdout and not list(out.glob(".summary.json.*"))  # written atomically


def test_fake_gpu_no_install_reports_what_it_would_install(tmp_path):
    """A GPU is present (fake nvidia-smi, driver CUDA 12.6), nothing may be installed: the harness
    step calls nvcc for the local arch, and the missing onnxruntime-gpu is a skip naming the pin."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncase \"$1\" in --query-gpu*) echo 'NVIDIA H200, 9.0, 570.86.15, 143771 MiB';;\n"
                   "*) echo '| NVIDIA-SMI 570.86.15   Driver Version: 570.86.15   CUDA Version: 12.6 |';; esac\n")
    smi.chmod(0o755)
    nvcc_log = tmp_path / "nvcc.args"
    nvcc = tmp_path / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho \"$@\" > {nvcc_log}\n")
    nvcc.chmod(0o755)
    out = tmp_path / "out"
    r = _run(out, "--no-install", "--only", "env,harness", ATFR_NVIDIA_SMI=str(smi), ATFR_NVCC=str(nvcc))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "summary.json").read_text())
    assert doc["facts"]["gpu"] == {"gpus": [{"name": "NVIDIA H200", "compute_capability": "9.0",
                                             "driver": "570.86.15", "memory": "143771 MiB"}], "driver_cuda": "12.6"}
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["harness"]["status"] == "ok" and steps["harness"]["data"]["arch"] == "native"
    args = nvcc_log.read_text().split()
    assert "-arch=native" in args and "-fmad=false" in args and any(a.endswith("sgsKernel.cu") for a in args)
    assert doc["facts"]["pins"]["onnxruntime-gpu"] == ["onnxruntime-gpu[cuda,cudnn]==1.22.0"]
    for name in ("gpu_tests", "bandwidth", "exports", "ort_cuda", "tensorrt"):
        assert steps[name]["status"] == "skipped" and "--only" in steps[name]["reason"]


@pytest.mark.parametrize("driver, cuda_python", [
    ("12.6", "cuda-python==12.6.2.post1"), ("12.2", "cuda-python==12.2.1"), ("12.7", "cuda-python==12.6.2.post1"),
    ("13.0", "cuda-python==13.0.3"), ("13.1", "cuda-python==13.1.1"),
])
def test_pins_follow_the_driver(driver, cuda_python):
    dc = _module()
    pins = dc.pins_for(driver)
    assert pins["cuda-python"] == [cuda_python]  # the major must match the driver (issue 14, item 3)
    assert pins["onnxruntime-gpu"] == [dc.ORT_GPU]
    # nvcc from PyPI only for CUDA 13 drivers: the cu12 wheels carry ptxas but no nvcc
    assert pins.get("nvcc") == (dc.NVCC_13 if driver.startswith("13") else None)
    assert dc.pins_for(None) == {} and "nvcc" not in dc.pins_for("11.4")


def test_import_shim_maps_the_namespaces(tmp_path):
    dc = _module()
    base = dc.shim_package(tmp_path)
    code = ("import atfr.runtime.tensorrt.compat as c, atfr.runtime as r, atfr.errors; "
            "print(r.__path__[0]); print(c.parse_version('10.3.0.26'))")
    # -S: no site-packages, so no editable install to fall back on; the shim alone must do it
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(base), "PATH": os.environ.get("PATH", "")})
    assert r.returncode == 0, r.stderr
    path, ver = r.stdout.split()
    assert Path(path).resolve() == ROOT / "runtime" and ver == "10.3.0"


def test_nvcc_wheel_wrapper(tmp_path):
    """The PyPI nvcc wheel ships no libcudart link name or static library: the wrapper adds the runtime
    wheel's include folder, a libcudart.so link and -cudart shared."""
    dc = _module()
    site = tmp_path / "site"
    (site / "nvidia/cuda_nvcc/bin").mkdir(parents=True)
    (site / "nvidia/cuda_runtime/include").mkdir(parents=True)
    (site / "nvidia/cuda_runtime/lib").mkdir(parents=True)
    real = site / "nvidia/cuda_nvcc/bin/nvcc"
    real.write_text("#!/bin/sh\necho \"$@\"\n")
    real.chmod(0o755)
    (site / "nvidia/cuda_runtime/include/cuda_runtime.h").write_text("")
    (site / "nvidia/cuda_runtime/lib/libcudart.so.12").write_text("")
    wrapper, libs = dc.nvcc_wrapper([site], tmp_path / "work")
    out = subprocess.run([wrapper, "-arch=native", "x.cu"], capture_output=True, text=True).stdout.split()
    assert out[0] == f"-I{site / 'nvidia/cuda_runtime/include'}" and out[-4:] == ["-cudart", "shared", "-arch=native",
                                                                                   "x.cu"]
    link = tmp_path / "work" / "cudalib" / "libcudart.so"
    assert link.resolve() == (site / "nvidia/cuda_runtime/lib/libcudart.so.12").resolve()
    assert libs.split(":") == [str(link.parent), str(site / "nvidia/cuda_runtime/lib")]
    assert dc.nvcc_wrapper([tmp_path / "empty"], tmp_path / "w2") == (None, None)


def test_shell_wrapper_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
