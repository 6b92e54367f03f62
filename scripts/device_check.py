#!/usr/bin/env python3
"""One device check for a machine with an NVIDIA GPU: run as is, in under 8 minutes.

    scripts/device_check.sh [OUTDIR] [options]      (OUTDIR defaults to $OUT, else ./device_check_out)
    python3 scripts/device_check.py --out OUTDIR [--budget 470] [--no-install] [--wheelhouse DIR]
                                    [--only env,harness,gpu_tests,bandwidth,exports,ort_cuda,tensorrt]

What it does, in this order, each step with a timeout inside the overall budget:

1. env: the GPU (nvidia-smi: name, compute capability, driver, the driver's CUDA version), Python, and
   which of torch / tensorrt / cuda-python / onnxruntime(-gpu) / nvcc are present.
2. setup: makes the repository importable without installing it (a folder of symlinks mapping the
   atfr.* namespaces onto the repository's folders, as pyproject.toml does), and installs what is
   missing from PyPI, pinned to the driver's CUDA version, each into its own folder under
   WORK/pkgs put first on PYTHONPATH (the interpreter keeps its own torch or TensorRT; nothing of
   the user's environment changes):
   nvcc (nvidia-cuda-nvcc wheels + the CUDA runtime wheel, wrapped so nvcc finds their headers and
   libcudart), cuda-python (only where tensorrt imports: the TensorRT backend needs it), and
   onnxruntime-gpu (with its CUDA/cuDNN wheels). It never installs TensorRT or torch.
3. harness: builds plugins/sgs/sgsHarness.cu + sgsKernel.cu for the local GPU (-arch=native).
4. gpu_tests: pytest -m gpu tests/test_sgs_cuda.py (the real kernels on every golden SGS case).
5. bandwidth: benchmarks/sgs_kernel_bandwidth.py (SGS kernel throughput vs device memcpy).
6. exports: the demo model and the golden r3d18 / SlowFast checkpoints (needs torch).
7. tensorrt (where tensorrt imports): atfr build fp32 and fp16 engines (--sgs host; also --sgs plugin
   with $ATFR_SGS_PLUGIN), atfr verify --backend tensorrt, and a short atfr bench.
8. ort_cuda: installs onnxruntime-gpu if missing and time is left (its ~1 GB download comes last),
   then atfr verify / atfr bench with --backend onnxruntime --providers cuda.

Everything it ran or skipped, with the reason, goes to OUTDIR/summary.json (logs in OUTDIR/logs/).
Exit status: 0 when no step failed (skips are not failures), 1 otherwise, 2 for bad arguments.
Standard library only, so it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ATFR_SHARED", ROOT.parent / "shared"))
GOLDEN = SHARED / "golden"
SCHEMA = "atfr-device-check/1"
STEPS = ("env", "setup", "harness", "gpu_tests", "bandwidth", "exports", "tensorrt", "ort_cuda")
NAMESPACES = {"runtime": "runtime", "models": "models", "export": "export", "calibration": "calibration"}

# -- pins per driver CUDA version --------------------------------------------------------------------
# nvcc from PyPI: only CUDA 13's nvidia-cuda-nvcc wheels carry the nvcc driver (the cu12 wheels ship
# ptxas and libnvvm only, checked on 12.6.85 and 12.9.86). CUDA 13 splits the compiler over several
# wheels (front end, crt headers, nvvm, runtime, cccl); 13.0 runs on every 13.x driver and covers
# sm_75..sm_110 (Thor), so it is the one pinned set. Its libcudart needs a CUDA 13 driver, so a
# CUDA 12 driver needs a system toolkit (apt cuda-nvcc-12-x / JetPack) or ATFR_NVCC.
NVCC_13 = ["nvidia-cuda-nvcc==13.0.88", "nvidia-cuda-crt==13.0.88", "nvidia-nvvm==13.0.88",
           "nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cccl==13.0.85"]
NVCC_12_MISSING = ("PyPI has no nvcc for CUDA 12 (nvidia-cuda-nvcc-cu12 ships ptxas only) and CUDA 13's needs a "
                   "CUDA 13 driver: install the CUDA 12 toolkit's nvcc (apt cuda-nvcc-12-x, JetPack's cuda-nvcc) or "
                   "set ATFR_NVCC")
CUDA_PYTHON = {12: {2: "12.2.1", 3: "12.3.0", 4: "12.4.0", 5: "12.5.0", 6: "12.6.2.post1", 8: "12.8.0", 9: "12.9.4"},
               13: {0: "13.0.3", 1: "13.1.1", 2: "13.2.0"}}
# CUDA 12 build of ONNX Runtime (cuDNN 9); a CUDA 13 driver runs CUDA 12 binaries as well.
ORT_GPU = "onnxruntime-gpu[cuda,cudnn]==1.22.0"
PYTEST = "pytest==8.3.5"


def _floor_key(table: dict[int, Any], minor: int) -> Any:
    keys = [k for k in table if k <= minor]
    return table[max(keys)] if keys else None


def pins_for(driver_cuda: str | None) -> dict[str, list[str]]:
    """The pinned pip requirements for a driver's CUDA version ('12.6' -> nvcc 12.6 wheels, ...)."""
    if not driver_cuda:
        return {}
    major, _, minor_s = driver_cuda.partition(".")
    mj, mn = int(major), int(minor_s or 0)
    out: dict[str, list[str]] = {}
    if mj >= 13:
        out["nvcc"] = list(NVCC_13)
    cp = _floor_key(CUDA_PYTHON.get(min(mj, 13), {}), mn if mj <= 13 else 99)
    if cp:
        out["cuda-python"] = [f"cuda-python=={cp}"]
    if mj >= 12:
        out["onnxruntime-gpu"] = [ORT_GPU]
    return out


# -- steps -------------------------------------------------------------------------------------------

@dataclass
class Step:
    name: str
    status: str  # ok | failed | skipped
    reason: str = ""
    seconds: float = 0.0
    cmd: list[str] | None = None
    rc: int | None = None
    log: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _tail(text: str, n: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out).resolve()
        self.work = Path(args.work or (self.out / "work")).resolve()
        self.logs = self.out / "logs"
        self.t0 = time.monotonic()
        self.steps: list[Step] = []
        self.only = set(args.only.split(",")) if args.only else set(STEPS)
        self.python = sys.executable
        self.env = dict(os.environ)
        self.env.setdefault("ATFR_ORT_SPIN", "0")
        self.facts: dict[str, Any] = {}
        self.exports: dict[str, Path] = {}

    # bookkeeping
    def remaining(self) -> float:
        return self.args.budget - (time.monotonic() - self.t0)

    def add(self, step: Step) -> Step:
        self.steps.append(step)
        mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[step.status]
        extra = f" ({step.reason})" if step.reason else ""
        print(f"[{mark}] {step.name} {step.seconds:.1f}s{extra}", flush=True)
        return step

    def skip(self, name: str, reason: str, **data: Any) -> Step:
        return self.add(Step(name, "skipped", reason, data=dict(data)))

    def wanted(self, group: str) -> bool:
        return group in self.only

    def run(self, name: str, cmd: list[str], timeout: float, min_time: float = 20.0, env: dict | None = None,
            cwd: Path | None = None) -> Step:
        """Run one command with min(timeout, what the budget has left); log to logs/<name>.log."""
        left = self.remaining() - 10.0  # keep time to write the summary
        if left < min_time:
            return self.skip(name, f"time budget exhausted ({self.args.budget:.0f} s)")
        limit = max(1.0, min(timeout, left))
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        t = time.monotonic()
        try:
            # cwd: the work folder, never the repository, whose atfr/ folder would shadow the import
            # shim ('' comes first on sys.path for -m and -c).
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env or self.env,
                               cwd=str(cwd or self.work))
            text, rc = (p.stdout or "") + (p.stderr or ""), p.returncode
        except subprocess.TimeoutExpired as e:
            def _s(x: Any) -> str:
                return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
            text, rc = _s(e.stdout) + _s(e.stderr) + f"\n[timed out after {limit:.0f} s]", 124
        except OSError as e:
            text, rc = f"{type(e).__name__}: {e}", 127
        log.write_text(f"$ {' '.join(map(str, cmd))}\n{text}", encoding="utf-8")
        st = Step(name, "ok" if rc == 0 else "failed", "" if rc == 0 else _tail(text, 3).replace("\n", " | ")[:400],
                  round(time.monotonic() - t, 1), [str(c) for c in cmd], rc, str(log.relative_to(self.out)))
        st.data["output_tail"] = _tail(text)
        return self.add(st)

    def atfr(self, *argv: str) -> list[str]:
        return [self.python, "-m", "atfr.cli", *argv]

    # summary
    def write_summary(self) -> Path:
        counts = {s: sum(1 for x in self.steps if x.status == s) for s in ("ok", "failed", "skipped")}
        doc = {"schema": SCHEMA, "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "seconds": round(time.monotonic() - self.t0, 1), "budget_s": self.args.budget,
               "repo": str(ROOT), "shared": str(SHARED), "python": self.python, "facts": self.facts,
               "counts": counts, "steps": [asdict(s) for s in self.steps]}
        self.out.mkdir(parents=True, exist_ok=True)
        dst = self.out / "summary.json"
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, dst)  # atomic: a reader never sees half a summary
        return dst


# -- probes ------------------------------------------------------------------------------------------

def nvidia_smi() -> str | None:
    exe = os.environ.get("ATFR_NVIDIA_SMI")
    if exe is not None:  # explicit (tests point it at a fake, or at nothing)
        return exe if exe and Path(exe).is_file() else None
    return shutil.which("nvidia-smi")


def gpu_facts() -> tuple[dict[str, Any] | None, str]:
    smi = nvidia_smi()
    if not smi:
        return None, "no NVIDIA GPU: nvidia-smi is not installed (no driver)"
    try:
        q = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        head = subprocess.run([smi], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"no NVIDIA GPU: nvidia-smi failed ({e})"
    rows = [r.strip() for r in q.stdout.splitlines() if r.strip()]
    if q.returncode != 0 or not rows:
        return None, f"no NVIDIA GPU: nvidia-smi lists none ({_tail(q.stdout + q.stderr, 1)[:200]})"
    gpus = []
    for r in rows:
        parts = [x.strip() for x in r.split(",")]
        gpus.append({"name": parts[0], "compute_capability": parts[1] if len(parts) > 1 else None,
                     "driver": parts[2] if len(parts) > 2 else None, "memory": parts[3] if len(parts) > 3 else None})
    m = re.search(r"CUDA Version:\s*(\d+\.\d+)", head or "")
    return {"gpus": gpus, "driver_cuda": m.group(1) if m else None}, ""


PROBE = r"""
import importlib, json, sys
out = {"python": sys.version.split()[0]}
from importlib import metadata, util
for mod, dist in (("torch", "torch"),):  # present or not, without paying for the import
    try:
        out[mod] = metadata.version(dist) if util.find_spec(mod) else None
    except Exception:
        out[mod] = "present" if util.find_spec(mod) else None
for mod in ("numpy", "tensorrt", "onnxruntime", "pytest", "polygraphy", "cv2", "yaml", "tqdm"):
    try:
        m = importlib.import_module(mod)
        out[mod] = str(getattr(m, "__version__", "present"))
    except Exception as e:
        out[mod] = None
try:
    import onnxruntime as ort
    out["ort_providers"] = list(ort.get_available_providers())
except Exception:
    out["ort_providers"] = []
try:
    import cuda.bindings as cb
    out["cuda_python"] = str(getattr(cb, "__version__", "present"))
except Exception:
    try:
        from importlib import metadata
        out["cuda_python"] = metadata.version("cuda-python")
    except Exception:
        out["cuda_python"] = None
try:
    import atfr.runtime
    out["atfr_runtime"] = list(atfr.runtime.__path__)[0]
except Exception:
    out["atfr_runtime"] = None
print(json.dumps(out))
"""


def probe(python: str, env: dict[str, str]) -> dict[str, Any]:
    try:
        p = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env,
                           cwd=tempfile.gettempdir())  # not the repository: its atfr/ would shadow the shim
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def find_nvcc(env: dict[str, str]) -> str | None:
    cand = [env.get("ATFR_NVCC"), shutil.which("nvcc", path=env.get("PATH")), "/usr/local/cuda/bin/nvcc",
            "/usr/local/bin/nvcc"]
    return next((c for c in cand if c and Path(c).is_file()), None)


def shim_package(work: Path) -> Path:
    """A folder where ``import atfr`` resolves to this repository with pyproject.toml's namespace map
    (atfr -> atfr/, atfr.runtime -> runtime/, ...), without installing anything."""
    base = work / "pyshim"
    pkg = base / "atfr"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for entry in (ROOT / "atfr").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in NAMESPACES.items():
        (pkg / name).symlink_to(ROOT / folder)
    return base


def nvcc_wrapper(site_dirs: list[Path], work: Path) -> tuple[str | None, str | None]:
    """nvcc from the nvidia-cuda-nvcc wheel, wrapped to see the runtime wheel's headers and libcudart
    (the wheels ship libcudart.so.N but no static library or unversioned link name). Returns (path to
    the wrapper, its library folder for LD_LIBRARY_PATH) or (None, None)."""
    nvcc = runtime_inc = runtime_lib = None
    for sp in site_dirs:
        for p in sorted(sp.glob("nvidia/**/bin/nvcc")):
            nvcc = nvcc or p
        for p in sorted(sp.glob("nvidia/**/include/cuda_runtime.h")):
            runtime_inc = runtime_inc or p.parent
        for p in sorted(sp.glob("nvidia/**/lib*/libcudart.so*")):
            runtime_lib = runtime_lib or p
    if not (nvcc and runtime_inc and runtime_lib):
        return None, None
    libdir = work / "cudalib"
    libdir.mkdir(parents=True, exist_ok=True)
    link = libdir / "libcudart.so"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(runtime_lib)
    wrapper = work / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text("#!/bin/sh\n# nvcc from the PyPI wheels (written by scripts/device_check.py)\n"
                       f'exec "{nvcc}" -I"{runtime_inc}" -L"{libdir}" -L"{runtime_lib.parent}" -cudart shared "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), f"{libdir}:{runtime_lib.parent}"


# -- the check ---------------------------------------------------------------------------------------

def step_env(c: Check) -> dict[str, Any] | None:
    t = time.monotonic()
    gpu, why = gpu_facts()
    c.facts["gpu"] = gpu
    c.facts["platform"] = f"{platform.system()}-{platform.machine()}"
    c.facts["packages"] = probe(c.python, c.env)
    c.facts["nvcc"] = find_nvcc(c.env)
    st = Step("env", "ok", why, round(time.monotonic() - t, 1), data={"gpu": gpu, "gpu_reason": why or None})
    c.add(st)
    return gpu


def pip_install(c: Check, name: str, reqs: list[str], keep_only: tuple[str, ...] = ()) -> tuple[Step, Path]:
    """pip install ``reqs`` into their own folder WORK/pkgs/<name> and put it first on PYTHONPATH.

    A folder per component, not a virtual environment: the interpreter keeps seeing what it already
    has (a venv made from inside another venv would hide that venv's torch and TensorRT), and the
    user's environment is left untouched. ``keep_only``: top-level names to keep when the base
    interpreter already has the dependencies pip copied in as well (onnxruntime-gpu's numpy and
    protobuf must not shadow the ones torch was installed with)."""
    target = c.work / "pkgs" / name.split(".")[-1]
    if c.args.no_install:
        return c.skip(name, f"--no-install: would pip install {' '.join(reqs)}", requirements=reqs), target
    cmd = [c.python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--upgrade", "--target",
           str(target), *reqs]
    if c.args.wheelhouse:
        cmd[4:4] = ["--no-index", "--find-links", str(c.args.wheelhouse)]
    st = c.run(name, cmd, 300, min_time=60)
    st.data["requirements"] = reqs
    if st.status != "ok":
        return st, target
    if keep_only:
        for entry in target.iterdir():
            top = entry.name.split("-")[0].split(".")[0].lower()
            if not any(top.startswith(k) for k in keep_only) and entry.name != "bin":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    c.env["PYTHONPATH"] = os.pathsep.join(x for x in (str(target), c.env.get("PYTHONPATH")) if x)
    libs = [str(d) for d in sorted(target.glob("nvidia/*/lib")) if d.is_dir()]
    if libs:  # CUDA/cuDNN wheels: ONNX Runtime and cuda-python dlopen them by name
        c.env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [x for x in (c.env.get("LD_LIBRARY_PATH"),) if x])
    c.facts.setdefault("installed_into", {})[name] = str(target)
    return st, target


def step_setup(c: Check, gpu: dict[str, Any]) -> None:
    pk = c.facts["packages"]
    if pk.get("atfr_runtime") != str(ROOT / "runtime"):
        base = shim_package(c.work)
        c.env["PYTHONPATH"] = os.pathsep.join([str(base), c.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        c.facts["atfr_import"] = f"symlink shim {base} (the repository is not installed in {c.python})"
    else:
        c.facts["atfr_import"] = "installed (editable) in this Python"
    pins = pins_for(gpu.get("driver_cuda"))
    c.facts["pins"] = pins
    missing_base = [r for mod, r in (("numpy", "numpy==2.2.6"), ("pytest", PYTEST),
                                     ("cv2", "opencv-python-headless==4.11.0.86"),
                                     ("yaml", "pyyaml==6.0.2"), ("tqdm", "tqdm==4.67.1")) if not pk.get(mod)]
    if missing_base:
        pip_install(c, "setup.base", missing_base)
    if not find_nvcc(c.env):
        if "nvcc" not in pins:
            drv = gpu.get("driver_cuda") or "unknown"
            c.skip("setup.nvcc", f"nvcc not found; driver CUDA {drv}: "
                   + (NVCC_12_MISSING if drv.startswith("12.") else "no pinned nvcc wheels for it"))
        elif (res := pip_install(c, "setup.nvcc", pins["nvcc"]))[0].status == "ok":
            wrapper, libs = nvcc_wrapper([res[1]], c.work)
            if wrapper:
                c.env["ATFR_NVCC"] = wrapper
                c.env["LD_LIBRARY_PATH"] = os.pathsep.join(x for x in (libs, c.env.get("LD_LIBRARY_PATH")) if x)
                c.facts["nvcc"] = wrapper
            else:
                c.skip("setup.nvcc_wrapper",
                       "the nvcc wheels installed but nvcc/cuda_runtime.h/libcudart were not found")
    else:
        c.env.setdefault("ATFR_NVCC", find_nvcc(c.env) or "")
    drv_major = (gpu.get("driver_cuda") or "0").split(".")[0]
    cp = pk.get("cuda_python")
    if pk.get("tensorrt") and "cuda-python" in pins and (not cp or cp.split(".")[0] != drv_major):
        pip_install(c, "setup.cuda_python", pins["cuda-python"])
    c.facts["packages_after_setup"] = probe(c.python, c.env)


def install_ort_gpu(c: Check) -> None:
    """onnxruntime-gpu with its CUDA/cuDNN wheels (about 1 GB): last, so the download never takes the
    time of the kernel and TensorRT checks."""
    pk = c.facts.get("packages_after_setup") or c.facts["packages"]
    pins = c.facts.get("pins") or {}
    if "CUDAExecutionProvider" in (pk.get("ort_providers") or []) or "onnxruntime-gpu" not in pins:
        return
    if c.remaining() < 150:
        c.skip("setup.onnxruntime_gpu", "not enough time budget left for the onnxruntime-gpu download")
        return
    # keep only ORT and its CUDA/cuDNN wheels where the base already has ORT's Python deps
    keep = ("onnxruntime", "nvidia") if pk.get("onnxruntime") else ()
    if pip_install(c, "setup.onnxruntime_gpu", pins["onnxruntime-gpu"], keep_only=keep)[0].status == "ok":
        c.facts["packages_after_setup"] = probe(c.python, c.env)


def step_harness(c: Check, gpu: dict[str, Any]) -> None:
    nvcc = c.env.get("ATFR_NVCC") or find_nvcc(c.env)
    if not nvcc:
        c.skip("harness", "nvcc not found (set ATFR_NVCC, or let the check install the nvidia-cuda-nvcc wheels)")
        return
    arch = c.env.get("ATFR_NVCC_ARCH", "native")
    out = c.work / "harness"
    out.mkdir(parents=True, exist_ok=True)
    src = ROOT / "plugins" / "sgs"
    st = c.run("harness", [nvcc, "-std=c++17", "-O3", f"-arch={arch}", "-fmad=false", "-shared", "-Xcompiler",
                           "-fPIC", "-I", str(src), str(src / "sgsHarness.cu"), str(src / "sgsKernel.cu"), "-o",
                           str(out / "libatfr_sgs_harness.so")], 300)
    st.data.update({"arch": arch, "compute_capability": gpu["gpus"][0].get("compute_capability")})


def _junit_counts(path: Path) -> dict[str, int]:
    try:
        import xml.etree.ElementTree as ET  # noqa: PLC0415

        root = ET.parse(path).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        tot = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
        tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
        return tot
    except Exception:  # noqa: BLE001 - counts are a convenience; the log has everything
        return {}


def step_gpu_tests(c: Check) -> None:
    if not (ROOT / "tests" / "test_sgs_cuda.py").exists():
        c.skip("gpu_tests", "tests/test_sgs_cuda.py not found")
        return
    xml = c.out / "gpu_tests.xml"
    st = c.run("gpu_tests", [c.python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "--rootdir",
                             str(ROOT), "-c", str(ROOT / "pyproject.toml"), f"--junitxml={xml}",
                             str(ROOT / "tests" / "test_sgs_cuda.py")], 300, min_time=40)
    st.data["junit"] = _junit_counts(xml)
    if st.status == "ok" and st.data["junit"] and st.data["junit"].get("passed", 0) == 0:
        st.status, st.reason = "skipped", "every GPU test skipped (see logs/gpu_tests.log)"


def step_bandwidth(c: Check) -> None:
    js = c.out / "sgs_kernel_bandwidth.json"
    st = c.run("bandwidth", [c.python, str(ROOT / "benchmarks" / "sgs_kernel_bandwidth.py"), "--iters", "100",
                             "--json", str(js)], 180)
    if js.exists():
        try:
            st.data["result"] = json.loads(js.read_text())
        except ValueError:
            pass
    elif st.status == "ok" and "skipped" in st.data.get("output_tail", ""):
        st.status, st.reason = "skipped", st.data["output_tail"].splitlines()[-1][:300]


MODELS = [  # name, checkpoint, export options (small sizes: the check measures plumbing and agreement)
    ("demo", ROOT / "atfr" / "assets" / "demo_atfr.pt", []),
    ("r3d18", GOLDEN / "r3d18_atfr" / "checkpoint.pyth", ["--size", "112"]),
    ("slowfast", GOLDEN / "slowfast_atfr_4x16_r50_w16" / "checkpoint.pyth", ["--size", "112"]),
]
CKPTS = {name: ckpt for name, ckpt, _ in MODELS}  # verify needs --checkpoint (an export's recorded path is not opened)


def step_exports(c: Check) -> None:
    pk = c.facts.get("packages_after_setup") or c.facts["packages"]
    if not pk.get("torch"):
        c.skip("exports", "torch is not installed (exports and atfr verify's PyTorch reference need it; "
                          "the check does not install torch)")
        return
    for name, ckpt, opts in MODELS:
        if not ckpt.exists():
            c.skip(f"export.{name}", f"{ckpt} not found (is the shared folder next to the repository?)")
            continue
        dst = c.work / "exports" / name
        st = c.run(f"export.{name}", c.atfr("export", str(ckpt), "-o", str(dst), "--name", name, "--force", *opts),
                   150, min_time=30)
        if st.status == "ok":
            c.exports[name] = dst


def _bins(export: Path) -> int | None:
    try:
        m = json.loads((export / "atfr.json").read_text())
        return max(int(x["bins"]) for x in m.get("sgs", [])) or None
    except (OSError, ValueError, KeyError):
        return None


def _bench(c: Check, name: str, export: Path, *extra: str) -> Step:
    b = _bins(export)
    bp = ["--bprime", f"1,{b}"] if b and b > 1 else []
    return c.run(name, c.atfr("bench", str(export), "--iters", "10", "--warmup", "2", *bp, "--no-progress", "--force",
                              "--out", str(c.out / name), *extra), 150, min_time=30)


def step_ort_cuda(c: Check) -> None:
    install_ort_gpu(c)
    pk = c.facts.get("packages_after_setup") or c.facts["packages"]
    if "CUDAExecutionProvider" not in (pk.get("ort_providers") or []):
        c.skip("ort_cuda", f"onnxruntime has no CUDAExecutionProvider (providers: {pk.get('ort_providers')}; "
                           "pip install onnxruntime-gpu)")
        return
    if not c.exports:
        c.skip("ort_cuda", "no export to run (see the export steps)")
        return
    for name in ("demo", "r3d18"):
        if name in c.exports:
            c.run(f"ort_cuda.verify.{name}", c.atfr("verify", str(c.exports[name]), "--checkpoint", str(CKPTS[name]),
                                                   "--backend", "onnxruntime",
                                                   "--providers", "cuda", "--clips", "2", "--json"), 150, min_time=30)
    if "demo" in c.exports:
        _bench(c, "ort_cuda.bench.demo", c.exports["demo"], "--providers", "cuda")


def step_tensorrt(c: Check) -> None:
    pk = c.facts.get("packages_after_setup") or c.facts["packages"]
    if not pk.get("tensorrt"):
        c.skip("tensorrt", "tensorrt does not import here (the check never installs it: pip install tensorrt, or "
                           "JetPack's python3-libnvinfer)")
        return
    if not c.exports:
        c.skip("tensorrt", "no export to build engines from (see the export steps)")
        return
    plugin = c.env.get("ATFR_SGS_PLUGIN")
    cache = c.work / "timing.cache"
    for name, export in c.exports.items():
        for prec in ("fp32", "fp16"):
            modes = ["host"] + (["plugin"] if plugin and prec == "fp32" else [])
            for sgs in modes:
                tag = f"{name}.{prec}.{sgs}"
                edir = c.work / "engines" / tag
                extra = ["--plugin", plugin] if sgs == "plugin" else []
                st = c.run(f"trt.build.{tag}", c.atfr("build", str(export), "--precision", prec, "--sgs", sgs,
                                                      "--engine-dir", str(edir), "--timing-cache", str(cache),
                                                      "--force", "--quiet", *extra), 240, min_time=45)
                if st.status != "ok":
                    continue
                tol = ["--logits-atol", "0.05", "--back-atol", "0.05"] if prec == "fp16" else []
                c.run(f"trt.verify.{tag}", c.atfr("verify", str(export), "--checkpoint", str(CKPTS[name]),
                                                  "--backend", "tensorrt", "--engine-dir",
                                                  str(edir), "--clips", "2", "--json", *tol, *extra), 150, min_time=30)
                if prec == "fp32" and sgs == "host":
                    _bench(c, f"trt.bench.{tag}", export, "--backend", "tensorrt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path.cwd() / "device_check_out"),
                    help="output folder: summary.json, logs/, reports (default $OUT, else ./device_check_out)")
    ap.add_argument("--work", help="scratch folder: installed packages, exports, engines (default OUT/work)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for everything (default 470, under 8 min)")
    ap.add_argument("--no-install", action="store_true", help="install nothing; report what would be installed")
    ap.add_argument("--wheelhouse", help="install from this folder of wheels only (pip --no-index --find-links)")
    ap.add_argument("--only", help=f"comma-separated step groups ({','.join(STEPS)}); default all (setup runs "
                                   "whenever a group after env does)")
    args = ap.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(STEPS):
        print(f"device_check: unknown step in --only {args.only!r}; choose from {','.join(STEPS)}", file=sys.stderr)
        return 2
    c = Check(args)
    c.out.mkdir(parents=True, exist_ok=True)
    c.work.mkdir(parents=True, exist_ok=True)
    print(f"atfr device check: repo {ROOT}, output {c.out}, budget {args.budget:.0f} s", flush=True)
    try:
        gpu = step_env(c)
        if gpu is None:
            reason = c.steps[0].reason
            for s in STEPS[1:]:
                c.skip(s, reason)
        else:
            groups = [("setup", lambda: step_setup(c, gpu)), ("harness", lambda: step_harness(c, gpu)),
                      ("gpu_tests", lambda: step_gpu_tests(c)), ("bandwidth", lambda: step_bandwidth(c)),
                      ("exports", lambda: step_exports(c)), ("tensorrt", lambda: step_tensorrt(c)),
                      ("ort_cuda", lambda: step_ort_cuda(c))]
            for group, fn in groups:
                # setup whenever anything after env runs: the other steps need its environment
                if c.wanted(group) or (group == "setup" and c.only - {"env"}):
                    fn()
                else:
                    c.skip(group, "not selected (--only)")
    finally:
        path = c.write_summary()
    counts = json.loads(path.read_text())["counts"]
    print(f"summary: {path} ({counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped)")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
