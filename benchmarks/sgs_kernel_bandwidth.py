#!/usr/bin/env python3
"""SGS CUDA kernel throughput vs device memory bandwidth (GPU only).

Builds plugins/sgs/sgsHarness.cu + sgsKernel.cu with nvcc (-arch=native unless ATFR_NVCC_ARCH is set),
then times the full SGS forward (size-tensor memset + weights kernel + aggregation kernel) on
device-resident data for the ATFR layer shapes and compares the aggregation's bytes moved
(X read once per 32-bin tile + Y written) per second with a device-to-device memcpy.

    python benchmarks/sgs_kernel_bandwidth.py [--iters 200] [--json out.json]

Exits 0 with a "skipped" message when there is no CUDA device or no nvcc.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# (name, N, C, T, H, W, num_bins): the golden model layers and a batch-8 desktop case.
SHAPES = [
    ("r3d18 s2 (B=32)", 1, 32, 32, 28, 28, 32),
    ("slowfast slow s2 (B=4)", 1, 64, 4, 28, 28, -1),
    ("slowfast fast s2 (B=32)", 1, 8, 32, 28, 28, -1),
    ("3DResNet50 s2 224px (B=32)", 1, 256, 32, 56, 56, 32),
    ("3DResNet50 s2 224px N=8", 8, 256, 32, 56, 56, 32),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from test_sgs_cuda import build_harness, cuda_device_present, find_nvcc, load_harness

    present, info = cuda_device_present()
    if not present:
        print(f"skipped: {info}")
        return 0
    nvcc = find_nvcc()
    if nvcc is None:
        print("skipped: nvcc not found (needed to build plugins/sgs/sgsHarness.cu)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        lib = load_harness(build_harness(Path(tmp), nvcc))
        copy = ctypes.c_double()
        rc = lib.atfr_sgs_copy_bandwidth(ctypes.c_double(512 * 2**20), 20, ctypes.byref(copy))
        if rc != 0:
            print(f"error: copy bandwidth probe failed ({rc})")
            return 1
        print(f"device: {info}")
        print(f"device-to-device memcpy: {copy.value:.1f} GB/s (read + write)")
        rows = []
        print(f"{'shape':30s} {'dtype':5s} {'B_prime':>7s} {'us':>9s} {'GB/s':>8s} {'% memcpy':>9s}")
        for name, n, c, t, h, w, nb in SHAPES:
            for half in (0, 1):
                ms, bp, nbytes = ctypes.c_float(), ctypes.c_int(), ctypes.c_double()
                rc = lib.atfr_sgs_bench(half, n, c, t, h, w, nb, 0, 1, args.warmup, args.iters,
                                        ctypes.byref(ms), ctypes.byref(bp), ctypes.byref(nbytes))
                if rc != 0:
                    print(f"error: bench {name} failed ({rc})")
                    return 1
                gbps = nbytes.value / (ms.value * 1e-3) / 1e9
                row = dict(shape=name, N=n, C=c, T=t, H=h, W=w, num_bins=nb, dtype="fp16" if half else "fp32",
                           b_prime=bp.value, us=ms.value * 1e3, gbps=gbps, frac_of_memcpy=gbps / copy.value)
                rows.append(row)
                print(f"{name:30s} {row['dtype']:5s} {bp.value:7d} {row['us']:9.1f} {gbps:8.1f} "
                      f"{100 * row['frac_of_memcpy']:8.1f}%")
        if args.json:
            args.json.write_text(json.dumps(dict(device=info, memcpy_gbps=copy.value, rows=rows), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
