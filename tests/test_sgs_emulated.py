"""The SGS CUDA kernels on the CPU: the unmodified plugins/sgs/sgsKernel.cu and sgsHarness.cu compiled with
g++ over the CUDA emulation in tests/cuda_emu (real threads per block, a barrier for __syncthreads,
NaN-filled shared memory, poisoned device memory; see cuda_emu.h), driven through the same
``atfr_sgs_forward`` entry point and the same checks as the GPU test (tests/test_sgs_cuda.py):

- every golden SGS-op case: bit-exact scaled distances, centres, widths, raw and compacted kernel,
  identical B' and k, outputs within the fp32 (and fp16-feature) rounding bound;
- random configurations beyond the golden sizes against runtime/sgs_numpy.py (T = 400 through the
  aggregation's global-memory path, five 32-bin tiles, two x-blocks, fp16 features, mixed k in a batch);
- guard_zero and the empty batch (N = 0, the plugin's device-side B' write);
- AddressSanitizer+UBSan and ThreadSanitizer builds (a pipe driver: TSan cannot be preloaded into Python);
- non-vacuity: deliberate perturbations of a copy of the kernel source make these checks (or the
  sanitizers) fail.

This is what runs when no GPU does; it does not replace tests/test_sgs_cuda.py on a device.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from cuda_tools import (PLUGIN_DIR, CtypesHarness, DriverHarness, build_emulated, check_empty_batch,
                        check_golden_case, check_guard_zero, check_random_configs, golden_cases,
                        shared_array_names)

GOLDEN_CASES = golden_cases()
SAN_ENV = {
    # Any report fails the run: TSan exits 66 on the first race, ASan aborts, UBSan is non-recoverable.
    "TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0",
    "ASAN_OPTIONS": "detect_leaks=1 halt_on_error=1 abort_on_error=0 exitcode=67",
    "UBSAN_OPTIONS": "halt_on_error=1 print_stacktrace=1",
}


def _need_gxx() -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: the CUDA kernels cannot be compiled for the CPU emulation")


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> CtypesHarness:
    _need_gxx()
    return CtypesHarness(build_emulated(tmp_path_factory.mktemp("sgs_emu")))


@pytest.mark.parametrize("case", GOLDEN_CASES or [None], ids=[p.stem for p in GOLDEN_CASES] or ["no-golden"])
def test_emulated_kernels_vs_golden(emu: CtypesHarness, case: Path | None) -> None:
    if case is None:
        pytest.skip("golden SGS-op cases not found (they live in ../shared/golden beside the repo)")
    check_golden_case(emu.forward, case)


def test_emulated_random_configs(emu: CtypesHarness) -> None:
    assert check_random_configs(emu.forward) >= 10


def test_emulated_guard_zero(emu: CtypesHarness) -> None:
    check_guard_zero(emu.forward)


def test_emulated_empty_batch(emu: CtypesHarness) -> None:
    check_empty_batch(emu.forward)


# ---- sanitizers ---------------------------------------------------------------------------------
def _run_all_checks(forward) -> None:
    for case in GOLDEN_CASES:
        check_golden_case(forward, case)
    check_random_configs(forward)
    check_guard_zero(forward)
    check_empty_batch(forward)


@pytest.mark.slow
@pytest.mark.parametrize("sanitizer", ["asan", "tsan"])
def test_sanitized_kernels(sanitizer: str, tmp_path: Path) -> None:
    """Every check above under ASan+UBSan / TSan; the driver must also exit cleanly (no report, no leak)."""
    _need_gxx()
    if not GOLDEN_CASES:
        pytest.skip("golden SGS-op cases not found")
    drv = DriverHarness(build_emulated(tmp_path, sanitize=sanitizer, driver=True), env=SAN_ENV)
    try:
        _run_all_checks(drv.forward)
    finally:
        err = drv.close()
    assert "Sanitizer" not in err, err[-4000:]


# ---- non-vacuity: perturbed copies of the kernel must fail -------------------------------------
def _perturbed_plugin(tmp_path: Path, old: str, new: str) -> Path:
    src = tmp_path / "sgs"
    shutil.copytree(PLUGIN_DIR, src)
    path = src / "sgsKernel.cu"
    text = path.read_text()
    assert text.count(old) == 1, f"perturbation anchor not found exactly once in sgsKernel.cu: {old!r}"
    path.write_text(text.replace(old, new))
    return src


# (anchor in sgsKernel.cu, replacement, what catches it)
PERTURBATIONS = {
    # Off-by-one bin index: the centres (and every weight) move by one bin width.
    "bin_center_off_by_one": ("float const c = binCenter(b, w);", "float const c = binCenter(b + 1, w);"),
    # Compaction counts its own row: active rows land one slot too far, B' and k unchanged.
    "compaction_off_by_one": ("for (int32_t j = 0; j < b; ++j)", "for (int32_t j = 0; j <= b; ++j)"),
    # Rows k..B-1 left unwritten: only the cudaMalloc poison (NaN) makes this visible; memory that
    # happens to be zero (fresh device allocations often are) would hide it.
    "no_zero_rows": ("if (p.dropBins && b >= k)", "if (false && p.dropBins && b >= k)"),
    # Bin tiles overlap: invisible with one tile (every golden case has B <= 32); the random
    # configurations with up to five tiles catch it.
    "tile_offset": ("int32_t const b0 = blockIdx.y * kBinTile;", "int32_t const b0 = blockIdx.y * (kBinTile - 1);"),
    # Global-memory weight path (T*32*4 B > 48 KiB) reads the neighbouring bin: only T = 400 reaches it.
    "global_path_off_by_one": ("acc[j] = fmaf(__ldg(kr + j), xv, acc[j]);", "acc[j] = fmaf(__ldg(kr + j + 1), xv, acc[j]);"),
}


@pytest.mark.parametrize("name", [n if n == "bin_center_off_by_one" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in PERTURBATIONS])
def test_perturbed_kernel_fails_checks(name: str, tmp_path: Path) -> None:
    _need_gxx()
    if not GOLDEN_CASES:
        pytest.skip("golden SGS-op cases not found")
    old, new = PERTURBATIONS[name]
    harness = CtypesHarness(build_emulated(tmp_path / "build", plugin_dir=_perturbed_plugin(tmp_path, old, new)))
    failures = []
    for case in GOLDEN_CASES:
        try:
            check_golden_case(harness.forward, case)
        except AssertionError as e:
            failures.append(f"{case.stem}: {e}")
    try:
        check_random_configs(harness.forward)
    except AssertionError as e:
        failures.append(str(e))
    assert failures, f"perturbation {name!r} passed every check: the checks are vacuous"
    print(f"{name}: {len(failures)} failing checks (of {len(GOLDEN_CASES)} golden cases + the random set), "
          f"e.g. {failures[0][:200]}")


# Perturbations reported by name by a sanitizer or by the emulation itself (through the pipe driver:
# the report ends the process). The first one only a sanitizer sees: the plain build still computes
# the right numbers.
DRIVER_PERTURBATIONS = {
    # Dynamic shared memory 4 bytes too small: the last active flag is written past the launch's size
    # (into NaN-filled emulation memory, so the results stay right); ASan's poisoning reports it.
    "asan-smem_4_bytes_short": ("asan", "+ sizeof(int32_t) * static_cast<size_t>(p.B);",
                                "+ sizeof(int32_t) * static_cast<size_t>(p.B - 1);", "AddressSanitizer"),
    # The reduction's closing barrier removed: the next reduction overwrites red[0] while other threads
    # may still be reading the previous result. The plain build's real threads often get wrong numbers
    # from it too; TSan reports the race whatever the interleaving.
    "tsan-missing_barrier": ("tsan", "    float const r = red[0];\n    __syncthreads();\n",
                             "    float const r = red[0];\n", "ThreadSanitizer: data race"),
    # A barrier moved inside `if (threadIdx.x < s)`: undefined on the device (a hang, or on Volta+ a
    # barrier that counts arrivals from another call site); the emulation's barrier aborts.
    "emu-divergent_barrier": (None, "red[threadIdx.x + s]);\n        }\n        __syncthreads();\n",
                              "red[threadIdx.x + s]);\n            __syncthreads();\n        }\n",
                              "cuda_emu: divergent __syncthreads|cuda_emu: .*returned"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DRIVER_PERTURBATIONS))
def test_driver_reports_perturbation(name: str, tmp_path: Path) -> None:
    _need_gxx()
    if not GOLDEN_CASES:
        pytest.skip("golden SGS-op cases not found")
    sanitizer, old, new, report = DRIVER_PERTURBATIONS[name]
    exe = build_emulated(tmp_path / "build", sanitize=sanitizer, driver=True,
                         plugin_dir=_perturbed_plugin(tmp_path, old, new))
    drv = DriverHarness(exe, env=SAN_ENV)
    # A race can also give wrong numbers before the sanitizer sees it (TSan reports a race only
    # when its history catches both accesses): keep feeding cases after a value mismatch until
    # the report arrives or the driver dies, then collect its stderr. The perturbation must be
    # caught, and by the named tool.
    found: list[str] = []
    try:
        for case in GOLDEN_CASES:
            try:
                check_golden_case(drv.forward, case)
            except AssertionError as e:
                found.append(str(e))
                if re.search(report, str(e)) or drv.proc.poll() is not None:
                    break
    finally:
        try:
            found.append(drv.close())
        except AssertionError as e:
            found.append(str(e))
    text = "\n".join(found)
    assert re.search(report, text), text[-3000:]


def test_static_shared_arrays_are_refused() -> None:
    """The emulation would give a static __shared__ array one copy per thread: the build refuses it."""
    assert shared_array_names("extern __shared__ float smem[];\n__global__ void k() { extern __shared__ int x[]; }") \
        == {"smem", "x"}
    with pytest.raises(RuntimeError, match="static __shared__"):
        shared_array_names("__global__ void k() { __shared__ float red[128]; }")
    # The shipped kernels use dynamic shared memory only.
    names = shared_array_names((PLUGIN_DIR / "sgsKernel.cu").read_text())
    assert names and all(re.fullmatch(r"\w+", n) for n in names)
