"""NVIDIA's own TensorRT and cuda-python bindings in the test environment (issue 23).

No TensorRT library and no GPU can be installed here, but NVIDIA's Python binding wheels can: the
``tensorrt-cu12-bindings`` wheels hold only the extension module ``tensorrt_bindings/tensorrt.so``,
which links nine C entry points of libnvinfer, libnvinfer_plugin and libnvonnxparser. With stub
libraries of those names (tests/stubs/*.c, built here with the system C compiler; every factory
returns null) the module imports, and its whole Python surface is NVIDIA's: classes, methods,
properties, enum members and each method's pybind signature in ``__doc__``. cuda-python imports as
is; a stub ``libcuda.so.1`` (no device; ``cuDriverGetVersion`` reports ``$ATFR_STUB_CUDA_DRIVER``)
lets its runtime calls return the error codes a machine without a GPU, or with an older driver, gives.

* ``python tests/real_bindings.py install`` (run by scripts/bootstrap.sh) installs each pinned
  version with ``pip install --no-deps --target`` into ``.cache/bindings/cpXY/<name>`` (gitignored;
  ``$ATFR_BINDINGS_CACHE`` moves it). Where the index is unreachable it says so and the tests skip.
* Tests import each version in a subprocess (``run_python``) with ``PYTHONPATH`` on its folder and
  ``LD_LIBRARY_PATH`` on the stubs; ``surface`` dumps a version's API as JSON for the conformance
  checks (tests/trt_conformance.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUB_SRC = Path(__file__).resolve().parent / "stubs"
PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"
CACHE = Path(os.environ.get("ATFR_BINDINGS_CACHE") or ROOT / ".cache" / "bindings") / PY_TAG


@dataclass(frozen=True)
class Pin:
    key: str  # what tests call it: "10.3", "cuda-12.6"
    requirements: tuple[str, ...]
    major: str  # the library soname major the stubs need (TensorRT), or the CUDA major
    why: str

    @property
    def folder(self) -> Path:
        return CACHE / self.requirements[0].replace("==", "-")


# JetPack 6.1/6.2 ships TensorRT 10.3; 10.16 is the newest 10.x; 11.4 the newest release. cuda-python
# 12.6 is JetPack 6's pin; 13.0 is JetPack 7's CUDA (cuda-python 13 is a metapackage over
# cuda-bindings, which needs cuda-pathfinder to find the CUDA libraries).
TRT_PINS = (
    Pin("10.3", ("tensorrt-cu12-bindings==10.3.0",), "10", "JetPack 6.1/6.2"),
    Pin("10.16", ("tensorrt-cu12-bindings==10.16.1.11",), "10", "newest 10.x"),
    Pin("11.4", ("tensorrt-cu12-bindings==11.4.0.106",), "11", "newest 11.x"),
)
CUDA_PINS = (
    Pin("cuda-12.6", ("cuda-python==12.6.2.post1",), "12", "JetPack 6"),
    Pin("cuda-13.0", ("cuda-python==13.0.3", "cuda-bindings==13.0.3", "cuda-pathfinder==1.3.0"), "13", "JetPack 7"),
)
PINS = {p.key: p for p in TRT_PINS + CUDA_PINS}
DONE = ".complete"
# `import tensorrt` (what atfr imports) resolves to the bindings module, as the full tensorrt wheel does.
SHIM = "import sys\nimport tensorrt_bindings\nsys.modules[__name__] = tensorrt_bindings\n"


# -- install (scripts/bootstrap.sh) ----------------------------------------------------------------

def installed(key: str) -> Path | None:
    p = PINS[key].folder
    return p if (p / DONE).exists() else None


def install(keys=None, python: str = sys.executable, quiet: bool = True) -> list[str]:
    """Install the pinned wheels that are not in the cache yet; returns one line per failure."""
    problems = []
    for key in keys or PINS:
        pin = PINS[key]
        if installed(key):
            continue
        tmp = pin.folder.with_name(pin.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-compile",
               "--target", str(tmp), *pin.requirements] + (["-q"] if quiet else [])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as e:
            problems.append(f"{key}: {e}")
            continue
        if p.returncode != 0:
            err = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR")] or p.stderr.splitlines()[-1:]
            problems.append(f"{key}: pip install {' '.join(pin.requirements)} failed: {(err or ['?'])[0][:200]}")
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        if (tmp / "tensorrt_bindings").is_dir():
            (tmp / "tensorrt").mkdir(exist_ok=True)
            (tmp / "tensorrt" / "__init__.py").write_text(SHIM)
        (tmp / DONE).write_text(" ".join(pin.requirements) + "\n")
        shutil.rmtree(pin.folder, ignore_errors=True)
        tmp.rename(pin.folder)
    return problems


# -- stub libraries --------------------------------------------------------------------------------

def build_stubs(out: Path, cc: str | None = None) -> dict[str, Path]:
    """Compile tests/stubs/*.c: {'10': dir, '11': dir} with libnvinfer*.so.N, and {'cuda': dir}
    with libcuda.so.1. Raises FileNotFoundError without a C compiler."""
    cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise FileNotFoundError("no C compiler (cc/gcc) to build the stub libraries")
    dirs = {}
    for major in ("10", "11"):
        d = out / f"trt{major}"
        d.mkdir(parents=True, exist_ok=True)
        for lib in ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser"):
            so = f"{lib}.so.{major}"
            subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / so), f"-Wl,-soname,{so}",
                            str(STUB_SRC / f"{lib}.c")], check=True, capture_output=True, timeout=120)
        dirs[major] = d
    d = out / "cuda"
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "libcuda.so.1"), "-Wl,-soname,libcuda.so.1",
                    str(STUB_SRC / "libcuda.c"), "-ldl"], check=True, capture_output=True, timeout=120)
    dirs["cuda"] = d
    return dirs


# -- running one version ---------------------------------------------------------------------------

def env_for(stubs: dict[str, Path], trt: str | None = None, cuda: str | None = None,
            driver: int | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a subprocess that imports the given versions (keys of PINS) over the stubs.

    ``driver``: the CUDA version the stub driver reports (12060 = 12.6); None: no libcuda at all."""
    env = dict(os.environ if base is None else base)
    path, libs = [], []
    if trt:
        path.append(str(PINS[trt].folder))
        libs.append(str(stubs[PINS[trt].major]))
    if cuda:
        path.append(str(PINS[cuda].folder))
    if driver is not None:
        libs.append(str(stubs["cuda"]))
        env["ATFR_STUB_CUDA_DRIVER"] = str(int(driver))
    env["PYTHONPATH"] = os.pathsep.join(path + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
                                                     if p])
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_python(args: list[str], env: dict[str, str], timeout: float = 120, cwd: Path | None = None):
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd)


# -- the surfaces of all versions, for the tests -----------------------------------------------------

CUDA_MODULES = {"rt": "cuda.bindings.runtime", "drv": "cuda.bindings.driver"}


def need(key: str) -> None:
    """Skip the calling test (with the reason) where ``key``'s wheels are not installed."""
    import pytest  # noqa: PLC0415

    if installed(key) is None:
        pytest.skip(f"{key} bindings ({' '.join(PINS[key].requirements)}) are not installed in {CACHE}: "
                    "run 'python tests/real_bindings.py install' (scripts/bootstrap.sh does; needs the package index)")


class Surfaces:
    """Each installed version's API dump (``surface``), made once per session in parallel subprocesses."""

    def __init__(self, stubs: dict[str, Path]):
        self.cache: dict[tuple[str, str], dict] = {}
        self.errors: dict[tuple[str, str], str] = {}
        jobs = [(p.key, "tensorrt") for p in TRT_PINS if installed(p.key)]
        jobs += [(p.key, m) for p in CUDA_PINS if installed(p.key) for m in CUDA_MODULES.values()]
        procs = {}
        for key, mod in jobs:
            env = env_for(stubs, trt=key if mod == "tensorrt" else None, cuda=None if mod == "tensorrt" else key)
            procs[(key, mod)] = subprocess.Popen([sys.executable, str(Path(__file__)), "surface", mod], env=env,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            if proc.returncode == 0:
                self.cache[k] = json.loads(out)
            else:
                self.errors[k] = err.strip().splitlines()[-1] if err.strip() else f"exit {proc.returncode}"

    def get(self, key: str, module: str) -> dict:
        import pytest  # noqa: PLC0415

        need(key)
        if (key, module) in self.errors:
            pytest.fail(f"{module} of {key} does not import over the stubs: {self.errors[(key, module)]}")
        return self.cache[(key, module)]

    def trt(self, key: str):
        import trt_conformance as tc  # noqa: PLC0415

        return {"trt": tc.Surface(self.get(key, "tensorrt"), "trt", f"TensorRT {key}")}

    def cuda(self, key: str):
        import trt_conformance as tc  # noqa: PLC0415

        return {k: tc.Surface(self.get(key, m), k, f"cuda-python {key.split('-')[1]} ({m})")
                for k, m in CUDA_MODULES.items()}


# -- the API surface (run inside the subprocess) ------------------------------------------------------

_IDENT = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{2,63}")


def _kind(obj) -> str:
    if isinstance(obj, type):
        return "enum" if hasattr(obj, "__members__") else "class"
    if isinstance(obj, property):
        return "property"
    if callable(obj):
        return "function"
    if type(obj).__name__ == "module":
        return "module"
    return "value"


def _describe(obj, depth: int) -> dict:
    kind = _kind(obj)
    d: dict = {"kind": kind}
    if kind in ("function",):
        d["doc"] = (getattr(obj, "__doc__", None) or "")[:4000]
    if kind in ("class", "enum") and depth < 2:
        members = {}
        for name in dir(obj):
            if name.startswith("__") and name not in ("__init__",):
                continue
            try:
                static = _static(obj, name)
            except AttributeError:
                continue
            k = _kind(static)
            if k == "property":
                members[name] = {"kind": "property", "doc": (static.fget.__doc__ or "")[:1000] if static.fget else "",
                                 "settable": static.fset is not None}
            elif k in ("class", "enum"):
                members[name] = _describe(static, depth + 1)
            elif k == "function" or type(static).__name__ in ("instancemethod", "staticmethod", "classmethod"):
                target = getattr(obj, name)
                members[name] = {"kind": "method", "doc": (getattr(target, "__doc__", None) or "")[:4000]}
            else:
                members[name] = {"kind": "value", "type": type(static).__name__}
        d["members"] = members
        if kind == "enum":
            d["enum_members"] = sorted(str(k) for k in obj.__members__)
    return d


def _static(obj, name):
    import inspect  # noqa: PLC0415

    return inspect.getattr_static(obj, name)


def surface(module: str) -> dict:
    import importlib  # noqa: PLC0415

    m = importlib.import_module(module)
    names = {n: _describe(getattr(m, n), 0) for n in dir(m) if not n.startswith("__")}
    out = {"module": module, "version": str(getattr(m, "__version__", "")), "names": names}
    so = [getattr(m, "__file__", "") or ""]
    if module == "tensorrt":
        so = [str(Path(m.__file__).parent / "tensorrt.so")]
    strings: set[str] = set()
    for f in so:
        if f.endswith(".so") and os.path.exists(f):
            data = Path(f).read_bytes()
            strings |= {s.decode() for s in _IDENT.findall(data) if s.islower() or b"_" in s}
    out["so_strings"] = sorted(strings)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["install"]:
        keys = sys.argv[2:] or list(PINS)
        bad = install(keys, quiet=True)
        for line in bad:
            print(f"real_bindings: {line}; the tests that need it will skip", file=sys.stderr)
        print(f"real_bindings: {len(keys) - len(bad)}/{len(keys)} binding sets in {CACHE}", file=sys.stderr)
    elif sys.argv[1:2] == ["surface"]:
        print(json.dumps(surface(sys.argv[2])))
    else:
        raise SystemExit("usage: real_bindings.py install [KEY...] | surface MODULE")
