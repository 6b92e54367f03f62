"""atfr doctor: this machine (ORT CPU usable, TensorRT/GPU/GStreamer absent), and simulated
environments (NumPy ABI mismatch, PyPI OpenCV on a Jetson, JetPack releases, cuda-python vs driver,
plugin libraries)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from atfr.errors import ATFRError
from atfr.runtime.doctor import (ModuleProbe, SystemProbe, diagnose, jetpack_for, parse_cv2_build, parse_l4t,
                                 probe_modules, probe_plugin)

ROOT = Path(__file__).resolve().parents[1]
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def atfr(*args: str, fake_torch: Path | None = None) -> subprocess.CompletedProcess:
    """Run the CLI; with ``fake_torch`` a stub torch shadows the real one (importing torch takes
    seconds and these tests are about the CLI, not torch)."""
    env = dict(os.environ)
    if fake_torch is not None:
        (fake_torch / "torch").mkdir(exist_ok=True)
        (fake_torch / "torch" / "__init__.py").write_text("__version__ = '0.0+stub'\n")
        env["PYTHONPATH"] = os.pathsep.join([str(fake_torch), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "atfr.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def by_name(report) -> dict:
    return {c.name: c for c in report.checks}


# -- this machine -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def here():
    """One real probe of this machine's modules, shared by the tests below."""
    return probe_modules()


def test_this_machine_ort_usable_exit_0(here):
    if HAS_TRT:
        pytest.skip("tensorrt imports here; the test covers a CPU-only machine")
    r = diagnose("auto", here, SystemProbe())
    assert r.backend == "onnxruntime" and r.ok and r.exit_code == 0
    c = by_name(r)
    assert c["onnxruntime"].status == "ok" and "CPUExecutionProvider" in c["onnxruntime"].detail
    import numpy

    assert c["numpy"].detail == f"numpy {numpy.__version__}"
    # Absent pieces are reported with their fix, but do not block ONNX Runtime.
    assert c["tensorrt"].status == "warn" and "desktop-gpu" in c["tensorrt"].fix
    assert c["cuda-python"].status == "warn" and c["cuda-python"].fix
    if shutil.which("nvidia-smi") is None:
        assert c["gpu"].status == "warn" and "--backend onnxruntime" in c["gpu"].fix


def test_cli_exit_codes_and_json(tmp_path):
    if HAS_TRT:
        pytest.skip("tensorrt imports here")
    p = atfr("doctor", "--json", fake_torch=tmp_path)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["backend"] == "onnxruntime" and d["exit_code"] == 0 and d["requested"] == "auto"
    assert {c["name"]: c for c in d["checks"]}["torch"]["detail"].startswith("torch 0.0+stub")
    p = atfr("doctor", "--backend", "tensorrt", fake_torch=tmp_path)
    assert p.returncode == 4
    assert "backend tensorrt: cannot run" in p.stdout
    assert "fix: pip install 'atfr-deploy[desktop-gpu]'" in p.stdout
    assert p.stderr.strip().count("\n") == 0 and "blocking problem(s)" in p.stderr
    p = atfr("doctor", "--source", "csi://0?widht=640")
    assert p.returncode == 2 and "unknown option 'widht'" in p.stderr and p.stderr.count("\n") == 1


def test_cli_source_prints_the_pipeline_and_fails_without_gstreamer(tmp_path):
    cv2 = pytest.importorskip("cv2")
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    p = atfr("doctor", "--backend", "onnxruntime", "--source", "csi://0?width=1280&height=720", fake_torch=tmp_path)
    assert p.returncode == 4
    assert ("GStreamer pipeline: nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM), width=1280, height=720, "
            "framerate=30/1") in p.stdout
    assert "this OpenCV has no GStreamer" in p.stdout


# -- simulated modules --------------------------------------------------------------------------

NUMPY1_WARNING = ("A module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.0.2 as it may crash. "
                  "To support both 1.x and 2.x\nversions of NumPy, modules must be compiled with NumPy 2.0.")


def test_numpy_abi_mismatch_is_caught_in_a_subprocess(tmp_path, monkeypatch):
    # A cv2 that behaves like one built against NumPy 1.x imported under NumPy 2: the warning on
    # stderr, then ImportError (what JetPack's OpenCV does in a venv that pulled numpy 2).
    fake = tmp_path / "cv2"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent(f"""
        import sys, numpy
        sys.stderr.write({NUMPY1_WARNING!r} + "\\n")
        raise ImportError("numpy.core.multiarray failed to import")
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    mods = probe_modules(["numpy", "cv2", "onnxruntime"])
    assert mods["cv2"].numpy_abi_mismatch and not mods["cv2"].ok and mods["numpy"].ok
    assert "compiled using NumPy 1.x" in mods["cv2"].stderr
    r = diagnose("onnxruntime", mods, _sysp())
    c = by_name(r)["opencv"]
    assert c.status == "fail" and "NumPy ABI mismatch" in c.detail and "pip install 'numpy<2'" in c.fix
    assert r.exit_code == 4  # every run decodes video through cv2


def test_crash_on_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "tensorrt.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    m = probe_modules(["tensorrt"])["tensorrt"]
    assert not m.ok and "crashed the interpreter (signal 11)" in m.error


def _mods(**over) -> dict[str, ModuleProbe]:
    """A healthy desktop CPU environment, with overrides."""
    base = {
        "numpy": ModuleProbe("numpy", True, "1.26.4"),
        "onnxruntime": ModuleProbe("onnxruntime", True, "1.20.1", numpy="1.26.4",
                                   info={"providers": ["CPUExecutionProvider"]}),
        "cv2": ModuleProbe("cv2", True, "4.10.0", info={"build": ["GStreamer: NO", "FFMPEG: YES",
                                                                  "v4l/v4l2: YES (linux/videodev2.h)"],
                                                        "pip_dists": ["opencv-python-headless"]}),
        "torch": ModuleProbe("torch", False, error="ModuleNotFoundError: No module named 'torch'"),
        "tensorrt": ModuleProbe("tensorrt", False, error="ModuleNotFoundError: No module named 'tensorrt'"),
        "cuda": ModuleProbe("cuda", False, error="ModuleNotFoundError: No module named 'cuda'"),
    }
    base.update(over)
    return base


def _sysp(files: dict[str, str] | None = None, cmds: dict[str, tuple[int, str]] | None = None,
          machine: str = "x86_64", plugin=None, free_gb: float = 50.0) -> SystemProbe:
    files = files or {}
    cmds = cmds or {}
    return SystemProbe(read=files.get, exists=lambda p: p in files,
                       run=lambda cmd: cmds.get(cmd[0]),
                       glob=lambda pat: sorted({f.rsplit("/", 1)[0] for f in files if f.startswith("/sys/class/devfreq/")}),
                       disk_free=lambda p: int(free_gb * 2**30), machine=machine, python="3.10.12",
                       plugin=plugin or (lambda p: {"loaded": False, "error": f"{p}: no such file"}))


def test_ok_import_with_numpy_warning_still_counts_as_mismatch():
    m = ModuleProbe("torch", True, "2.1.0", stderr=NUMPY1_WARNING)
    r = diagnose("onnxruntime", _mods(torch=m), _sysp())
    c = by_name(r)["torch"]
    assert c.status == "warn" and "NumPy ABI mismatch" in c.detail and r.exit_code == 0  # torch: export only


def test_missing_ort_blocks_only_onnxruntime():
    mods = _mods(onnxruntime=ModuleProbe("onnxruntime", False, error="ModuleNotFoundError: No module named 'x'"))
    assert diagnose("onnxruntime", mods, _sysp()).exit_code == 4
    c = by_name(diagnose("onnxruntime", mods, _sysp(machine="aarch64")))["onnxruntime"]
    assert c.fix == "pip install 'atfr-deploy[cpu]'"


def test_cv2_build_flags():
    assert parse_cv2_build(["GStreamer:                   YES (1.20.3)", "FFMPEG: NO", "v4l/v4l2: YES"]) == \
        {"GStreamer": True, "FFMPEG": False, "v4l/v4l2": True}
    r = diagnose("onnxruntime", _mods(cv2=ModuleProbe("cv2", True, "4.8.0", info={"build": [
        "GStreamer: NO", "FFMPEG: NO", "v4l/v4l2: NO"]})), _sysp())
    c = by_name(r)
    assert {"opencv gstreamer", "opencv ffmpeg", "opencv v4l2"} <= set(c) and all(
        c[k].status == "warn" and c[k].fix for k in ("opencv gstreamer", "opencv ffmpeg", "opencv v4l2"))


# -- simulated Jetson ---------------------------------------------------------------------------

TEGRA_62 = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n"
TEGRA_60 = "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024\n"


def _jetson_files(release: str = TEGRA_62, **extra) -> dict[str, str]:
    return {"/etc/nv_tegra_release": release, "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "729600\n",
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "2201600\n",
            "/sys/class/devfreq/17000000.gpu/cur_freq": "306000000\n",
            "/sys/class/devfreq/17000000.gpu/max_freq": "1300500000\n", **extra}


def test_l4t_to_jetpack():
    assert parse_l4t(TEGRA_62) == (36, 4, 3) and jetpack_for((36, 4, 3)) == ("6.2", "10.3", "12.6")
    assert jetpack_for((36, 4, 0)) == ("6.1", "10.3", "12.6") and jetpack_for((36, 3, 0))[1] == "8.6"
    assert jetpack_for((38, 2, 1)) == ("7.0", "10.13", "13.0") and jetpack_for((35, 4, 1))[0] == "5.1.x"


def _jetson_mods(**over):
    # JetPack 6.2 with TensorRT 10.3 from the system, cuda-python 12.6, and a PyPI OpenCV shadowing JetPack's.
    return _mods(**{
        "onnxruntime": ModuleProbe("onnxruntime", False, error="ModuleNotFoundError: No module named 'onnxruntime'"),
        "tensorrt": ModuleProbe("tensorrt", True, "10.3.0"),
        "cuda": ModuleProbe("cuda", True, "12.6.2.post1", info={"driver_cuda": 12060, "devices": 1,
                                                                "gpu": "Orin", "cc": "8.7"}),
        **over})


def test_jetson_62_ready_for_tensorrt_with_advice():
    sysp = _sysp(_jetson_files(), {"nvpmodel": (0, "NV Power Mode: 30W\n2")}, machine="aarch64")
    r = diagnose("auto", _jetson_mods(), sysp)
    c = by_name(r)
    assert r.backend == "tensorrt" and r.exit_code == 0, r.table()
    assert c["jetpack"].detail == "L4T R36.4.3 = JetPack 6.2 (TensorRT 10.3, CUDA 12.6)"
    assert c["gpu"].detail == "Orin (compute capability 8.7)"
    assert c["cuda-python"].status == "ok"
    assert c["nvpmodel"].status == "warn" and "sudo nvpmodel -m 0" in c["nvpmodel"].fix
    assert c["clocks"].detail == "cpu0 730/2202 MHz, gpu 306/1300 MHz" and c["clocks"].fix == "for stable latency/benchmarks: sudo jetson_clocks"
    # The PyPI OpenCV (no GStreamer) shadows JetPack's: the fix names the wheel to remove.
    assert "pip uninstall opencv-python-headless" in c["opencv gstreamer"].fix
    # ORT absent: NVIDIA's Jetson wheel is the fix; not blocking TensorRT.
    assert c["onnxruntime"].status == "warn" and "onnxruntime-gpu" in c["onnxruntime"].fix
    assert "numpy" in c and c["numpy"].status == "ok"


def test_jetson_with_numpy2_warns():
    sysp = _sysp(_jetson_files(), machine="aarch64")
    c = by_name(diagnose("tensorrt", _jetson_mods(numpy=ModuleProbe("numpy", True, "2.1.0")), sysp))["numpy"]
    assert c.status == "warn" and "numpy<2" in c.fix


def test_jetpack_60_cannot_run_the_plugin():
    sysp = _sysp(_jetson_files(TEGRA_60), machine="aarch64")
    r = diagnose("tensorrt", _jetson_mods(tensorrt=ModuleProbe("tensorrt", True, "8.6.2")), sysp)
    c = by_name(r)
    assert r.exit_code == 4 and c["jetpack"].status == "fail" and "JetPack 6.1" in c["jetpack"].fix
    assert c["tensorrt"].status == "fail" and "too old" in c["tensorrt"].detail


@pytest.mark.parametrize("cp,status,fix", [("12.6.2.post1", "ok", ""), ("12.9.0", "warn", "cuda-python>=12.6,<12.7"),
                                           ("13.0.1", "fail", "cuda-python>=12.0,<13")])
def test_cuda_python_vs_driver(cp, status, fix):
    mods = _jetson_mods(cuda=ModuleProbe("cuda", True, cp, info={"driver_cuda": 12060}))
    c = by_name(diagnose("tensorrt", mods, _sysp(_jetson_files(), machine="aarch64")))["cuda-python"]
    assert c.status == status and fix in c.fix


def test_no_driver_blocks_tensorrt():
    mods = _jetson_mods(cuda=ModuleProbe("cuda", True, "12.6.0", info={"driver_cuda": None,
                                                                        "driver_error": "CUDA_ERROR_NO_DEVICE"}))
    r = diagnose("tensorrt", mods, _sysp(machine="x86_64"))
    assert r.exit_code == 4 and "CUDA_ERROR_NO_DEVICE" in by_name(r)["cuda-python"].detail


def test_low_disk_warns():
    c = by_name(diagnose("onnxruntime", _mods(), _sysp(free_gb=0.5)))["disk"]
    assert c.status == "warn" and c.detail.startswith("0.5 GiB free")


def test_source_v4l2_missing_device_and_gst_elements():
    r = diagnose("onnxruntime", _mods(), _sysp(), source="v4l2:///dev/video0?format=YUYV&width=640&height=480")
    c = by_name(r)
    assert c["source device"].status == "fail" and r.exit_code == 4
    assert "CAP_PROP_FOURCC=YUYV" in c["source"].detail
    gst = _mods(cv2=ModuleProbe("cv2", True, "4.8.0", info={"build": ["GStreamer: YES", "FFMPEG: YES"]}))
    r = diagnose("tensorrt", _jetson_mods(cv2=gst["cv2"]),
                 _sysp(_jetson_files(), {"gst-inspect-1.0": (1, "No such element or plugin 'nvarguscamerasrc'")},
                       machine="aarch64"), source="csi://0")
    c = by_name(r)
    assert c["gst nvarguscamerasrc"].status == "fail" and "nvidia-l4t-gstreamer" in c["gst nvarguscamerasrc"].fix
    with pytest.raises(ATFRError):
        diagnose("onnxruntime", _mods(), _sysp(), source="csi://x")


# -- plugin library -----------------------------------------------------------------------------

def _cc(tmp: Path, name: str, src: str, *flags: str) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    c = tmp / (name + ".c")
    c.write_text(src)
    out = tmp / name
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(out), str(c), *flags], check=True, capture_output=True)
    return out


def test_plugin_exports_and_missing_libnvinfer(tmp_path):
    exports = "void* getCreators(int* n){*n=0;return 0;} void* getPluginCreators(int* n){*n=0;return 0;} void setLoggerFinder(void* f){}\n"
    vc = _cc(tmp_path, "libatfr_sgs_vc.so", exports)
    r = probe_plugin(str(vc))
    assert r["loaded"] and r["exports"] == ["getCreators", "getPluginCreators", "setLoggerFinder"]
    rep = diagnose("onnxruntime", _mods(), _sysp(plugin=probe_plugin), plugin=str(vc))
    c = by_name(rep)
    assert c["sgs plugin"].status == "ok" and "getCreators variant" in c["sgs plugin"].detail
    if not HAS_TRT:
        assert c["sgs plugin registry"].detail == "not checked: tensorrt does not import"
    # A getCreators-variant name without the exports.
    bad = _cc(tmp_path, "libother_vc.so", "int unrelated(void){return 1;}\n")
    c = by_name(diagnose("tensorrt", _mods(), _sysp(plugin=probe_plugin), plugin=str(bad)))["sgs plugin"]
    assert c.status == "fail" and "getCreators" in c.detail
    # A library linked against a libnvinfer that is not on this machine (how the real plugin looks here).
    stub = _cc(tmp_path, "libnvinfer.so", "int nvinfer_stub(void){return 0;}\n", "-Wl,-soname,libnvinfer.so.10")
    linked = _cc(tmp_path, "libatfr_sgs.so", "extern int nvinfer_stub(void); int f(void){return nvinfer_stub();}\n",
                 f"-L{tmp_path}", "-lnvinfer")
    stub.unlink()
    c = by_name(diagnose("tensorrt", _mods(), _sysp(plugin=probe_plugin), plugin=str(linked)))["sgs plugin"]
    assert c.status == "fail" and "libnvinfer.so.10" in c.detail and "rebuild it here" in c.fix
    c = by_name(diagnose("tensorrt", _mods(), _sysp(plugin=probe_plugin), plugin=str(tmp_path / "nope.so")))
    assert "cmake -S plugins/sgs" in c["sgs plugin"].fix


def test_plugin_arch_from_cuobjdump():
    listing = "ELF file    1: libatfr_sgs.1.sm_75.cubin\nELF file    2: libatfr_sgs.2.sm_86.cubin\nPTX file    1: libatfr_sgs.1.sm_90.ptx\n"
    ok = {"loaded": True, "exports": []}
    mods = _jetson_mods()  # compute capability 8.7
    sysp = _sysp(_jetson_files(), {"cuobjdump": (0, listing)}, machine="aarch64", plugin=lambda p: ok)
    c = by_name(diagnose("tensorrt", mods, sysp, plugin="/x/libatfr_sgs.so"))["sgs plugin arch"]
    assert c.status == "fail" and "-DCMAKE_CUDA_ARCHITECTURES=87" in c.fix
    sysp = _sysp(_jetson_files(), {"cuobjdump": (0, listing + "ELF file    3: libatfr_sgs.3.sm_87.cubin\n")},
                 machine="aarch64", plugin=lambda p: ok)
    assert by_name(diagnose("tensorrt", mods, sysp, plugin="/x/libatfr_sgs.so"))["sgs plugin arch"].status == "ok"
