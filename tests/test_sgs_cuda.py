"""GPU harness: run the actual SGS CUDA kernels (plugins/sgs/sgsKernel.cu through the C entry point
``atfr_sgs_forward`` in plugins/sgs/sgsHarness.cu) on every golden SGS-op case.

Checks: identical B' and per-sample k; bit-exact scaled distances, centres, widths, raw and compacted
kernel matrices; output max abs error <= 1e-5 (fp32 features; fp32 accumulation, FMA order may
differ from the reference bmm); fp16 features: error reported (and loosely bounded).
Skips with a reason when there is no CUDA device (torch.cuda.is_available() or nvidia-smi) or no nvcc.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cuda_tools import find_nvcc

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "sgs"
GOLDEN_OPS = Path(__file__).resolve().parents[2] / "shared" / "golden" / "sgs_op"
FP32_ATOL = 1e-5


def cuda_device_present() -> tuple[bool, str]:
    try:
        import torch
        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
    except Exception:  # torch absent or CPU-only build: fall back to nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True, out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return False, "no CUDA device (torch.cuda.is_available() is False and nvidia-smi lists no GPU)"


def build_harness(out_dir: Path, nvcc: str) -> Path:
    """nvcc -shared of sgsHarness.cu + sgsKernel.cu for the local GPU (-arch=native, or $ATFR_NVCC_ARCH)."""
    arch = os.environ.get("ATFR_NVCC_ARCH", "native")
    lib = out_dir / "libatfr_sgs_harness.so"
    cmd = [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-fmad=false", "-shared", "-Xcompiler", "-fPIC",
           "-I", str(PLUGIN_DIR), str(PLUGIN_DIR / "sgsHarness.cu"), str(PLUGIN_DIR / "sgsKernel.cu"), "-o", str(lib)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return lib


def load_harness(lib_path: Path):
    lib = ctypes.CDLL(str(lib_path))
    vp, fp, ip = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
    lib.atfr_sgs_forward.restype = ctypes.c_int
    lib.atfr_sgs_forward.argtypes = [vp, ctypes.c_int, vp] + [ctypes.c_int] * 10 + [vp, vp, vp, vp, vp, vp, vp, vp]
    lib.atfr_sgs_bench.restype = ctypes.c_int
    lib.atfr_sgs_bench.argtypes = [ctypes.c_int] * 11 + [fp, ip, ctypes.POINTER(ctypes.c_double)]
    lib.atfr_sgs_copy_bandwidth.restype = ctypes.c_int
    lib.atfr_sgs_copy_bandwidth.argtypes = [ctypes.c_double, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]
    return lib


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def gpu_forward(lib, x: np.ndarray, delta: np.ndarray, num_bins: int, kernel: str, drop: bool, guard: bool = False):
    half = x.dtype == np.float16
    x = np.ascontiguousarray(x)
    delta = np.ascontiguousarray(delta, dtype=np.float32)
    n, c, t, h, w = x.shape
    b = t if num_bins == -1 else int(num_bins)
    out = np.zeros((n, c, b, h, w), dtype=x.dtype)
    bp = np.zeros(1, np.int32)
    r = dict(k=np.zeros(n, np.int32), kernel_compact=np.zeros((n, b, t), np.float32),
             kernel_raw=np.zeros((n, b, t), np.float32), scaled=np.zeros((n, t), np.float32),
             centers=np.zeros((n, b), np.float32), width=np.zeros(n, np.float32))
    rc = lib.atfr_sgs_forward(_ptr(x), int(half), _ptr(delta), n, c, t, h, w, int(num_bins),
                              1 if kernel.startswith("delta") else 0, int(kernel.endswith("_normalized")),
                              int(bool(drop)), int(bool(guard)), _ptr(out), _ptr(bp), _ptr(r["k"]),
                              _ptr(r["kernel_compact"]), _ptr(r["kernel_raw"]), _ptr(r["scaled"]),
                              _ptr(r["centers"]), _ptr(r["width"]))
    assert rc == 0, f"atfr_sgs_forward failed with CUDA error {rc}"
    bpv = int(bp[0])
    r["B_prime"] = bpv
    # The device wrote a dense [N,C,B',H,W] tensor at the start of the buffer.
    r["output"] = out.reshape(-1)[: n * c * bpv * h * w].reshape(n, c, bpv, h, w)
    return r


def assert_bits_equal(actual, expected, what: str) -> None:
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    na, ne = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(na, ne), f"{what}: NaN positions differ"
    assert np.array_equal(actual[~na].view(np.uint32), expected[~ne].view(np.uint32)), f"{what}: bits differ"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    present, info = cuda_device_present()
    if not present:
        pytest.skip(info)
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("a CUDA device is present but nvcc was not found to build plugins/sgs/sgsHarness.cu")
    return load_harness(build_harness(tmp_path_factory.mktemp("sgs_cuda"), nvcc))


GOLDEN_CASES = sorted(GOLDEN_OPS.glob("*.npz")) if GOLDEN_OPS.is_dir() else []


@pytest.mark.parametrize("case", GOLDEN_CASES or [None], ids=[p.stem for p in GOLDEN_CASES] or ["no-golden"])
def test_cuda_kernels_vs_golden(harness, case: Path | None) -> None:
    if case is None:
        pytest.skip(f"golden SGS-op cases not found at {GOLDEN_OPS}")
    z = np.load(case, allow_pickle=False)
    kernel = str(z["kernel_type"])
    drop = bool(z["drop_bins"])
    x = np.ascontiguousarray(z["X"], np.float32)
    got = gpu_forward(harness, x, z["distances"], int(z["num_bins_arg"]), kernel, drop)
    assert_bits_equal(got["scaled"], z["distances_scaled"], "distances_scaled")
    assert_bits_equal(got["centers"], z["bin_centers"], "bin_centers")
    assert_bits_equal(got["width"], z["bin_width"], "bin_width")
    assert_bits_equal(got["kernel_raw"], z["kernel_raw"], "kernel_raw")
    if str(z["status"]) != "ok":
        assert got["B_prime"] == 0, "official code raised (no active bin): the plugin must report B' = 0"
        return
    assert got["B_prime"] == int(z["B_prime"]), "B'"
    assert np.array_equal(got["k"], z["k_per_sample"].astype(np.int32)), "k_per_sample"
    bp = got["B_prime"]
    assert_bits_equal(got["kernel_compact"][:, :bp], z["kernel"], "compacted kernel")
    expected = z["output"].astype(np.float32)
    assert got["output"].shape == expected.shape
    finite = np.isfinite(expected)
    assert np.array_equal(np.isnan(got["output"]), np.isnan(expected)), "NaN pattern of the output"
    err = float(np.max(np.abs(got["output"][finite] - expected[finite]), initial=0.0))
    assert err <= FP32_ATOL, f"fp32 max abs error {err:.3e} > {FP32_ATOL}"

    # fp16 features: same B'/k (bin math stays fp32); error is reported, bounded by fp16 rounding.
    if np.isfinite(x).all() and np.abs(x).max() < 6e4 and finite.all():
        g16 = gpu_forward(harness, x.astype(np.float16), z["distances"], int(z["num_bins_arg"]), kernel, drop)
        assert g16["B_prime"] == bp and np.array_equal(g16["k"], got["k"])
        ref16 = np.einsum("nbt,nctp->ncbp", z["kernel"].astype(np.float64),
                          x.astype(np.float16).astype(np.float64).reshape(*x.shape[:3], -1)).reshape(expected.shape)
        err16 = float(np.max(np.abs(g16["output"].astype(np.float64) - ref16), initial=0.0))
        scale = float(np.max(np.abs(ref16), initial=0.0))
        print(f"{case.stem}: fp32 max abs err {err:.3e}; fp16 max abs err {err16:.3e} (max |y| {scale:.3g})")
        assert err16 <= 2e-3 * max(1.0, scale), f"fp16 error {err16} too large"


def test_cuda_guard_zero(harness) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 2, 2)).astype(np.float32)
    d = np.zeros((2, 8), np.float32)
    d[1] = np.linspace(0.1, 1.0, 8, dtype=np.float32)
    got = gpu_forward(harness, x, d, -1, "linear", True, guard=True)
    assert got["k"][0] == 1 and np.isfinite(got["output"]).all()


def test_cuda_large_t_global_path(harness) -> None:
    """T*32*4 B > 48 KiB selects the global-memory weight path of the aggregation kernel."""
    rng = np.random.default_rng(1)
    n, c, t, h, w = 1, 4, 400, 3, 3
    x = rng.standard_normal((n, c, t, h, w)).astype(np.float32)
    d = (rng.random((n, t)) + 0.1).astype(np.float32)
    got = gpu_forward(harness, x, d, 40, "linear", True)
    bp = got["B_prime"]
    ref = np.einsum("nbt,nctp->ncbp", got["kernel_compact"][:, :bp].astype(np.float64),
                    x.reshape(n, c, t, -1).astype(np.float64)).reshape(n, c, bp, h, w)
    assert np.max(np.abs(got["output"] - ref)) <= 1e-4
