"""Bounded BLAS threads for the runtime's numpy work, scoped to the call. Torch-free.

numpy's BLAS (OpenBLAS/MKL) starts one thread per core for a matmul. The SGS step's matmul is
tiny ([B',T] x [T,C*H*W]) and runs between two ONNX Runtime graphs that already use every core,
so extra BLAS threads only contend with them (measured: benchmarks/runtime_speed.py). The limit
is set with threadpoolctl around the runtime's own numpy calls and restored after, so the
user's process keeps its BLAS settings; environment variables would leak into it (and only work
before numpy is first imported).
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

DEFAULT_BLAS_THREADS = 1


class BlasLimit:
    """``with limit():`` caps BLAS threads at ``threads`` for the block (None or 0: no cap).

    The library scan (threadpoolctl's ``ThreadpoolController``, ~1 ms) happens once, on first
    use; each ``limit()`` then costs a few microseconds. Without threadpoolctl installed the
    block runs unbounded (``available`` is False) - a speed knob, not a correctness one.
    """

    def __init__(self, threads: int | None = DEFAULT_BLAS_THREADS):
        self.threads = int(threads) if threads else None
        self._controller: Any = None
        self.available: bool | None = None  # None: not probed yet

    def _get(self) -> Any:
        if self.available is None:
            try:
                from threadpoolctl import ThreadpoolController
                self._controller = ThreadpoolController()
                self.available = True
            except Exception:  # noqa: BLE001 - ImportError, or a platform threadpoolctl cannot scan
                self.available = False
        return self._controller

    def limit(self) -> ContextManager[Any]:
        if not self.threads:
            return contextlib.nullcontext()
        ctl = self._get()
        if ctl is None:
            return contextlib.nullcontext()
        return ctl.limit(limits=self.threads, user_api="blas")

    def describe(self) -> str:
        if not self.threads:
            return "BLAS threads: library default"
        self._get()
        return f"BLAS threads: {self.threads} in the SGS step" + ("" if self.available else " (threadpoolctl missing: not applied)")
