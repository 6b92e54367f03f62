"""Locating nvcc, shared by the plugin compile tests and the GPU harness tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def find_nvcc() -> str | None:
    env = os.environ.get("ATFR_NVCC")
    if env:
        return env
    for cand in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if cand and Path(cand).exists():
            return cand
    return None
