"""GPU harness: run the actual SGS CUDA kernels (plugins/sgs/sgsKernel.cu through the C entry point
``atfr_sgs_forward`` in plugins/sgs/sgsHarness.cu) on every golden SGS-op case.

The checks are the ones tests/test_sgs_emulated.py runs on the CPU emulation (tests/cuda_tools.py):
identical B' and per-sample k; bit-exact scaled distances, centres, widths, raw and compacted kernel
matrices; outputs within the fp32 rounding bound of K X (fp32 accumulation; the sum order differs from
the reference bmm), and with fp16 features within that bound plus the fp16 rounding of the result;
random configurations beyond the golden sizes (global-memory path, several bin tiles, fp16), guard_zero
and the empty batch.
Skips with a reason when there is no CUDA device (torch.cuda.is_available() or nvidia-smi) or no nvcc.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cuda_tools import (CtypesHarness, build_nvcc_harness, check_empty_batch, check_golden_case, check_guard_zero,
                        check_random_configs, find_nvcc, golden_cases)

pytestmark = pytest.mark.gpu

GOLDEN_CASES = golden_cases()

# benchmarks/sgs_kernel_bandwidth.py builds and loads the harness through these names.
build_harness = build_nvcc_harness


def load_harness(lib_path: Path):
    """The ctypes library (atfr_sgs_forward, atfr_sgs_bench, atfr_sgs_copy_bandwidth with their signatures)."""
    return CtypesHarness(lib_path).lib


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


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> CtypesHarness:
    present, info = cuda_device_present()
    if not present:
        pytest.skip(info)
    nvcc = find_nvcc()
    if nvcc is None:
        pytest.skip("a CUDA device is present but nvcc was not found to build plugins/sgs/sgsHarness.cu")
    return CtypesHarness(build_nvcc_harness(tmp_path_factory.mktemp("sgs_cuda"), nvcc))


@pytest.mark.parametrize("case", GOLDEN_CASES or [None], ids=[p.stem for p in GOLDEN_CASES] or ["no-golden"])
def test_cuda_kernels_vs_golden(harness: CtypesHarness, case: Path | None) -> None:
    if case is None:
        pytest.skip("golden SGS-op cases not found (they live in ../shared/golden beside the repo)")
    check_golden_case(harness.forward, case)


def test_cuda_random_configs(harness: CtypesHarness) -> None:
    """Includes T = 400 (T*32*4 B > 48 KiB: the aggregation's global-memory weight path)."""
    assert check_random_configs(harness.forward) >= 10


def test_cuda_guard_zero(harness: CtypesHarness) -> None:
    check_guard_zero(harness.forward)


def test_cuda_empty_batch(harness: CtypesHarness) -> None:
    check_empty_batch(harness.forward)
