"""The Triton server process's environment, for the ``tritonserver`` that ships in the
``nvidia-pytriton`` wheel (Triton 2.51 with the Python backend). Torch-free.

Two traps, both in the Python backend's stub process (``triton_python_backend_stub`` embeds
CPython and runs every Python-backend model, PyTriton's proxy included):

* the stub finds ``libpython3.X.so`` through the dynamic linker. Where the interpreter is a
  separate build from the system's (pyenv, conda, a venv over either), the linker picks the
  system library and model initialisation dies in ``multiprocessing.resource_tracker``
  (``'_thread.RLock' object has no attribute '_recursion_count'``). Fix: the interpreter's own
  ``sysconfig LIBDIR`` first on ``LD_LIBRARY_PATH``.
* the stub's interpreter is the first ``python3`` on ``PATH`` (its ``pyvenv.cfg`` decides the
  site-packages) and it must have numpy < 2: the 2.51 stub reads the numpy 1.x descriptor layout,
  so with numpy 2 every output tensor arrives empty ("output tensor shape does not match size of
  output"). This is why nvidia-pytriton pins numpy < 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atfr.errors import DependencyError

STUB_NUMPY_HINT = ("Triton's Python backend stub (nvidia-pytriton 0.7 / Triton 2.51) needs numpy < 2 in the "
                   "serving environment; install 'atfr-deploy[serve]' into a fresh venv (it pins numpy<2)")


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError:
        raise DependencyError("nvidia-pytriton is not installed (pip install 'atfr-deploy[serve]')") from None
    return Path(pytriton.__file__).resolve().parent


def pytriton_libs() -> Path:
    """The wheel's bundled shared libraries (libtritonserver, CUDA runtime stubs, OpenSSL)."""
    return pytriton_root().parent / "nvidia_pytriton.libs"


def libpython_dir(python: str | Path | None = None) -> str:
    """LIBDIR of the interpreter the stub will run (``python``, default: this one)."""
    if python is None or Path(python).absolute() == Path(sys.executable).absolute():
        return str(sysconfig.get_config_var("LIBDIR") or "")
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def numpy_major(python: str | Path | None = None) -> int:
    if python is None or Path(python).absolute() == Path(sys.executable).absolute():
        import numpy as np
        return int(np.__version__.split(".")[0])
    out = subprocess.run([str(python), "-c", "import numpy; print(numpy.__version__)"],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise DependencyError(f"{python}: numpy does not import; {STUB_NUMPY_HINT}")
    return int(out.stdout.strip().split(".")[0])


def check_stub_numpy(python: str | Path | None = None) -> None:
    major = numpy_major(python)
    if major >= 2:
        where = python or sys.executable
        raise DependencyError(f"{where} has numpy {major}.x; {STUB_NUMPY_HINT}")


def prepend_path(env: dict[str, str], var: str, *dirs: str) -> None:
    parts = [d for d in dirs if d] + [p for p in env.get(var, "").split(os.pathsep) if p]
    seen: list[str] = []
    for p in parts:
        if p not in seen:
            seen.append(p)
    env[var] = os.pathsep.join(seen)


def server_env(python_env: str | Path | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a ``tritonserver`` whose Python-backend stub runs ``python_env``'s interpreter
    (a venv or prefix; default: this process's)."""
    env = dict(os.environ if base is None else base)
    prefix = Path(python_env) if python_env else Path(sys.exec_prefix)
    python = prefix / "bin" / "python3"
    prepend_path(env, "LD_LIBRARY_PATH", libpython_dir(python if python_env else None), str(pytriton_libs()))
    prepend_path(env, "PATH", str(prefix / "bin"))
    return env


@dataclass
class BundledServer:
    binary: Path
    backends: Path


def prepare_bundled_server(workdir: str | Path, python_env: str | Path | None = None) -> BundledServer:
    """Copy the wheel's backends into ``workdir`` with the stub for the stub interpreter's Python
    version next to ``libtriton_python.so`` (where the Python backend looks for it)."""
    root = pytriton_root() / "tritonserver"
    prefix = Path(python_env) if python_env else Path(sys.exec_prefix)
    if python_env:
        out = subprocess.run([str(prefix / "bin" / "python3"), "-c",
                              "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, timeout=60)
        version = out.stdout.strip()
    else:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise DependencyError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    backends = Path(workdir) / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(root / "backends", backends)
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return BundledServer(root / "bin" / "tritonserver", backends)


def start_bundled_server(repo: str | Path, workdir: str | Path, host: str = "127.0.0.1", http_port: int = 8000,
                         grpc_port: int = 8001, metrics_port: int = 8002, python_env: str | Path | None = None,
                         log: Any = None, exit_timeout_s: int = 10) -> "subprocess.Popen[bytes]":
    """Start the wheel's ``tritonserver`` on a repository (``atfr triton-repo --flavor python``).
    The caller owns the process: SIGINT/SIGTERM stop it gracefully."""
    check_stub_numpy(Path(python_env) / "bin" / "python3" if python_env else None)
    srv = prepare_bundled_server(workdir, python_env)
    cmd = [str(srv.binary), f"--model-repository={Path(repo).resolve()}", f"--backend-directory={srv.backends}",
           f"--http-address={host}", f"--http-port={http_port}", f"--grpc-address={host}",
           f"--grpc-port={grpc_port}", f"--metrics-address={host}", f"--metrics-port={metrics_port}",
           "--allow-gpu-metrics=false", f"--exit-timeout-secs={exit_timeout_s}", "--strict-readiness=true"]
    return subprocess.Popen(cmd, env=server_env(python_env), stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=True)


OVERLAY_PACKAGES = ("numpy<2", "nvidia-pytriton", "ml_dtypes>=0.5,<0.6")  # tritonclient imports ml_dtypes


def make_overlay_env(dest: str | Path, timeout_s: float = 600) -> Path:
    """A numpy<2 environment for the server's stub over THIS environment (dev/CI helper).

    Where this environment needs numpy 2 (other packages), the stub still needs numpy < 2: a venv
    without pip whose own site-packages hold ``OVERLAY_PACKAGES`` (installed with this
    environment's pip, no dependencies) and that sees this environment's site-packages after
    them (a .pth file). Pass it as ``python_env`` or run ``atfr serve`` with its ``bin/python3``.
    Needs the package index (or pip's cache)."""
    import site

    d = Path(dest)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(d)], check=True, timeout=120)
    py = d / "bin" / "python3"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", purelib, *OVERLAY_PACKAGES],
                       capture_output=True, text=True, timeout=timeout_s)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise DependencyError(f"cannot install {' '.join(OVERLAY_PACKAGES)} into {d}: {last}")
    lines = [f"import site; site.addsitedir({p!r})" for p in site.getsitepackages()]
    (Path(purelib) / "zz_atfr_base_env.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


if __name__ == "__main__":  # python -m atfr.runtime.serving.triton_env make-overlay DIR
    if len(sys.argv) == 3 and sys.argv[1] == "make-overlay":
        print(make_overlay_env(sys.argv[2]))
    else:
        print("usage: python -m atfr.runtime.serving.triton_env make-overlay DIR", file=sys.stderr)
        sys.exit(2)
