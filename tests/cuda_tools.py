"""CUDA test tools shared by the GPU harness tests (tests/test_sgs_cuda.py), the CPU-emulated kernel
tests (tests/test_sgs_emulated.py) and the plugin compile tests (tests/test_plugin_sources.py):

- locating nvcc;
- building the SGS kernels + harness (plugins/sgs/sgsKernel.cu, sgsHarness.cu) with nvcc for a GPU,
  or with g++ over the CUDA emulation in tests/cuda_emu (plain, ASan+UBSan, TSan);
- two ways to call ``atfr_sgs_forward`` with identical results dicts: ctypes (``CtypesHarness``) and
  a pipe to the sanitizer driver executable (``DriverHarness``);
- the checks every backend runs: golden SGS-op cases (bit-exact bin arithmetic, B', k, outputs),
  random configurations beyond the golden sizes against ``runtime/sgs_numpy.py``, guard_zero, N = 0.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = ROOT / "plugins" / "sgs"
EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
GOLDEN_OPS = ROOT.parent / "shared" / "golden" / "sgs_op"
KERNEL_SOURCES = ("sgsKernel.cu", "sgsHarness.cu")
BUILD_TIMEOUT = 900


def find_nvcc() -> str | None:
    env = os.environ.get("ATFR_NVCC")
    if env:
        return env
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None


def golden_cases() -> list[Path]:
    return sorted(GOLDEN_OPS.glob("*.npz")) if GOLDEN_OPS.is_dir() else []


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---- builds -----------------------------------------------------------------------------------
def build_nvcc_harness(out_dir: Path, nvcc: str, arch: str | None = None) -> Path:
    """nvcc -shared of sgsHarness.cu + sgsKernel.cu for the local GPU (-arch=native, or $ATFR_NVCC_ARCH)."""
    arch = arch or os.environ.get("ATFR_NVCC_ARCH", "native")
    lib = out_dir / "libatfr_sgs_harness.so"
    _run([nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-fmad=false", "-shared", "-Xcompiler", "-fPIC",
          "-I", str(PLUGIN_DIR)] + [str(PLUGIN_DIR / s) for s in KERNEL_SOURCES] + ["-o", str(lib)])
    return lib


SANITIZERS = {
    None: [],
    # -fno-sanitize-recover: the first UBSan finding aborts (a report alone would not fail a test).
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"],
    "tsan": ["-fsanitize=thread"],
}

_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\s+[\w:<>\s]+?\b(\w+)\s*\[\s*\]")


def shared_array_names(source: str) -> set[str]:
    """Names of the ``extern __shared__ T name[];`` arrays; refuses static ``__shared__`` arrays, which the
    emulation cannot share between a block's threads (see tests/cuda_emu/cuda_emu.h)."""
    code = re.sub(r"//[^\n]*|/\*.*?\*/", "", source, flags=re.S)
    for m in re.finditer(r"__shared__", code):
        if not re.search(r"\bextern\s+$", code[max(0, m.start() - 40):m.start()]):
            line = code.count("\n", 0, m.start()) + 1
            raise RuntimeError(f"line {line}: static __shared__ array: the CUDA emulation supports only "
                               "dynamic shared memory (extern __shared__ T name[];)")
    return set(_EXTERN_SHARED.findall(code))


def _defsyms(objects: list[Path], names: set[str]) -> list[str]:
    """--defsym of every undefined symbol that is one of the ``extern __shared__`` arrays to the emulation's
    dynamic shared memory buffer (they all alias it, as on the device)."""
    flags = []
    for obj in objects:
        syms = [ln.split()[0] for ln in _run(["nm", "-u", "-P", str(obj)]).stdout.splitlines() if ln.strip()]
        dem = subprocess.run(["c++filt"], input="\n".join(syms), capture_output=True, text=True,
                             check=True).stdout.splitlines()
        for sym, d in zip(syms, dem):
            plain = d.replace("(anonymous namespace)", "")
            if "(" not in plain and plain.rsplit("::", 1)[-1] in names:
                flags.append(f"-Wl,--defsym={sym}=atfr_cuda_emu_dyn_smem")
    if names and not flags:
        raise RuntimeError(f"no undefined symbol found for the extern __shared__ arrays {sorted(names)}")
    return flags


_OBJECT_CACHE: dict[tuple, Path] = {}


def build_emulated(out_dir: Path, sanitize: str | None = None, plugin_dir: Path = PLUGIN_DIR,
                   driver: bool | Path = False, extra_sources: tuple[Path, ...] = (),
                   system_includes: tuple[str, ...] = ()) -> Path:
    """Compile the unmodified kernel + harness sources for the host over tests/cuda_emu/cuda_emu.h.

    Returns libatfr_sgs_emu.so (for ctypes), or with ``driver`` an executable: ``True`` is the
    sgs_driver pipe driver (needed for TSan, which cannot be preloaded into Python), a path is another
    main (e.g. tests/cuda_emu/plugin_enqueue_check.cpp). ``extra_sources`` are compiled the same way
    (e.g. sgsPlugin.cpp, with the TensorRT headers in ``system_includes``). ``plugin_dir`` may point at a
    patched copy of plugins/sgs (the perturbation tests).
    """
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise FileNotFoundError("no host C++ compiler (g++/c++)")
    out_dir.mkdir(parents=True, exist_ok=True)
    san = SANITIZERS[sanitize]
    # -ffp-contract=off: a*b+c is never fused (GCC fuses by default where FMA exists, e.g. aarch64);
    # the device code uses __f*_rn, which nvcc never fuses either. -O1 keeps the sanitizer builds fast.
    common = ["-std=c++17", "-O1" if sanitize else "-O2", "-g", "-pthread", "-fPIC", "-ffp-contract=off",
              "-fno-fast-math", "-Wall", "-Wno-unknown-pragmas", *san]
    local = ["-I", str(EMU_DIR), "-I", str(plugin_dir)]
    with_sys = local + [f for d in system_includes for f in ("-isystem", d)]
    own = b"".join(h.name.encode() + b"\0" + h.read_bytes()
                   for h in sorted(plugin_dir.glob("*.h")) + sorted(EMU_DIR.glob("*.h")))
    # Sources that never reach a TensorRT header (the kernels) are built without the system include
    # dirs, so one object serves every TensorRT header set (tests/test_plugin_sources.py runs three).
    headers = {flags is with_sys: hashlib.sha256("\0".join(flags).encode() + own).hexdigest()
               for flags in (local, with_sys)}
    main = EMU_DIR / "sgs_driver.cpp" if driver is True else (Path(driver) if driver else None)
    sources = [plugin_dir / s for s in KERNEL_SOURCES] + [Path(p) for p in extra_sources] + ([main] if main else [])
    names: set[str] = set()
    objects = []
    for path in sources:
        text = path.read_text()
        names |= shared_array_names(text)
        obj = out_dir / (path.stem + ".o")
        nv = bool(system_includes) and _reaches_tensorrt_headers(path, (plugin_dir, EMU_DIR))
        includes = with_sys if nv else local
        # A perturbed copy of the plugin usually changes one file: identical inputs reuse the object.
        key = (cxx, tuple(common), path.name, hashlib.sha256(text.encode()).hexdigest(), headers[nv])
        cached = _OBJECT_CACHE.get(key)
        if cached is not None and cached.exists():
            shutil.copyfile(cached, obj)
        else:
            _run([cxx, *common, "-x", "c++", "-include", "cuda_emu.h", *includes, "-c", str(path), "-o", str(obj)])
            _OBJECT_CACHE[key] = obj
        objects.append(obj)
    link = [*_defsyms(objects, names), "-pthread", *san]
    if main:
        exe = out_dir / main.stem
        _run([cxx, *map(str, objects), *link, "-o", str(exe)])
        return exe
    lib = out_dir / "libatfr_sgs_emu.so"
    _run([cxx, "-shared", "-Wl,-z,defs", *map(str, objects), *link, "-o", str(lib)])
    return lib


def _reaches_tensorrt_headers(path: Path, dirs: tuple[Path, ...]) -> bool:
    """Does ``path`` include an Nv* (TensorRT) header, directly or through the local headers in ``dirs``?"""
    seen, todo = {path}, [path]
    while todo:
        for inc in re.findall(r'^\s*#\s*include\s*["<]([^">]+)[">]', todo.pop().read_text(), re.M):
            if inc.startswith("Nv"):
                return True
            for d in dirs:
                q = d / inc
                if q.is_file() and q not in seen:
                    seen.add(q)
                    todo.append(q)
    return False


# ---- calling atfr_sgs_forward -----------------------------------------------------------------
def _kernel_fields(kernel: str) -> tuple[int, int]:
    return (1 if kernel.startswith("delta") else 0), int(kernel.endswith("_normalized"))


def _result_arrays(n: int, b: int, t: int) -> dict[str, np.ndarray]:
    return dict(k=np.zeros(n, np.int32), kernel_compact=np.zeros((n, b, t), np.float32),
                kernel_raw=np.zeros((n, b, t), np.float32), scaled=np.zeros((n, t), np.float32),
                centers=np.zeros((n, b), np.float32), width=np.zeros(n, np.float32))


class CtypesHarness:
    """atfr_sgs_forward in a shared library (nvcc build on a GPU, or the emulated build) through ctypes."""

    def __init__(self, lib_path: Path):
        self.lib = ctypes.CDLL(str(lib_path))
        vp, fp, ip = ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int)
        self.lib.atfr_sgs_forward.restype = ctypes.c_int
        self.lib.atfr_sgs_forward.argtypes = [vp, ctypes.c_int, vp] + [ctypes.c_int] * 10 + [vp] * 8
        self.lib.atfr_sgs_bench.restype = ctypes.c_int
        self.lib.atfr_sgs_bench.argtypes = [ctypes.c_int] * 11 + [fp, ip, ctypes.POINTER(ctypes.c_double)]
        self.lib.atfr_sgs_copy_bandwidth.restype = ctypes.c_int
        self.lib.atfr_sgs_copy_bandwidth.argtypes = [ctypes.c_double, ctypes.c_int, ctypes.POINTER(ctypes.c_double)]

    def forward(self, x: np.ndarray, delta: np.ndarray, num_bins: int, kernel: str, drop: bool,
                guard: bool = False) -> dict:
        half = x.dtype == np.float16
        x = np.ascontiguousarray(x)
        delta = np.ascontiguousarray(delta, dtype=np.float32)
        n, c, t, h, w = x.shape
        b = t if num_bins == -1 else int(num_bins)
        out = np.zeros(max(1, n * c * b * h * w), dtype=x.dtype)
        bp = np.full(1, -1, np.int32)
        r = _result_arrays(n, b, t)
        ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        kcode, norm = _kernel_fields(kernel)
        rc = self.lib.atfr_sgs_forward(
            ptr(np.ascontiguousarray(x.reshape(-1) if x.size else np.zeros(1, x.dtype))), int(half),
            ptr(delta.reshape(-1) if delta.size else np.zeros(1, np.float32)), n, c, t, h, w, int(num_bins), kcode,
            norm, int(bool(drop)), int(bool(guard)), ptr(out), ptr(bp), ptr(r["k"]), ptr(r["kernel_compact"]),
            ptr(r["kernel_raw"]), ptr(r["scaled"]), ptr(r["centers"]), ptr(r["width"]))
        assert rc == 0, f"atfr_sgs_forward failed with CUDA error {rc}"
        bpv = int(bp[0])
        r["B_prime"] = bpv
        # The device wrote a dense [N,C,B',H,W] tensor at the start of the buffer.
        r["output"] = out[: n * c * max(bpv, 0) * h * w].reshape(n, c, max(bpv, 0), h, w)
        return r

    def close(self) -> None:
        pass


class DriverHarness:
    """The same forward through tests/cuda_emu/sgs_driver.cpp over a pipe (sanitizer builds)."""

    MAGIC = 0x53475331

    def __init__(self, exe: Path, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={**os.environ, **(env or {})})

    def _read(self, nbytes: int) -> bytes:
        data = self.proc.stdout.read(nbytes) if nbytes else b""
        if len(data) != nbytes:
            self.proc.kill()
            err = self.proc.stderr.read().decode(errors="replace")
            raise AssertionError(f"sgs_driver died (exit {self.proc.wait()}):\n{err[-6000:]}")
        return data

    def forward(self, x: np.ndarray, delta: np.ndarray, num_bins: int, kernel: str, drop: bool,
                guard: bool = False) -> dict:
        half = x.dtype == np.float16
        x = np.ascontiguousarray(x)
        delta = np.ascontiguousarray(delta, dtype=np.float32)
        n, c, t, h, w = x.shape
        b = t if num_bins == -1 else int(num_bins)
        kcode, norm = _kernel_fields(kernel)
        hdr = struct.pack("<12i", self.MAGIC, int(half), n, c, t, h, w, int(num_bins), kcode, norm, int(bool(drop)),
                          int(bool(guard)))
        try:
            self.proc.stdin.write(hdr + x.tobytes() + delta.tobytes())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._read(1)  # raises with the driver's stderr
        rc, bpv = struct.unpack("<2i", self._read(8))
        assert rc == 0, f"atfr_sgs_forward failed with CUDA error {rc}"
        r: dict = {}
        r["k"] = np.frombuffer(self._read(4 * n), np.int32).copy()
        for key, shape in (("kernel_compact", (n, b, t)), ("kernel_raw", (n, b, t)), ("scaled", (n, t)),
                           ("centers", (n, b)), ("width", (n,))):
            r[key] = np.frombuffer(self._read(4 * int(np.prod(shape))), np.float32).reshape(shape).copy()
        r["B_prime"] = bpv
        size = n * c * max(bpv, 0) * h * w
        r["output"] = np.frombuffer(self._read(x.itemsize * size), x.dtype).reshape(n, c, max(bpv, 0), h, w).copy()
        return r

    def close(self) -> str:
        """End the driver; raises when it fails (a sanitizer report exits non-zero). Returns its stderr."""
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode(errors="replace")
        code = self.proc.wait(timeout=120)
        self.proc.stdout.close()
        self.proc.stderr.close()
        if code != 0:
            raise AssertionError(f"sgs_driver exited with {code}:\n{err[-6000:]}")
        return err


Forward = Callable[..., dict]


# ---- checks -----------------------------------------------------------------------------------
def assert_bits_equal(actual, expected, what: str) -> None:
    """Bit-exact fp32 equality (sign of zero included); NaN positions must match (payloads may differ)."""
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    na, ne = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(na, ne), f"{what}: NaN positions differ"
    a_bits, e_bits = actual[~na].view(np.uint32), expected[~ne].view(np.uint32)
    bad = np.nonzero(a_bits != e_bits)[0]
    assert bad.size == 0, (f"{what}: {bad.size} of {a_bits.size} values differ in bits, first at flat index {bad[0]}: "
                           f"{actual[~na][bad[0]]!r} vs {expected[~ne][bad[0]]!r}")


def _aggregate64(kmat: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Y = K X in float64 and the bound sum_t |K||X| (what rounding errors scale with)."""
    n, c, t = x.shape[:3]
    xf = x.astype(np.float64).reshape(n, c, t, -1)
    k64 = kmat.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.einsum("nbt,nctp->ncbp", k64, xf)
        mag = np.einsum("nbt,nctp->ncbp", np.abs(k64), np.abs(xf))
    shape = (n, c, kmat.shape[1]) + x.shape[3:]
    return y.reshape(shape), mag.reshape(shape)


def assert_output_close(got: np.ndarray, kmat: np.ndarray, x: np.ndarray, what: str) -> None:
    """Output of the aggregation against float64 K X.

    fp32 features: the kernel sums T products sequentially with fmaf in fp32, each step rounding once
    (relative 2^-24), so |err| <= T * 2^-24 * sum_t |K||X| (+ the fp32 rounding of the reference K X
    itself, within the same bound), i.e. T * 2^-23 * sum_t |K||X| per element.
    fp16 features (X already fp16, accumulated in fp32, stored as fp16): the same accumulation bound
    plus the final rounding to fp16: half an ulp, 2^-11 relative, and 2^-25 absolute for subnormals.
    NaN/inf positions must match exactly.
    """
    y, mag = _aggregate64(kmat, x)
    assert got.shape == y.shape, f"{what}: output shape {got.shape} != {y.shape}"
    g = got.astype(np.float64)
    finite = np.isfinite(y)
    assert np.array_equal(np.isnan(g), np.isnan(y)), f"{what}: NaN pattern of the output"
    assert np.array_equal(g[~finite & ~np.isnan(y)], y[~finite & ~np.isnan(y)]), f"{what}: inf positions/signs"
    t = x.shape[2]
    bound = t * 2.0 ** -23 * mag
    if x.dtype == np.float16:
        bound = bound + 2.0 ** -11 * np.abs(y) + 2.0 ** -25
    err = np.abs(g - y)
    bad = finite & ~(err <= bound)
    assert not bad.any(), (f"{what}: {int(bad.sum())} outputs beyond the rounding bound, worst "
                           f"{float(np.max(np.where(finite, err - bound, -np.inf))):.3e} over")


def check_golden_case(forward: Forward, case: Path) -> None:
    """One golden SGS-op case: bit-exact scaled distances, centres, widths, raw and compacted kernel,
    identical k and B', outputs within the fp32 rounding bound; the same again with fp16 features
    (B' and k unchanged: the bin math stays fp32 whatever the feature dtype)."""
    z = np.load(case, allow_pickle=False)
    kernel = str(z["kernel_type"])
    drop = bool(z["drop_bins"])
    num_bins = int(z["num_bins_arg"])
    x = np.ascontiguousarray(z["X"], np.float32)
    got = forward(x, z["distances"], num_bins, kernel, drop)
    assert_bits_equal(got["scaled"], z["distances_scaled"], "distances_scaled")
    assert_bits_equal(got["centers"], z["bin_centers"], "bin_centers")
    assert_bits_equal(got["width"], z["bin_width"], "bin_width")
    assert_bits_equal(got["kernel_raw"], z["kernel_raw"], "kernel_raw")
    if str(z["status"]) != "ok":
        # Official code raised (delta kernel, NaN Δ, no active bin): the plugin reports B' = 0.
        assert got["B_prime"] == 0 and not got["k"].any(), "no active bin: the plugin must report B' = 0"
        assert got["output"].size == 0
        return
    assert got["B_prime"] == int(z["B_prime"]), f"B' {got['B_prime']} != {int(z['B_prime'])}"
    assert np.array_equal(got["k"], z["k_per_sample"].astype(np.int32)), "k_per_sample"
    bp = got["B_prime"]
    assert_bits_equal(got["kernel_compact"][:, :bp], z["kernel"], "compacted kernel")
    if drop:
        assert not got["kernel_compact"][:, bp:].any(), "rows beyond B' must be zero"
    expected = z["output"].astype(np.float32)
    assert got["output"].shape == expected.shape
    assert_output_close(got["output"], z["kernel"], x, "fp32 output")
    # The golden output itself (torch) lies within the same bound of K X.
    assert_output_close(expected, z["kernel"], x, "golden output")

    if np.isfinite(x).all() and np.abs(x).max() < 6e4:
        x16 = x.astype(np.float16)
        g16 = forward(x16, z["distances"], num_bins, kernel, drop)
        assert g16["B_prime"] == bp and np.array_equal(g16["k"], got["k"]), "fp16 features changed B' or k"
        assert_bits_equal(g16["kernel_compact"], got["kernel_compact"], "fp16 run: compacted kernel")
        assert_output_close(g16["output"], z["kernel"], x16, "fp16 output")


def _sgs_numpy():
    """runtime/sgs_numpy.py (numpy only): from the installed package, else by path (a bare GPU machine that
    runs tests/test_sgs_cuda.py from a checkout without installing it)."""
    try:
        return importlib.import_module("atfr.runtime.sgs_numpy")
    except ImportError:
        spec = importlib.util.spec_from_file_location("atfr_sgs_numpy", ROOT / "runtime" / "sgs_numpy.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def check_against_numpy(forward: Forward, x: np.ndarray, delta: np.ndarray, num_bins: int, kernel: str,
                        drop: bool) -> dict:
    """A configuration without a golden file: bin arithmetic bit-exact against runtime/sgs_numpy.py (itself
    bit-exact against the golden cases), B' and k identical, outputs within the rounding bound."""
    ref = _sgs_numpy()
    scaled, centers, width, kraw = ref.bin_weights(delta, num_bins, kernel)
    got = forward(x, delta, num_bins, kernel, drop)
    assert_bits_equal(got["scaled"], scaled, "scaled")
    assert_bits_equal(got["centers"], centers, "centers")
    assert_bits_equal(got["width"], width, "width")
    assert_bits_equal(got["kernel_raw"], kraw, "kernel_raw")
    if drop:
        kmat, k = ref.drop_empty(kraw)
    else:
        kmat, k = kraw, (kraw.sum(axis=2) != 0).sum(axis=1)
    assert np.array_equal(got["k"], np.asarray(k, np.int32)), "k"
    assert got["B_prime"] == kmat.shape[1], f"B' {got['B_prime']} != {kmat.shape[1]}"
    assert_bits_equal(got["kernel_compact"][:, : kmat.shape[1]], kmat, "compacted kernel")
    assert_output_close(got["output"], kmat, x, f"output ({x.dtype})")
    return got


def random_configs(seed: int = 20261201) -> list[dict]:
    """Configurations beyond the golden sizes (golden: T <= 32, B <= 32, one bin tile, C*H*W <= 256 mostly).

    - T = 400: the aggregation's [T, 32] weight tile (51 KiB) exceeds 48 KiB -> global-memory path;
    - B = 160 with drop_bins = 0: five 32-bin tiles, all active; and C*H*W = 320 > 256 threads: two x-blocks;
    - fp16 features on both paths; N up to 3 with mixed k (rows k_n..B'-1 of a sample must be zero);
    - a few random draws of everything else.
    """
    rng = np.random.default_rng(seed)
    cfgs = [
        dict(shape=(2, 3, 400, 3, 3), num_bins=40, kernel="linear", drop=True, dtype=np.float32),
        dict(shape=(1, 2, 400, 2, 2), num_bins=-1, kernel="delta_normalized", drop=False, dtype=np.float16),
        dict(shape=(2, 5, 160, 8, 8), num_bins=-1, kernel="delta", drop=False, dtype=np.float32),
        dict(shape=(1, 5, 160, 8, 8), num_bins=-1, kernel="linear_normalized", drop=True, dtype=np.float16),
        dict(shape=(3, 4, 96, 4, 5), num_bins=70, kernel="linear", drop=True, dtype=np.float32),
    ]
    for _ in range(6):
        t = int(rng.choice([1, 2, 5, 33, 47, 64, 100]))
        cfgs.append(dict(shape=(int(rng.integers(1, 4)), int(rng.integers(1, 6)), t, int(rng.integers(1, 6)),
                                int(rng.integers(1, 6))),
                         num_bins=int(rng.choice([-1, max(1, t // 3), t + 7, 33])),
                         kernel=str(rng.choice(["linear", "linear_normalized", "delta", "delta_normalized"])),
                         drop=bool(rng.integers(0, 2)), dtype=rng.choice([np.float32, np.float16])))
    for i, cfg in enumerate(cfgs):
        n, _, t = cfg["shape"][:3]
        cfg["x"] = rng.standard_normal(cfg["shape"]).astype(cfg["dtype"])
        # Distances spread over a range, with some exact ties (mixed k across the batch).
        d = (rng.random((n, t)) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
        if i % 2:
            d[:, ::3] = d[:, :1]
        cfg["delta"] = d
    return cfgs


def check_random_configs(forward: Forward) -> int:
    cfgs = random_configs()
    for i, cfg in enumerate(cfgs):
        try:
            check_against_numpy(forward, cfg["x"], cfg["delta"], cfg["num_bins"], cfg["kernel"], cfg["drop"])
        except AssertionError as e:
            raise AssertionError(f"random config {i} {cfg['shape']} num_bins={cfg['num_bins']} {cfg['kernel']} "
                                 f"drop={cfg['drop']} {np.dtype(cfg['dtype']).name}: {e}") from e
    return len(cfgs)


def check_guard_zero(forward: Forward) -> None:
    """guard_zero: a sample with max Δ = 0 uses Δ = 1 everywhere -> one active bin (the last) with the
    linear kernel's ghost weight 2^-23 on every frame; the other sample is unaffected."""
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 2, 2)).astype(np.float32)
    d = np.zeros((2, 8), np.float32)
    d[1] = np.linspace(0.1, 1.0, 8, dtype=np.float32)
    got = forward(x, d, -1, "linear", True, guard=True)
    assert got["k"][0] == 1 and np.isfinite(got["output"]).all()
    assert_bits_equal(got["kernel_compact"][0, 0], np.full(8, 2.0 ** -23, np.float32), "guarded sample row")
    ref = _sgs_numpy()
    _, _, _, kraw = ref.bin_weights(d[1:], -1, "linear")
    assert_bits_equal(got["kernel_raw"][1], kraw[0], "unguarded sample")


def check_empty_batch(forward: Forward) -> None:
    """N = 0 (the plugin's empty-batch path): B' = 0 with drop_bins, B without; written on the device."""
    x = np.zeros((0, 3, 8, 2, 2), np.float32)
    d = np.zeros((0, 8), np.float32)
    assert forward(x, d, -1, "linear", True)["B_prime"] == 0
    assert forward(x, d, 5, "linear", False)["B_prime"] == 5
    assert forward(x, d, -1, "delta", False)["B_prime"] == 8
