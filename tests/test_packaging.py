"""The install paths per platform (pyproject.toml markers and extras) resolve as intended.

Two layers:
* our own markers are evaluated with ``packaging`` against each target's environment (pure, no
  network): what the Jetson, Thor, desktop-GPU and CPU installs ask for;
* those requirement lists are resolved by pip for the target platform (``--dry-run --report
  --only-binary=:all: --platform ... --python-version ...``) against the package index, and the
  report is checked: no numpy >= 2 and no PyPI OpenCV/ONNX Runtime on Jetson, OpenCV and ONNX
  Runtime on desktop/CPU. pip evaluates markers of *transitive* dependencies against this machine,
  not the target; that is why our own markers are evaluated here first and passed without markers.
  Skips (with the reason) when the index cannot be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _env(machine: str, py: str) -> dict[str, str]:
    return {"platform_machine": machine, "python_version": py, "python_full_version": py + ".0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_release": "", "platform_version": "", "implementation_version": py + ".0"}


# name -> (marker environment, pip platform tags, python version)
TARGETS = {
    "jetpack6": (_env("aarch64", "3.10"), ["manylinux2014_aarch64"], "3.10"),  # JetPack 6.1/6.2: Ubuntu 22.04
    "jetpack7": (_env("aarch64", "3.12"), ["manylinux_2_28_aarch64", "manylinux2014_aarch64"], "3.12"),  # 24.04
    "x86_310": (_env("x86_64", "3.10"), ["manylinux2014_x86_64"], "3.10"),
    "x86_311": (_env("x86_64", "3.11"), ["manylinux_2_28_x86_64", "manylinux2014_x86_64"], "3.11"),
}


def requirements(extras: tuple[str, ...], target: str) -> list[Requirement]:
    """The project's requirements for ``extras`` on ``target``, markers evaluated (and dropped)."""
    env = TARGETS[target][0]
    raw = list(PYPROJECT["dependencies"])
    opt = PYPROJECT["optional-dependencies"]
    for e in extras:
        raw += opt[e]
    out = []
    for s in raw:
        r = Requirement(s)
        if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in (extras or ("",))):
            r.marker = None
            out.append(r)
    return out


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def spec_of(reqs: list[Requirement], name: str):
    from packaging.specifiers import SpecifierSet

    s = SpecifierSet()
    for r in reqs:
        if canonicalize_name(r.name) == name:
            s &= r.specifier
    return s


OPENCV_DISTS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


# -- our markers (pure) -------------------------------------------------------------------------

def test_extras_exist():
    assert {"jetson", "jetson-thor", "desktop-gpu", "cuda12", "cpu", "export", "dev", "tensorrt"} <= set(
        PYPROJECT["optional-dependencies"])


@pytest.mark.parametrize("extras,target", [((), "jetpack6"), (("jetson",), "jetpack6"),
                                           (("jetson-thor",), "jetpack7")])
def test_jetson_asks_for_no_pypi_opencv_or_ort_and_numpy_below_2(extras, target):
    reqs = requirements(extras, target)
    assert not names(reqs) & OPENCV_DISTS
    assert "onnxruntime" not in names(reqs)  # would clash with NVIDIA's onnxruntime-gpu wheel
    np_spec = spec_of(reqs, "numpy")
    assert not np_spec.contains("2.0.0") and np_spec.contains("1.26.4")


def test_cuda_python_matches_the_jetpack_cuda():
    # JetPack 6.1/6.2 ships CUDA 12.6; JetPack 7 CUDA 13.x.
    s6 = spec_of(requirements(("jetson",), "jetpack6"), "cuda-python")
    assert s6.contains("12.6.2.post1", prereleases=False) and not s6.contains("12.8.0") and not s6.contains("12.5.0")
    s7 = spec_of(requirements(("jetson-thor",), "jetpack7"), "cuda-python")
    assert s7.contains("13.0.0") and not s7.contains("12.6.0") and not s7.contains("14.0.0")


def test_tensorrt_extra_is_cuda_python_for_cuda_12():
    # JetPack 6 (CUDA 12.6) and CUDA 12 desktops; a 13.x cuda-python fails cudaGetDevice on them.
    j6 = spec_of(requirements(("tensorrt",), "jetpack6"), "cuda-python")
    assert j6.contains("12.6.2.post1") and not j6.contains("12.8.0") and not j6.contains("13.0.0")
    x86 = spec_of(requirements(("tensorrt",), "x86_311"), "cuda-python")
    assert x86.contains("12.9.0") and not x86.contains("13.0.0") and not x86.contains("12.5.0")


@pytest.mark.parametrize("extras", [(), ("export", "dev"), ("desktop-gpu",)])
def test_desktop_and_ci_get_opencv_and_ort(extras):
    # scripts/bootstrap.sh and CI install ".[export,dev]" on x86-64: they must keep cv2 and ORT.
    reqs = requirements(extras, "x86_311")
    assert "opencv-python-headless" in names(reqs) and "onnxruntime" in names(reqs)
    assert spec_of(reqs, "numpy").contains("2.0.0")  # no cap off Jetson


def test_desktop_gpu_is_tensorrt_with_cuda12_and_never_lands_on_jetson():
    reqs = requirements(("desktop-gpu",), "x86_310")
    assert spec_of(reqs, "tensorrt-cu12").contains("10.3.0") and spec_of(reqs, "cuda-python").contains("12.6.0")
    assert not spec_of(reqs, "cuda-python").contains("13.0.0")  # tensorrt-cu12 needs the CUDA 12 runtime
    # The PyPI TensorRT wheel is built for discrete GPUs: a Jetson would get a TensorRT that cannot run.
    assert not {"tensorrt-cu12", "cuda-python"} & names(requirements(("desktop-gpu",), "jetpack6"))
    # cuda12: for a TensorRT that is already installed (NGC container): cuda-python 12 only.
    assert names(requirements(("cuda12",), "x86_310")) - names(requirements((), "x86_310")) == {"cuda-python"}
    assert "cuda-python" not in names(requirements(("cuda12",), "jetpack6"))


def test_cpu_extra_gives_generic_aarch64_a_runtime():
    reqs = requirements(("cpu",), "jetpack7")
    assert {"onnxruntime", "opencv-python-headless"} <= names(reqs)


def test_the_marker_strings_parse_with_pip_too():
    # pip's vendored packaging must read every marker (a typo makes the whole install fail).
    for s in PYPROJECT["dependencies"] + sum(PYPROJECT["optional-dependencies"].values(), []):
        r = Requirement(s)
        if r.marker is not None:
            Marker(str(r.marker))


# -- what the installs declare is what the code imports (pure) -----------------------------------

# The import name of each distribution `pip install .` and `pip install '.[export]'` ask for directly.
# A dependency added to either must be named here, and imported by the installed code.
IMPORT_NAMES = {"numpy": "numpy", "onnxruntime": "onnxruntime", "opencv-python-headless": "cv2", "pyyaml": "yaml",
                "tqdm": "tqdm", "threadpoolctl": "threadpoolctl", "torch": "torch", "onnx": "onnx",
                "polygraphy": "polygraphy"}


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _installed_imports() -> set[str]:
    """Top-level names every module of the installed packages imports (lazy imports included)."""
    import ast

    out: set[str] = set()
    for d in _setuptools()["package-dir"].values():
        for f in (ROOT / d).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    out |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("extras", [(), ("export",)])
def test_every_declared_dependency_is_imported(extras):
    declared = set().union(*(names(requirements(extras, t)) for t in TARGETS))
    unknown = sorted(declared - set(IMPORT_NAMES))
    assert not unknown, f"declared, but IMPORT_NAMES does not say what they import as: {unknown}"
    imported = _installed_imports()
    assert not sorted(d for d in declared if IMPORT_NAMES[d] not in imported), "declared but imported nowhere"


def test_import_names_match_the_installed_distributions():
    from importlib.metadata import PackageNotFoundError, distribution, packages_distributions

    provides = packages_distributions()
    checked = 0
    for dist, mod in IMPORT_NAMES.items():
        try:
            distribution(dist)
        except PackageNotFoundError:
            continue
        assert dist in {canonicalize_name(x) for x in provides.get(mod, [])}, (dist, mod)
        checked += 1
    assert checked >= 5  # the base install and torch/onnx are in every test environment


def test_every_package_folder_is_listed():
    """A subpackage missing from ``packages`` would be left out of the wheel (an editable install
    still finds it, so only this notices)."""
    cfg = _setuptools()
    found = set()
    for pkg, d in cfg["package-dir"].items():
        for init in (ROOT / d).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / d)
            found.add(".".join([pkg, *rel.parts]))
    assert {"atfr.runtime.video", "atfr.runtime.serving", "atfr.runtime.tensorrt"} <= found
    assert found == set(cfg["packages"])


# -- resolution by pip for the target platform (needs the package index) -----------------------

def _pip_resolve(reqs: list[str], target: str, binary_only: bool = True, no_deps: bool = False,
                 tmp: Path | None = None) -> dict[str, str]:
    _, plats, py = TARGETS[target]
    report = Path(tmp) / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--ignore-installed", "--report", str(report), "--target", str(Path(tmp) / "never-written")]
    if binary_only or no_deps:  # pip allows a foreign target only for wheels-only or no-deps resolves
        cmd += ["--python-version", py]
    if binary_only:
        cmd += ["--only-binary=:all:"] + [f"--platform={p}" for p in plats]
    if no_deps:
        cmd.append("--no-deps")
    p = subprocess.run(cmd + reqs, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        err = p.stderr
        if re.search(r"Connection|Temporary failure|Network is unreachable|Max retries|timed out|"
                     r"Could not fetch URL", err):
            pytest.skip(f"package index unreachable: {err.strip().splitlines()[-1][:160]}")
        raise AssertionError(f"pip could not resolve {reqs} for {target}:\n{err[-2000:]}")
    data = json.loads(report.read_text())
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in data["install"]}


@lru_cache(maxsize=1)
def _index_reachable() -> str | None:
    """None when pip can reach the index, else the reason (one line)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        try:
            _pip_resolve(["pyyaml"], "x86_311", tmp=Path(d))
        except pytest.skip.Exception as e:
            return str(e)
    return None


@pytest.fixture
def index(tmp_path):
    reason = _index_reachable()
    if reason:
        pytest.skip(reason)
    return tmp_path


@pytest.mark.parametrize("extras,target", [(("jetson",), "jetpack6"), (("jetson-thor",), "jetpack7")])
def test_pip_resolves_jetson_without_numpy2_or_pypi_opencv(index, extras, target):
    got = _pip_resolve([str(r) for r in requirements(extras, target)], target, tmp=index)
    assert Version(got["numpy"]) < Version("2"), got
    assert not set(got) & OPENCV_DISTS, got
    assert "onnxruntime" not in got and "torch" not in got, got
    cp = Version(got["cuda-python"])
    assert (cp.major, cp.minor) == ((12, 6) if target == "jetpack6" else (13, cp.minor)), got


@pytest.mark.parametrize("target", ["x86_310", "x86_311"])
def test_pip_resolves_desktop_cpu_with_opencv_and_ort(index, target):
    got = _pip_resolve([str(r) for r in requirements((), target)], target, tmp=index)
    assert "opencv-python-headless" in got and "onnxruntime" in got, got


@pytest.mark.slow  # builds sdist metadata (fvcore): ~15 s
def test_pip_resolves_ci_dev_extra_with_cv2(index):
    # What bootstrap/CI install besides torch (".[export,dev]"; torch's CUDA wheels are left out
    # of this dry run: bootstrap pins the CPU wheel itself).
    # fvcore ships only an sdist: resolve for this (x86-64) interpreter, sdists allowed.
    if TARGETS["x86_311"][0]["platform_machine"] != __import__("platform").machine():
        pytest.skip("resolves for this interpreter; CI's is x86-64")
    reqs = [str(r) for r in requirements(("dev",), "x86_311")]
    got = _pip_resolve(reqs, "x86_311", binary_only=False, tmp=index)
    assert {"opencv-python-headless", "onnxruntime", "pytest"} <= set(got), got


@pytest.mark.slow  # builds the tensorrt-cu12 sdist's metadata: ~15 s
def test_pip_resolves_desktop_gpu(index):
    reqs = requirements(("desktop-gpu",), "x86_310")
    trt = [str(r) for r in reqs if canonicalize_name(r.name) == "tensorrt-cu12"]
    rest = [str(r) for r in reqs if canonicalize_name(r.name) != "tensorrt-cu12"]
    got = _pip_resolve(rest, "x86_310", tmp=index)
    assert Version(got["cuda-python"]).major == 12 and "opencv-python-headless" in got, got
    # tensorrt-cu12 on the index is an sdist that pulls its libraries from NVIDIA's index at
    # install time: resolve the package itself (metadata only) here.
    got_trt = _pip_resolve(trt, "x86_310", binary_only=False, no_deps=True, tmp=index)
    assert Version("10.3") <= Version(got_trt["tensorrt-cu12"]) < Version("12"), got_trt
