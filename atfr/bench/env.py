"""Environment capture for benchmark reports: CPU, GPU, library versions, Jetson power state.

Everything is optional and best effort: a missing tool, file or package gives ``None`` for its
fields, never an exception. Torch-free (torch is only *read* if some other code imported it).

Jetson: detected by ``/etc/nv_tegra_release``. We record the L4T release, the board model, the
``nvpmodel -q`` power mode, the ``jetson_clocks --show`` state (clocks locked or not; a warning
when they are not) and sample ``tegrastats`` in a background thread during the run
(:class:`TegrastatsSampler`), parsing power rails (mW) and temperatures (C) with
:func:`parse_tegrastats_line`.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

TEGRA_RELEASE = Path("/etc/nv_tegra_release")


# -- small helpers ---------------------------------------------------------------------------------
def _cmd(args: list[str], timeout: float = 5.0) -> str | None:
    """stdout of a command, or None when absent, failing or slow."""
    if shutil.which(args[0]) is None:
        return None
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    return r.stdout


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _version(module: str, import_it: bool = True) -> str | None:
    mod = sys.modules.get(module)
    if mod is None and import_it:
        try:
            mod = importlib.import_module(module)
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            return None
    if mod is None:
        return None
    v = getattr(mod, "__version__", None)
    return str(v) if v is not None else None


# -- CPU / GPU -------------------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    model = None
    txt = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", txt, re.MULTILINE)
        if m:
            model = m.group(1).strip()
            break
    if not model:
        model = platform.processor() or platform.machine() or None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = list(os.getloadavg())
    except (AttributeError, OSError):
        load = None
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": affinity,
        "machine": platform.machine(),
        "governor": gov.strip() if gov else None,
        "load_average": load,
    }


def gpu_info() -> list[dict[str, Any]] | None:
    """Per GPU from nvidia-smi (name, driver, memory, clocks), or None when there is none."""
    out = _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                "persistence_mode", "--format=csv,noheader,nounits"])
    if not out:
        return None
    gpus = []
    for line in out.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) < 6:
            continue
        gpus.append({"name": f[0], "driver": f[1], "memory_total_mb": _num(f[2]), "sm_clock_mhz": _num(f[3]),
                     "sm_clock_max_mhz": _num(f[4]), "persistence_mode": f[5]})
    return gpus or None


def gpu_memory_used_mb(pid: int | None = None) -> float | None:
    """GPU memory held by this process (nvidia-smi compute apps), or by torch when it is in use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                return float(torch.cuda.max_memory_allocated()) / 2**20
        except Exception:  # noqa: BLE001
            pass
    out = _cmd(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if not out:
        return None
    pid = os.getpid() if pid is None else pid
    for line in out.strip().splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) == 2 and f[0] == str(pid):
            return _num(f[1])
    return None


def _num(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


# -- versions --------------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    v: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("cv2"),
        "tensorrt": _version("tensorrt"),
        "torch": _version("torch", import_it=False),  # only if something else already imported it
        "cuda": None,
        "cudnn": None,
    }
    try:
        from atfr import __version__
        v["atfr_deploy"] = __version__
    except Exception:  # noqa: BLE001
        v["atfr_deploy"] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            v["cuda"] = torch.version.cuda
            cud = torch.backends.cudnn.version()
            v["cudnn"] = str(cud) if cud else None
        except Exception:  # noqa: BLE001
            pass
    if v["cuda"] is None:
        v["cuda"] = _cuda_version()
    if v["cudnn"] is None:
        v["cudnn"] = _cudnn_version()
    try:
        import onnxruntime as ort
        v["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception:  # noqa: BLE001
        v["onnxruntime_providers"] = None
    return v


def _cuda_version() -> str | None:
    for p in ("/usr/local/cuda/version.json", "/usr/local/cuda/version.txt"):
        txt = _read(p)
        if txt:
            m = re.search(r'"cuda"\s*:\s*\{[^}]*"version"\s*:\s*"([\d.]+)"', txt) or \
                re.search(r"CUDA Version\s+([\d.]+)", txt)
            if m:
                return m.group(1)
    out = _cmd(["nvcc", "--version"])
    if out:
        m = re.search(r"release ([\d.]+)", out)
        if m:
            return m.group(1)
    return None


def _cudnn_version() -> str | None:
    try:
        import ctypes
        for name in ("libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            lib.cudnnGetVersion.restype = ctypes.c_size_t
            return str(int(lib.cudnnGetVersion()))
    except Exception:  # noqa: BLE001
        return None
    return None


# -- Jetson ----------------------------------------------------------------------------------------
def parse_nvpmodel(text: str | None) -> dict[str, Any] | None:
    """``nvpmodel -q`` prints 'NV Power Mode: MAXN' then the mode id on its own line."""
    if not text:
        return None
    name = None
    mode = None
    m = re.search(r"NV Power Mode\s*:\s*(\S+)", text)
    if m:
        name = m.group(1)
    for line in text.splitlines():
        if line.strip().isdigit():
            mode = int(line.strip())
    return {"name": name, "id": mode}


_JC_FREQ = re.compile(r"^(\S+?):?\s.*?MinFreq=(\d+).*?MaxFreq=(\d+).*?CurrentFreq=(\d+)", re.MULTILINE)


def parse_jetson_clocks(text: str | None) -> dict[str, Any] | None:
    """``jetson_clocks --show``: lines such as
    'cpu0: Online=1 Governor=schedutil MinFreq=729600 MaxFreq=2201600 CurrentFreq=1497600 ...',
    'GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000',
    'EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1'.
    Clocks count as locked when every listed clock has MinFreq == MaxFreq == CurrentFreq, which is
    what ``sudo jetson_clocks`` sets (EMC: CurrentFreq == MaxFreq suffices, it has no MinFreq pin).
    """
    if not text:
        return None
    clocks = {}
    for m in _JC_FREQ.finditer(text):
        name, lo, hi, cur = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        clocks[name] = {"min": lo, "max": hi, "current": cur}
    if not clocks:
        return {"locked": None, "clocks": {}}
    unlocked = [k for k, c in clocks.items()
                if not (c["current"] == c["max"] and (k.upper() == "EMC" or c["min"] == c["max"]))]
    return {"locked": not unlocked, "unlocked": unlocked, "clocks": clocks}


# tegrastats (documented format, JetPack 5/6; one line per interval), e.g. Orin:
#   RAM 2448/62841MB (lfb 13542x4MB) SWAP 0/31421MB (cached 0MB) CPU [0%@729,off,...] EMC_FREQ 0%@2133
#   GR3D_FREQ 0%@[305,305] VIC_FREQ 729 APE 174 CPU@47.281C SOC2@43.468C GPU@-256C tj@47.281C
#   VDD_GPU_SOC 2793mW/2793mW VDD_CPU_CV 399mW/399mW VIN_SYS_5V0 3729mW/3729mW
# Older boards (Xavier, Nano) print rails without units: 'GPU 0/0 CPU 465/465 SOC 1396/1396' and
# 'POM_5V_IN 2259/2259'. JetPack 6 prefixes a timestamp 'MM-DD-YYYY HH:MM:SS'. -256C = sensor off.
_T_RE = re.compile(r"(?<![\w@])([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C\b")
_P_MW_RE = re.compile(r"(?<!\S)([A-Za-z][\w]*) (\d+)mW/(\d+)mW")
_P_OLD_RE = re.compile(r"(?<!\S)(POM_\w+|VDD_\w+|VDDRQ|SYS5V|GPU|CPU|SOC|CV) (\d+)/(\d+)(?!\w|MB)")
_RAM_RE = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU_RE = re.compile(r"\bCPU \[([^\]]*)\]")
_GR3D_RE = re.compile(r"\bGR3D_FREQ (\d+)%")
_EMC_RE = re.compile(r"\bEMC_FREQ (\d+)%")
_TS_RE = re.compile(r"^(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s+")


def parse_tegrastats_line(line: str) -> dict[str, Any] | None:
    """One tegrastats line -> {timestamp, ram_used_mb, ram_total_mb, cpu_util (list, None = off),
    cpu_freq_mhz, gpu_util, emc_util, temps_c {sensor: C}, power_mw {rail: current},
    power_avg_mw {rail: average}}; None for a line that is not tegrastats output."""
    line = line.strip()
    if not line or ("RAM " not in line and "mW" not in line and "@" not in line):
        return None
    out: dict[str, Any] = {"timestamp": None, "ram_used_mb": None, "ram_total_mb": None, "cpu_util": None,
                           "cpu_freq_mhz": None, "gpu_util": None, "emc_util": None, "temps_c": {},
                           "power_mw": {}, "power_avg_mw": {}}
    m = _TS_RE.match(line)
    if m:
        out["timestamp"] = m.group(1)
    m = _RAM_RE.search(line)
    if m:
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    m = _CPU_RE.search(line)
    cpu_span = m.span() if m else (0, 0)
    if m:
        utils: list[int | None] = []
        freqs: list[int | None] = []
        for core in m.group(1).split(","):
            core = core.strip()
            cm = re.match(r"(\d+)%(?:@(\d+))?", core)
            utils.append(int(cm.group(1)) if cm else None)
            freqs.append(int(cm.group(2)) if cm and cm.group(2) else None)
        out["cpu_util"], out["cpu_freq_mhz"] = utils, freqs
    m = _GR3D_RE.search(line)
    if m:
        out["gpu_util"] = int(m.group(1))
    m = _EMC_RE.search(line)
    if m:
        out["emc_util"] = int(m.group(1))
    for m in _T_RE.finditer(line):
        v = float(m.group(2))
        if v > -200:  # -256C: the sensor is switched off
            out["temps_c"][m.group(1)] = v
    for m in _P_MW_RE.finditer(line):
        out["power_mw"][m.group(1)] = int(m.group(2))
        out["power_avg_mw"][m.group(1)] = int(m.group(3))
    if not out["power_mw"]:
        for m in _P_OLD_RE.finditer(line):
            if cpu_span[0] <= m.start() < cpu_span[1]:
                continue
            out["power_mw"][m.group(1)] = int(m.group(2))
            out["power_avg_mw"][m.group(1)] = int(m.group(3))
    if out["ram_used_mb"] is None and not out["power_mw"] and not out["temps_c"]:
        return None
    return out


def summarise_tegrastats(samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mean / max per power rail, max per temperature sensor, mean GPU utilisation."""
    if not samples:
        return None
    rails: dict[str, list[float]] = {}
    temps: dict[str, list[float]] = {}
    gpu = [s["gpu_util"] for s in samples if s.get("gpu_util") is not None]
    for s in samples:
        for k, v in s.get("power_mw", {}).items():
            rails.setdefault(k, []).append(float(v))
        for k, v in s.get("temps_c", {}).items():
            temps.setdefault(k, []).append(float(v))
    return {
        "samples": len(samples),
        "power_mw": {k: {"mean": sum(v) / len(v), "max": max(v)} for k, v in rails.items()},
        "temps_c": {k: {"mean": sum(v) / len(v), "max": max(v)} for k, v in temps.items()},
        "gpu_util_mean": (sum(gpu) / len(gpu)) if gpu else None,
        "ram_used_mb_max": max((s["ram_used_mb"] for s in samples if s.get("ram_used_mb") is not None),
                               default=None),
    }


class TegrastatsSampler:
    """Run ``tegrastats --interval MS`` in the background for the duration of a ``with`` block.

    No-op (``summary()`` -> None) when tegrastats is absent or fails to start.
    """

    def __init__(self, interval_ms: int = 500, command: list[str] | None = None):
        self.interval_ms = int(interval_ms)
        self.command = command or ["tegrastats", "--interval", str(self.interval_ms)]
        self.samples: list[dict[str, Any]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return shutil.which(self.command[0]) is not None

    def _reader(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rec = parse_tegrastats_line(line)
            if rec is not None:
                self.samples.append(rec)

    def start(self) -> "TegrastatsSampler":
        if not self.available:
            return self
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, bufsize=1)
        except OSError:
            self._proc = None
            return self
        self._thread = threading.Thread(target=self._reader, name="tegrastats", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._proc is not None:
            try:
                self._proc.terminate()
                self._proc.wait(timeout=3)
            except Exception:  # noqa: BLE001
                try:
                    self._proc.kill()
                except Exception:  # noqa: BLE001
                    pass
        if self._thread is not None:
            self._thread.join(timeout=3)
        self._proc = None

    def __enter__(self) -> "TegrastatsSampler":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def summary(self) -> dict[str, Any] | None:
        return summarise_tegrastats(self.samples)


def jetson_info() -> dict[str, Any] | None:
    """None off Jetson; else L4T release, board, nvpmodel mode and jetson_clocks state."""
    rel = _read(TEGRA_RELEASE)
    if rel is None:
        return None
    model = _read("/proc/device-tree/model")
    info: dict[str, Any] = {
        "l4t_release": rel.strip().splitlines()[0] if rel.strip() else None,
        "board": model.strip("\x00\n ") if model else None,
        "nvpmodel": parse_nvpmodel(_cmd(["nvpmodel", "-q"])),
        "jetson_clocks": parse_jetson_clocks(_cmd(["jetson_clocks", "--show"])),
    }
    return info


def capture(threads: int | None = None) -> dict[str, Any]:
    """The environment block of a report, plus ``warnings`` (list of strings)."""
    warnings: list[str] = []
    env: dict[str, Any] = {
        "hostname": platform.node() or None,
        "os": platform.platform(),
        "cpu": cpu_info(),
        "threads": threads,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "mkl_num_threads": os.environ.get("MKL_NUM_THREADS"),
        "gpu": gpu_info(),
        "versions": versions(),
        "jetson": None,
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        env["jetson"] = jetson_info()
    except Exception:  # noqa: BLE001 - never crash on environment capture
        env["jetson"] = None
    j = env["jetson"]
    if j is not None:
        jc = j.get("jetson_clocks")
        if jc is None or jc.get("locked") is None:
            warnings.append("Jetson: could not read the clock state (run 'sudo jetson_clocks --show'); "
                            "results may vary with DVFS")
        elif not jc["locked"]:
            warnings.append("Jetson clocks are not locked (" + ", ".join(jc.get("unlocked", [])[:4]) +
                            "); run 'sudo nvpmodel -m 0 && sudo jetson_clocks' for stable numbers")
    cpu = env["cpu"]
    if cpu.get("load_average") and cpu.get("usable_cores"):
        if cpu["load_average"][0] > 0.5 * cpu["usable_cores"]:
            warnings.append(f"the machine is busy (1-min load {cpu['load_average'][0]:.2f} on "
                            f"{cpu['usable_cores']} cores): latencies will be noisy; compare ratios from one run")
    if cpu.get("governor") and cpu["governor"] not in ("performance",):
        warnings.append(f"CPU frequency governor is '{cpu['governor']}' (not 'performance')")
    env["warnings"] = warnings
    return env
