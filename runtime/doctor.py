"""Environment checks before a long build or a run (``atfr doctor``). Torch-free.

Facts are gathered by *probes* and judged by pure functions, so tests can simulate a missing
module, a NumPy ABI mismatch or a Jetson:

* ``probe_modules`` imports each compiled module (numpy, onnxruntime, tensorrt, cv2, torch,
  cuda-python) in its own subprocess: a module built against NumPy 1.x under NumPy 2 prints its
  warning, fails or even crashes there, not in the doctor.
* ``SystemProbe`` reads files (/etc/nv_tegra_release, sysfs clocks), runs tools (nvidia-smi,
  nvpmodel) and measures free disk; ``probe_plugin`` loads the SGS plugin library in a subprocess.
* ``diagnose`` turns those facts into ``Check`` rows, each with a fix when something is wrong,
  and says whether the chosen backend can run (``Report.ok``; the CLI exits 0 or 4).
"""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

MODULES = ("numpy", "onnxruntime", "tensorrt", "cv2", "torch", "cuda")
BACKENDS = ("onnxruntime", "tensorrt")
MIN_FREE_GB = 2.0  # an engine build writes engines + timing cache (hundreds of MB) and needs headroom
JETSON_ORT_GPU = ("NVIDIA's onnxruntime-gpu Jetson wheel (pip install onnxruntime-gpu from the Jetson AI Lab "
                  "index for jp6/cu126; README 'Install on Jetson')")
# L4T release -> (JetPack, TensorRT, CUDA); shared/docs/tensorrt-notes.md section 5.
L4T_JETPACK = [((35,), "5.1.x", "8.5", "11.4"), ((36, 3), "6.0", "8.6", "12.2"), ((36, 4, 0), "6.1", "10.3", "12.6"),
               ((36, 4, 3), "6.2", "10.3", "12.6"), ((36, 4, 4), "6.2.1", "10.3", "12.6"),
               ((36, 5), "6.2.2", "10.3", "12.6"), ((38, 2), "7.0", "10.13", "13.0"),
               ((38, 4), "7.1", "10.13", "13.0"), ((39, 2), "7.2", "10.16", "13.2")]
_NUMPY_ABI = re.compile(r"compiled using NumPy 1\.x cannot be run in|_ARRAY_API not found|"
                        r"numpy\.core\.multiarray failed to import|compiled against ABI version|"
                        r"numpy\.dtype size changed")


# -- facts --------------------------------------------------------------------------------------

@dataclass
class ModuleProbe:
    name: str
    ok: bool
    version: str = ""
    error: str = ""  # one line: the exception, or why the subprocess died
    stderr: str = ""  # the tail of what the import printed (NumPy's ABI warning lands here)
    numpy: str = ""  # the numpy version loaded alongside, if any
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> bool:
        return not self.ok and ("ModuleNotFoundError" in self.error or "No module named" in self.error)

    @property
    def numpy_abi_mismatch(self) -> bool:
        if not self.ok:
            return bool(_NUMPY_ABI.search(self.error + "\n" + self.stderr))
        return "compiled using NumPy 1.x cannot be run in" in self.stderr  # imported, but warned


_PROBE = r'''
import importlib, json, sys
name, out = sys.argv[1], {"ok": False, "info": {}}
def dist_version(*names):
    from importlib import metadata
    for n in names:
        try:
            return metadata.version(n)
        except Exception:
            pass
    return ""
try:
    if name == "cuda":
        try:
            from cuda.bindings import driver as drv, runtime as rt
        except ImportError:
            from cuda import cuda as drv, cudart as rt
        out["version"] = dist_version("cuda-python", "cuda-bindings")
        i = out["info"]
        try:
            drv.cuInit(0)
            err, v = drv.cuDriverGetVersion()
            i["driver_cuda"] = int(v) if int(err) == 0 else None
            if int(err):
                i["driver_error"] = str(err)
            err, n = rt.cudaGetDeviceCount()
            i["devices"] = int(n) if int(err) == 0 else 0
            if int(err):  # e.g. cudaErrorNoDevice (a container started without the GPU)
                i["device_error"] = str(getattr(err, "name", err))
            if int(err) == 0 and n:
                err, p = rt.cudaGetDeviceProperties(0)
                name_ = p.name.decode(errors="replace") if isinstance(p.name, bytes) else str(p.name)
                i["gpu"], i["cc"] = name_.strip("\x00 "), f"{p.major}.{p.minor}"
        except Exception as e:  # cuda-python 12.x raises (no error code) where libcuda.so.1 is missing
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            i["driver_error"] = ("the NVIDIA driver library libcuda.so.1 cannot be loaded" if "libcuda" in msg
                                 else f"{type(e).__name__}: {msg}")[:200]
    else:
        m = importlib.import_module(name)
        out["version"] = str(getattr(m, "__version__", ""))
        out["info"]["file"] = str(getattr(m, "__file__", "") or "")
        if name == "onnxruntime":
            out["info"]["providers"] = list(m.get_available_providers())
        elif name == "cv2":
            out["info"]["build"] = [l.strip() for l in m.getBuildInformation().splitlines()
                                    if l.strip().split(":")[0] in ("GStreamer", "FFMPEG", "v4l/v4l2")]
            from importlib import metadata
            out["info"]["pip_dists"] = sorted({(d.metadata["Name"] or "").lower() for d in metadata.distributions()
                                               if (d.metadata["Name"] or "").lower().startswith("opencv")})
        elif name == "torch":
            out["info"]["cuda"] = getattr(getattr(m, "version", None), "cuda", None)
    out["ok"] = True
except BaseException as e:
    out["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
np_ = sys.modules.get("numpy")
out["numpy"] = str(getattr(np_, "__version__", "")) if np_ else ""
print("ATFR_PROBE" + json.dumps(out))
'''


def probe_modules(names: Iterable[str] = MODULES, python: str = sys.executable, timeout: float = 120) -> dict[str, ModuleProbe]:
    """Import each module in its own subprocess (in parallel); never raises."""
    procs = {n: subprocess.Popen([python, "-c", _PROBE, n], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}) for n in names}
    out = {}
    for n, p in procs.items():
        try:
            so, se = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            so, se = p.communicate()
            out[n] = ModuleProbe(n, False, error=f"import hung for more than {timeout:g} s")
            continue
        out[n] = parse_probe(n, p.returncode, so, se)
    return out


def parse_probe(name: str, rc: int, stdout: str, stderr: str) -> ModuleProbe:
    tail = "\n".join(stderr.strip().splitlines()[-15:])
    line = next((l for l in stdout.splitlines() if l.startswith("ATFR_PROBE")), None)
    if line is None:
        why = f"the import crashed the interpreter (signal {-rc})" if rc < 0 else f"the import exited with code {rc}"
        last = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
        return ModuleProbe(name, False, error=why + (f": {last}" if last else ""), stderr=tail)
    d = json.loads(line[len("ATFR_PROBE"):])
    return ModuleProbe(name, bool(d.get("ok")), str(d.get("version") or ""), str(d.get("error") or ""), tail,
                       str(d.get("numpy") or ""), dict(d.get("info") or {}))


def probe_plugin(path: str, python: str = sys.executable, timeout: float = 120) -> dict[str, Any]:
    """Load the SGS plugin library in a subprocess: does it load, which entry points does it
    export, which libnvinfer did it pull in, and (where tensorrt imports) does it register the
    atfr::SGS creator. Returns a dict (see the script); never raises."""
    script = r'''
import ctypes, json, os, sys
path, out = sys.argv[1], {}
try:
    lib = ctypes.CDLL(os.path.realpath(path), mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    out["loaded"] = True
    out["exports"] = [s for s in ("getCreators", "getPluginCreators", "setLoggerFinder") if hasattr(lib, s)]
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
    out["nvinfer"] = sorted({l.split()[-1] for l in maps.splitlines() if "libnvinfer.so" in l})
except OSError as e:
    out["loaded"], out["error"] = False, str(e).splitlines()[0][:300]
if out.get("loaded"):
    try:
        import tensorrt as trt
        out["trt"] = trt.__version__
    except Exception:
        out["trt"] = None
    if out["trt"]:
        try:
            from atfr.runtime.tensorrt.plugin import PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION
            reg = trt.get_plugin_registry()
            if "getCreators" in out["exports"] and "setLoggerFinder" in out["exports"]:
                h = reg.load_library(os.path.realpath(path))
                out["load_library"] = h is not None
            c = reg.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
            out["registered"] = c is not None
        except Exception as e:
            out["registered"], out["register_error"] = False, f"{type(e).__name__}: {e}".splitlines()[0][:300]
print("ATFR_PLUGIN" + json.dumps(out))
'''
    if not os.path.isfile(path):
        return {"loaded": False, "error": f"{path}: no such file"}
    try:
        p = subprocess.run([python, "-c", script, path], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"loaded": False, "error": f"loading hung for more than {timeout:g} s"}
    line = next((l for l in p.stdout.splitlines() if l.startswith("ATFR_PLUGIN")), None)
    if line is None:
        return {"loaded": False, "error": f"loading crashed the interpreter (exit {p.returncode})"}
    return json.loads(line[len("ATFR_PLUGIN"):])


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 20) -> tuple[int, str] | None:
    """(exit code, stdout+stderr) of a tool; None when it is not installed."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return p.returncode, (p.stdout + p.stderr).strip()


@dataclass
class SystemProbe:
    """The machine, as functions tests can replace."""

    read: Callable[[str], str | None] = _read
    exists: Callable[[str], bool] = os.path.exists
    run: Callable[[list[str]], tuple[int, str] | None] = _run
    glob: Callable[[str], list[str]] = glob.glob
    disk_free: Callable[[str], int] = lambda p: shutil.disk_usage(p).free
    machine: str = field(default_factory=platform.machine)
    python: str = field(default_factory=platform.python_version)
    plugin: Callable[[str], dict[str, Any]] = probe_plugin


# -- judgement ----------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    status: str  # ok | info | warn | fail  (fail: blocks the chosen backend)
    detail: str
    fix: str = ""
    blocks: tuple[str, ...] = ()  # backends that cannot run while this is wrong


@dataclass
class Report:
    backend: str  # the backend judged (auto resolved)
    requested: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(self.backend in c.blocks for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 4

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "requested": self.requested, "ok": self.ok, "exit_code": self.exit_code,
                "checks": [asdict(c) for c in self.checks]}

    def table(self) -> str:
        w = max([len(c.name) for c in self.checks] + [5])
        rows = [f"{'CHECK':<{w}}  {'STATUS':<6}  DETAIL"]
        for c in self.checks:
            rows.append(f"{c.name:<{w}}  {c.status.upper():<6}  {c.detail}")
            if c.fix:
                rows.append(f"{'':<{w}}  {'':<6}  fix: {c.fix}")
        verdict = "can run" if self.ok else "cannot run"
        how = f" (auto -> {self.backend})" if self.requested == "auto" else ""
        rows.append(f"\nbackend {self.backend}{how}: {verdict}")
        return "\n".join(rows)


def parse_cv2_build(lines: Iterable[str]) -> dict[str, bool]:
    """{'GStreamer': bool, 'FFMPEG': bool, 'v4l/v4l2': bool} from getBuildInformation() lines."""
    out = {"GStreamer": False, "FFMPEG": False, "v4l/v4l2": False}
    for ln in lines:
        k, _, v = ln.strip().partition(":")
        if k.strip() in out:
            out[k.strip()] = v.strip().upper().startswith("YES")
    return out


def parse_l4t(text: str) -> tuple[int, ...] | None:
    """'# R36 (release), REVISION: 4.3, ...' -> (36, 4, 3)."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text or "")
    if not m:
        return None
    return (int(m.group(1)),) + tuple(int(x) for x in m.group(2).split(".") if x)


def jetpack_for(l4t: tuple[int, ...]) -> tuple[str, str, str] | None:
    """(JetPack, TensorRT, CUDA) of the newest table row whose L4T prefix is <= l4t."""
    best = None
    for key, jp, trt, cuda in L4T_JETPACK:
        if l4t[:len(key)] >= key and l4t[0] == key[0]:
            best = (jp, trt, cuda)
    return best


def _ver(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", s or "")[:3])


def _cuda_int(v: int | None) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "?"


@dataclass
class _Facts:
    """What every group of checks reads: the probed modules and the machine."""

    mods: dict[str, ModuleProbe]
    sysp: SystemProbe

    def __post_init__(self) -> None:
        self.jetson_text = self.sysp.read("/etc/nv_tegra_release")
        self.jetson = self.jetson_text is not None
        self.arm = self.sysp.machine in ("aarch64", "arm64")

    def m(self, name: str) -> ModuleProbe:
        return self.mods.get(name, _ABSENT)


_ABSENT = ModuleProbe("", False, error="ModuleNotFoundError: not probed")


def _abi_fix(name: str) -> str:
    return (f"{name} was built against NumPy 1.x: pip install 'numpy<2' in this environment "
            "(atfr-deploy's aarch64 install pins it; on a desktop, or upgrade the module to a NumPy-2 build)")


def diagnose(backend: str, mods: dict[str, ModuleProbe], sysp: SystemProbe, plugin: str | None = None,
             disk_path: str = ".", source: str | None = None) -> Report:
    """All checks, judged for ``backend`` (auto | onnxruntime | tensorrt); ``source``: a --source
    to check as well (ATFRError, exit 2, when it is malformed)."""
    f = _Facts(mods, sysp)
    checks = _python_checks(f) + _ort_checks(f) + _opencv_checks(f) + _torch_checks(f) + _tensorrt_checks(f)
    cuda_rows, gpu_cc = _cuda_python_checks(f)
    gpu_rows, gpu_cc = _gpu_checks(f, gpu_cc)
    checks += cuda_rows + gpu_rows
    # SGS plugin library
    if plugin:
        checks.extend(_plugin_checks(plugin, sysp.plugin(plugin), f.m("tensorrt"), gpu_cc, sysp))
    else:
        checks.append(Check("sgs plugin", "info", "no --plugin given: engines can be built with --sgs fallback or "
                            "--sgs host; pass --plugin build/sgs/libatfr_sgs.so to check the plugin"))
    # Jetson: L4T/JetPack, power mode, clocks
    if f.jetson:
        checks.extend(_jetson_checks(f.jetson_text or "", sysp))
    if source is not None:
        checks.extend(source_checks(source, f.m("cv2"), sysp))
    checks.append(_disk_check(sysp, disk_path))
    return _judge(backend, checks, f.m("tensorrt").ok)


def _judge(backend: str, checks: list[Check], trt_ok: bool) -> Report:
    """Resolve 'auto' and demote failures that do not block the chosen backend to warnings."""
    chosen = backend
    if backend == "auto":
        chosen = "tensorrt" if trt_ok else "onnxruntime"
    for c in checks:
        if c.status == "fail" and chosen not in c.blocks:
            c.status = "warn"  # a problem, but not for the backend asked about
    return Report(chosen, backend, checks)


def _disk_check(sysp: SystemProbe, disk_path: str) -> Check:
    """Free space where the engines will be written."""
    try:
        free = sysp.disk_free(disk_path) / 2**30
        return Check("disk", "ok" if free >= MIN_FREE_GB else "warn",
                     f"{free:.1f} GiB free in {os.path.abspath(disk_path)}",
                     "" if free >= MIN_FREE_GB else f"free at least {MIN_FREE_GB:g} GiB before building engines")
    except OSError as e:
        return Check("disk", "warn", f"cannot measure free space ({e})")


def _python_checks(f: _Facts) -> list[Check]:
    """Python and NumPy (on Jetson, NVIDIA's wheels need NumPy 1.x)."""
    out: list[Check] = []
    add = out.append
    m = f.m
    sysp, jetson, both = f.sysp, f.jetson, BACKENDS
    np_ = m("numpy")
    add(Check("python", "ok", f"Python {sysp.python} on {sysp.machine}"))
    if np_.ok:
        numpy_major = _ver(np_.version)[:1]
        if jetson and numpy_major >= (2,):
            add(Check("numpy", "warn", f"numpy {np_.version}",
                      "JetPack's OpenCV/TensorRT bindings and NVIDIA's Jetson wheels are built for NumPy 1.x: "
                      "pip install 'numpy<2'", ()))
        else:
            add(Check("numpy", "ok", f"numpy {np_.version}"))
    else:
        add(Check("numpy", "fail", f"numpy does not import ({np_.error})", "pip install 'numpy>=1.23'", both))
    return out


def _ort_checks(f: _Facts) -> list[Check]:
    """ONNX Runtime: importable, NumPy ABI, the CPU provider."""
    out: list[Check] = []
    add = out.append
    m = f.m
    np_, jetson, arm, abi_fix = m("numpy"), f.jetson, f.arm, _abi_fix
    ort = m("onnxruntime")
    if ort.numpy_abi_mismatch:
        add(Check("onnxruntime", "fail", f"onnxruntime fails with numpy {ort.numpy or np_.version} "
                  f"(NumPy ABI mismatch: {ort.error or 'see its warning'})", abi_fix("onnxruntime"), ("onnxruntime",)))
    elif ort.ok:
        prov = ort.info.get("providers") or []
        add(Check("onnxruntime", "ok", f"onnxruntime {ort.version}; providers: {', '.join(prov) or 'none'}"))
        if "CPUExecutionProvider" not in prov:
            add(Check("onnxruntime providers", "fail", "no CPUExecutionProvider",
                      "reinstall onnxruntime", ("onnxruntime",)))
    else:
        if jetson:
            fix = f"{JETSON_ORT_GPU}; or the CPU build: pip install onnxruntime"
        else:
            fix = "pip install 'atfr-deploy[cpu]'" if arm else "pip install onnxruntime"
        add(Check("onnxruntime", "fail", "onnxruntime is not installed" if ort.missing else
                  f"onnxruntime does not import ({ort.error})", fix, ("onnxruntime",)))
    return out


def _opencv_checks(f: _Facts) -> list[Check]:
    """OpenCV (every 'atfr run'/'predict' decodes video through it): GStreamer, FFmpeg, V4L2."""
    out: list[Check] = []
    add = out.append
    m = f.m
    np_, jetson, both, abi_fix = m("numpy"), f.jetson, BACKENDS, _abi_fix
    cv = m("cv2")
    if cv.numpy_abi_mismatch:
        add(Check("opencv", "fail", f"cv2 fails with numpy {cv.numpy or np_.version} (NumPy ABI mismatch)",
                  abi_fix("cv2"), both))
    elif cv.ok:
        b = parse_cv2_build(cv.info.get("build") or [])
        pip_cv = cv.info.get("pip_dists") or []
        flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in b.items())
        add(Check("opencv", "ok", f"cv2 {cv.version} ({flags}) from {cv.info.get('file') or '?'}"))
        if not b["GStreamer"]:
            if jetson:
                fix = ("a PyPI OpenCV without GStreamer shadows JetPack's: pip uninstall " + " ".join(pip_cv)
                       + " (atfr-deploy does not install it on aarch64) and use a venv made with "
                       "--system-site-packages" if pip_cv else
                       "install JetPack's OpenCV (sudo apt install nvidia-opencv) and use a venv "
                       "made with --system-site-packages")
            else:
                fix = ("only needed for csi:// and GStreamer sources: use an OpenCV built with GStreamer "
                       "(e.g. the distribution's python3-opencv in a venv with --system-site-packages)")
            add(Check("opencv gstreamer", "warn", "no GStreamer: csi:// cameras and '... ! appsink' pipelines "
                      "cannot open", fix))
        if not b["FFMPEG"] and not b["GStreamer"]:
            add(Check("opencv ffmpeg", "warn", "neither FFmpeg nor GStreamer: video files and RTSP cannot be read",
                      "install an OpenCV with FFmpeg (pip install opencv-python-headless off Jetson)"))
        if not b["v4l/v4l2"] and sys.platform.startswith("linux"):
            add(Check("opencv v4l2", "warn", "no V4L2: USB cameras (v4l2://, /dev/videoN) cannot open",
                      "install an OpenCV built with V4L2"))
    else:
        fix = ("sudo apt install nvidia-opencv (JetPack's, with GStreamer) and make the venv with "
               "--system-site-packages" if jetson else "pip install opencv-python-headless")
        add(Check("opencv", "fail", "cv2 is not installed" if cv.missing else f"cv2 does not import ({cv.error})",
                  fix, both))
    return out


def _torch_checks(f: _Facts) -> list[Check]:
    """torch: optional on a device (the runtime never imports it); a broken one still misleads users."""
    out: list[Check] = []
    add = out.append
    m = f.m
    np_, abi_fix = m("numpy"), _abi_fix
    th = m("torch")
    if th.numpy_abi_mismatch:
        add(Check("torch", "warn", f"torch fails with numpy {th.numpy or np_.version} (NumPy ABI mismatch); "
                  "export/verify will fail", abi_fix("torch")))
    elif th.ok:
        add(Check("torch", "info", f"torch {th.version} (export only; the runtime does not use it)"))
    elif not th.missing:
        add(Check("torch", "warn", f"torch does not import ({th.error})", "reinstall torch (export only)"))
    else:
        add(Check("torch", "info", "not installed (export happens on a workstation; not needed here)"))
    return out


def _tensorrt_checks(f: _Facts) -> list[Check]:
    """TensorRT: importable, NumPy ABI, new enough for the SGS plugin."""
    out: list[Check] = []
    add = out.append
    m = f.m
    np_, jetson, abi_fix = m("numpy"), f.jetson, _abi_fix
    trt = m("tensorrt")
    trt_fix = ("sudo apt install python3-libnvinfer python3-libnvinfer-dev (JetPack) and make the venv with "
               "--system-site-packages" if jetson else "pip install 'atfr-deploy[desktop-gpu]' "
               "(or NVIDIA's TensorRT tar/deb/container)")
    if trt.numpy_abi_mismatch:
        add(Check("tensorrt", "fail", f"tensorrt fails with numpy {trt.numpy or np_.version} (NumPy ABI mismatch)",
                  abi_fix("tensorrt"), ("tensorrt",)))
    elif trt.ok:
        from atfr.runtime.tensorrt.compat import check_supported  # noqa: PLC0415 - pure Python

        try:
            check_supported(trt.version)
            add(Check("tensorrt", "ok", f"TensorRT {trt.version}"))
        except Exception as e:  # DependencyError: too old
            add(Check("tensorrt", "fail", str(e), "upgrade to TensorRT >= 10.1 (JetPack 6.1+)", ("tensorrt",)))
    else:
        add(Check("tensorrt", "fail", "tensorrt is not installed" if trt.missing else
                  f"tensorrt does not import ({trt.error})", trt_fix, ("tensorrt",)))
    return out


def _cuda_python_checks(f: _Facts) -> tuple[list[Check], str | None]:
    """cuda-python against the driver's CUDA; returns (rows, compute capability or None)."""
    out: list[Check] = []
    add = out.append
    m = f.m
    jetson = f.jetson
    cu = m("cuda")
    cuda_fix = ("pip install 'atfr-deploy[jetson]' (cuda-python 12.6 for JetPack 6; [jetson-thor] for JetPack 7)"
                if jetson else "pip install 'atfr-deploy[desktop-gpu]' (cuda-python 12.x for CUDA 12 drivers)")
    gpu_cc = None
    if cu.ok:
        drv = cu.info.get("driver_cuda")
        if not drv:
            add(Check("cuda-python", "fail", f"cuda-python {cu.version}, but no CUDA driver "
                      f"({cu.info.get('driver_error') or 'cuDriverGetVersion failed'})",
                      "install the NVIDIA driver (JetPack on Jetson) / check that /dev/nvidia* or /dev/nvgpu exist",
                      ("tensorrt",)))
        else:
            pv, dv = _ver(cu.version)[:2], (drv // 1000, (drv % 1000) // 10)
            if pv and pv[0] > dv[0]:  # a runtime newer than the driver: cudaErrorInsufficientDriver
                add(Check("cuda-python", "fail", f"cuda-python {cu.version} is for CUDA {pv[0]}, the driver "
                          f"supports CUDA {_cuda_int(drv)}", f"pip install 'cuda-python>={dv[0]}.0,<{dv[0] + 1}'",
                          ("tensorrt",)))
            elif pv and pv[0] < dv[0]:
                # Drivers run the CUDA runtimes older than themselves (NVIDIA's backward compatibility):
                # these bindings work; the gpu row shows their first call. A TensorRT built for the
                # driver's CUDA major pairs best with bindings of that major, hence a warning only.
                add(Check("cuda-python", "warn", f"cuda-python {cu.version} is for CUDA {pv[0]}; the driver "
                          f"supports CUDA {_cuda_int(drv)} and runs it (drivers run older CUDA runtimes)",
                          f"pip install 'cuda-python>={dv[0]}.0,<{dv[0] + 1}' to match a TensorRT built for "
                          f"CUDA {dv[0]}"))
            elif pv > dv:
                add(Check("cuda-python", "warn", f"cuda-python {cu.version} is newer than the driver's CUDA "
                          f"{_cuda_int(drv)}", f"pip install 'cuda-python>={dv[0]}.{dv[1]},<{dv[0]}.{dv[1] + 1}'"))
            else:
                add(Check("cuda-python", "ok", f"cuda-python {cu.version}; driver supports CUDA {_cuda_int(drv)}"))
        if cu.info.get("cc"):
            gpu_cc = cu.info["cc"]
    elif cu.missing:
        add(Check("cuda-python", "fail", "cuda-python is not installed (the TensorRT backend needs it)", cuda_fix,
                  ("tensorrt",)))
    else:
        add(Check("cuda-python", "fail", f"cuda-python does not import ({cu.error})", cuda_fix, ("tensorrt",)))
    return out, gpu_cc


def _gpu_checks(f: _Facts, gpu_cc: str | None) -> tuple[list[Check], str | None]:
    """The GPU (nvidia-smi, cuda-python, a Jetson's device tree); returns (rows, compute capability)."""
    out: list[Check] = []
    add = out.append
    m = f.m
    cu, jetson, sysp = m("cuda"), f.jetson, f.sysp
    smi = sysp.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"])
    gpus = []
    if smi is not None and smi[0] == 0:
        gpus = [[x.strip() for x in ln.split(",")] for ln in smi[1].splitlines() if ln.count(",") >= 2]
    if gpus:
        gpu_cc = gpu_cc or gpus[0][1]
        add(Check("gpu", "ok", "; ".join(f"{g[0]} (compute capability {g[1]}, driver {g[2]})" for g in gpus)))
    elif cu.ok and cu.info.get("gpu"):
        add(Check("gpu", "ok", f"{cu.info['gpu']} (compute capability {cu.info.get('cc')})"))
    elif jetson:
        model = (sysp.read("/proc/device-tree/model") or "Jetson").strip("\x00 \n")
        add(Check("gpu", "info", f"{model} (integrated GPU; compute capability from cuda-python once installed)"))
    else:
        cuda_says = f"; cudaGetDeviceCount: {cu.info['device_error']}" if cu.ok and cu.info.get("device_error") else ""
        add(Check("gpu", "fail", "no NVIDIA GPU found (nvidia-smi " +
                  ("missing" if smi is None else "failed") + cuda_says + ")",
                  "the TensorRT backend needs an NVIDIA GPU and driver; use --backend onnxruntime here",
                  ("tensorrt",)))
    return out, gpu_cc


def _plugin_checks(path: str, r: dict[str, Any], trt: ModuleProbe, gpu_cc: str | None,
                   sysp: SystemProbe) -> list[Check]:
    out = []
    dyn = os.path.basename(path).split(".")[0].endswith("_vc")
    if not r.get("loaded"):
        err = r.get("error", "")
        fix = ("build it on this machine: cmake -S plugins/sgs -B build/sgs -DTENSORRT_ROOT=/usr && "
               "cmake --build build/sgs -j" if "no such file" in err else
               "TensorRT's libnvinfer is not on the library path, or the library was built for another "
               "TensorRT/CUDA/architecture: rebuild it here (plugins/sgs/README.md)")
        return [Check("sgs plugin", "fail", f"cannot load {path}: {err}", fix, ("tensorrt",))]
    exp = r.get("exports") or []
    need = {"getCreators", "setLoggerFinder"}
    if dyn and not need <= set(exp):
        out.append(Check("sgs plugin", "fail", f"{path} lacks the exports {sorted(need - set(exp))} that "
                         "IPluginRegistry.load_library needs", "use libatfr_sgs_vc.so built from plugins/sgs "
                         "(exports.map)", ("tensorrt",)))
    else:
        kind = "getCreators variant" if dyn else "static-registration variant"
        out.append(Check("sgs plugin", "ok", f"{path} loads ({kind}; exports: {', '.join(exp) or 'none'})"))
    nv = r.get("nvinfer") or []
    if nv and trt.ok:
        m = re.search(r"libnvinfer\.so\.(\d+)", nv[0])
        if m and int(m.group(1)) != _ver(trt.version)[0]:
            out.append(Check("sgs plugin tensorrt", "fail", f"the plugin links {os.path.basename(nv[0])}, the "
                             f"tensorrt module is {trt.version}", "rebuild the plugin against this TensorRT",
                             ("tensorrt",)))
    if r.get("trt"):
        if r.get("registered"):
            out.append(Check("sgs plugin registry", "ok", "creator atfr::SGS v1 registered"))
        else:
            out.append(Check("sgs plugin registry", "fail", "the library loaded but atfr::SGS v1 is not registered"
                             + (f" ({r['register_error']})" if r.get("register_error") else ""),
                             "use the other variant (libatfr_sgs.so / libatfr_sgs_vc.so) or rebuild it",
                             ("tensorrt",)))
    else:
        out.append(Check("sgs plugin registry", "info", "not checked: tensorrt does not import"))
    arch = sysp.run(["cuobjdump", "--list-elf", "--list-ptx", path]) if gpu_cc else None
    if arch is not None and arch[0] == 0 and gpu_cc:
        sms = {int(x) for x in re.findall(r"\.sm_(\d+)[a-z]?\.cubin", arch[1])}
        ptx = {int(x) for x in re.findall(r"\.sm_(\d+)[a-z]?\.ptx", arch[1])}
        cc = int(gpu_cc.replace(".", ""))
        if cc in sms or any(p <= cc for p in ptx):
            out.append(Check("sgs plugin arch", "ok", f"has code for sm_{cc} (SASS {sorted(sms)}, PTX {sorted(ptx)})"))
        else:
            out.append(Check("sgs plugin arch", "fail", f"no code for this GPU (sm_{cc}); SASS {sorted(sms)}, "
                             f"PTX {sorted(ptx)}", f"rebuild with -DCMAKE_CUDA_ARCHITECTURES={cc}", ("tensorrt",)))
    return out


def _jetson_checks(text: str, sysp: SystemProbe) -> list[Check]:
    out = []
    l4t = parse_l4t(text)
    jp = jetpack_for(l4t) if l4t else None
    if l4t is None:
        out.append(Check("jetpack", "warn", "cannot parse /etc/nv_tegra_release", ""))
    elif jp is None or _ver(jp[1]) < (10, 1):
        rel = ".".join(map(str, l4t))
        out.append(Check("jetpack", "fail", f"L4T R{rel} (JetPack {jp[0] if jp else '?'}, TensorRT "
                         f"{jp[1] if jp else '?'}): the SGS plugin needs TensorRT >= 10.1",
                         "flash JetPack 6.1 or newer (or use --backend onnxruntime)", ("tensorrt",)))
    else:
        out.append(Check("jetpack", "ok", f"L4T R{'.'.join(map(str, l4t))} = JetPack {jp[0]} "
                         f"(TensorRT {jp[1]}, CUDA {jp[2]})"))
    q = sysp.run(["nvpmodel", "-q"])
    if q is None:
        out.append(Check("nvpmodel", "info", "nvpmodel not found"))
    else:
        mode = next((ln.split(":", 1)[1].strip() for ln in q[1].splitlines() if "Power Mode" in ln), None)
        if q[0] != 0 or mode is None:
            out.append(Check("nvpmodel", "info", f"nvpmodel -q failed ({q[1].splitlines()[-1][:120] if q[1] else q[0]})",
                             "run 'sudo nvpmodel -q' to see the power mode"))
        elif "MAXN" in mode.upper():
            out.append(Check("nvpmodel", "ok", f"power mode {mode}"))
        else:
            out.append(Check("nvpmodel", "warn", f"power mode {mode} (not MAXN): lower clocks, slower inference",
                             "sudo nvpmodel -m 0 (MAXN on AGX Orin; see 'nvpmodel -p --verbose' for other boards)"))
    slow = []
    for name, pat in (("cpu0", "/sys/devices/system/cpu/cpu0/cpufreq/scaling_"),):
        cur, mx = sysp.read(pat + "cur_freq"), sysp.read(pat + "max_freq")
        if cur and mx and cur.strip().isdigit() and mx.strip().isdigit():
            slow.append((name, int(cur), int(mx)))
    for d in sysp.glob("/sys/class/devfreq/*gpu*"):
        cur, mx = sysp.read(d + "/cur_freq"), sysp.read(d + "/max_freq")
        if cur and mx and cur.strip().isdigit() and mx.strip().isdigit():
            slow.append(("gpu", int(cur), int(mx)))
    if slow:
        detail = ", ".join(f"{n} {c / (1e3 if n.startswith('cpu') else 1e6):.0f}/{m / (1e3 if n.startswith('cpu') else 1e6):.0f} MHz"
                           for n, c, m in slow)
        locked = all(c >= m for _, c, m in slow)
        out.append(Check("clocks", "ok" if locked else "info", detail,
                         "" if locked else "for stable latency/benchmarks: sudo jetson_clocks"))
    return out


def source_checks(src: str, cv: ModuleProbe, sysp: SystemProbe) -> list[Check]:
    """Can ``--source src`` open here? The first row carries the exact pipeline / V4L2 settings."""
    from atfr.runtime.video.camera import describe  # noqa: PLC0415
    from atfr.runtime.video.sources import parse_source  # noqa: PLC0415

    spec = parse_source(src)
    both = BACKENDS
    out = [Check("source", "info", " | ".join(describe(spec)))]
    if spec.kind == "gstreamer":
        if not (cv.ok and parse_cv2_build(cv.info.get("build") or [])["GStreamer"]):
            out.append(Check("source gstreamer", "fail", f"{spec.label}: this OpenCV has no GStreamer",
                             "use an OpenCV built with GStreamer (JetPack's nvidia-opencv, venv with "
                             "--system-site-packages)", both))
        for elem in ("nvarguscamerasrc", "nvvidconv", "v4l2src", "jpegdec"):
            if re.search(rf"(^|!)\s*{elem}\b", str(spec.target)):
                r = sysp.run(["gst-inspect-1.0", elem])
                if r is None:
                    out.append(Check("gst elements", "info", "gst-inspect-1.0 not found: elements not checked"))
                    break
                if r[0] != 0:
                    pkg = "nvidia-l4t-gstreamer" if elem.startswith("nv") else "gstreamer1.0-plugins-good"
                    out.append(Check(f"gst {elem}", "fail", f"GStreamer element {elem} is missing",
                                     f"sudo apt install {pkg}", both))
    elif spec.kind == "camera" and isinstance(spec.target, str) and not sysp.exists(spec.target):
        out.append(Check("source device", "fail", f"{spec.target}: no such device",
                         "list cameras with 'ls /dev/video*'; 'v4l2-ctl -d DEV --list-formats-ext' shows the "
                         "formats, sizes and fps a camera offers", both))
    elif spec.kind == "file" and not sysp.exists(str(spec.target)):
        out.append(Check("source file", "fail", f"{spec.target}: no such file", "check the path", both))
    return out
