"""Logging for the CLI: quiet by default, third-party chatter only at ``-v`` / ``ATFR_DEBUG=1``.

Stdlib ``logging`` only. Modules log through ``get_logger(__name__)``; ``cli_session`` is the one
place that decides what reaches stderr, for the duration of one command, and restores every
setting it touched afterwards (no global state beyond logging's own, so in-process callers and
tests see no difference between commands).

* default: our own warnings (``atfr`` logger at WARNING and above, ``warnings.warn`` from atfr
  modules) reach stderr as one line each; Python warnings from libraries (torch UserWarnings,
  onnx/polygraphy deprecations) are dropped;
* verbose: the ``atfr`` logger from DEBUG up, and every Python warning (one line each).

OpenCV's own log lines (``[ WARN:0@1.2] ... Stream timeout triggered``, ``Failed to write frame``)
are silenced the same way (``opencv_log``): they show only at ``-v``, or at the level the user set
in OPENCV_LOG_LEVEL. Failures they hint at are reported by the command itself, as one line.

``quiet_stdout`` catches what libraries ``print`` to stdout (ONNX Runtime's quantizer prints
"Collecting tensor data and making histogram ..." per clip) and sends it to the log at DEBUG, so
it shows only at ``-v`` and never mixes with a command's own stdout (JSON lines, CSV paths).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from typing import Iterator, TextIO

ROOT = "atfr"


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger under the ``atfr`` hierarchy (``atfr.models.checkpoint`` ...)."""
    if not name or name == ROOT:
        return logging.getLogger(ROOT)
    return logging.getLogger(name if name.startswith(ROOT + ".") else f"{ROOT}.{name}")


def debug_env() -> bool:
    return os.environ.get("ATFR_DEBUG") == "1"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is *now* (pytest's capsys swaps it between tests)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


@contextlib.contextmanager
def cli_session(command: str, verbose: bool) -> Iterator[logging.Logger]:
    """Route logs and warnings for one CLI command; everything is restored on exit."""
    log = logging.getLogger(ROOT)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"atfr {command}: %(message)s"))
    saved = (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING)
    log.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):  # one line per warning
        text = (str(message).strip().splitlines() or [category.__name__])[0]
        if verbose:
            log.warning("warning: %s (%s, %s:%s)", text, category.__name__, os.path.basename(filename), lineno)
        else:
            log.warning("warning: %s", text)

    with warnings.catch_warnings(), opencv_log(verbose):  # restores filters and showwarning on exit
        warnings.showwarning = show
        if verbose:
            warnings.simplefilter("default")
        else:
            # Libraries' warnings (torch, onnx, polygraphy, ORT) are noise to a user; ours are not.
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"atfr(\.|$)")
        try:
            yield log
        finally:
            log.removeHandler(handler)
            log.setLevel(saved[0])
            log.propagate = saved[1]


@contextlib.contextmanager
def opencv_log(verbose: bool) -> Iterator[None]:
    """OpenCV's log silent for the block unless ``verbose`` or the user set OPENCV_LOG_LEVEL.

    Before cv2 is imported, OpenCV takes its level from OPENCV_LOG_LEVEL (read when it loads), so
    the variable is set for the block; once imported, its level is set directly. Both are put back
    afterwards (in-process callers and tests see no difference between commands)."""
    if verbose or "OPENCV_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["OPENCV_LOG_LEVEL"] = "SILENT"
    logging_ = _cv_logging()
    old = logging_.getLogLevel() if logging_ is not None else None
    if logging_ is not None:
        logging_.setLogLevel(logging_.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        os.environ.pop("OPENCV_LOG_LEVEL", None)
        logging_ = _cv_logging()
        if logging_ is not None:  # imported during the block: back to OpenCV's default (WARNING)
            logging_.setLogLevel(old if old is not None else logging_.LOG_LEVEL_WARNING)


def _cv_logging():
    """cv2.utils.logging when cv2 is already imported (never imports it: most commands do not)."""
    cv2 = sys.modules.get("cv2")
    return getattr(getattr(cv2, "utils", None), "logging", None)


class _LogWriter(io.TextIOBase):
    """A text stream that turns each written line into a DEBUG record."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        self._log, self._prefix, self._buf = logger, prefix, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for ln in lines:
            if ln.strip():
                self._log.debug("%s%s", self._prefix, ln.rstrip())
        return len(s)

    def flush(self) -> None:
        if self._buf.strip():
            self._log.debug("%s%s", self._prefix, self._buf.rstrip())
        self._buf = ""


@contextlib.contextmanager
def quiet_stdout(what: str = "", logger: logging.Logger | None = None) -> Iterator[TextIO]:
    """Send Python-level stdout of a library call to the log (DEBUG), e.g.::

        with quiet_stdout("onnxruntime"):
            quantize_static(...)

    Yields the real stdout, for output the caller does want to print inside the block.
    """
    real = sys.stdout
    w = _LogWriter(logger or get_logger("thirdparty"), f"{what}: " if what else "")
    try:
        with contextlib.redirect_stdout(w):
            yield real
    finally:
        w.flush()
