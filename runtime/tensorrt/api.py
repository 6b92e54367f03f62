"""The ``tensorrt`` module itself: import it with a one-line error, and a logger that keeps errors.

Written against the TensorRT 10.3-11.x Python API; not executed in this repository's CI.
"""

from __future__ import annotations

import sys
from typing import Any

from atfr.errors import DependencyError

TRT_MISSING = ("TensorRT is not installed here (pip install tensorrt on x86_64; JetPack ships python3-libnvinfer); "
               "'atfr build' needs it (the ONNX Runtime backend needs no build)")


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt  # noqa: PLC0415
    except ImportError:
        raise DependencyError(TRT_MISSING) from None
    return trt


def make_logger(trt: Any, verbose: bool = False) -> Any:
    """A trt.ILogger that keeps the errors (for one-line failures) and prints warnings when verbose."""

    class Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg).strip())
            elif verbose and int(severity) <= int(trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return Logger()


def first_line(s: str, n: int = 220) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."
