"""Progress for long work: a tqdm bar when stderr is a terminal, else a one-line report every
``every_s`` seconds (logs and CI keep a readable trace instead of carriage-return soup).

    from atfr.progress import progress
    with progress(clips, "calibrate front", unit="clip") as bar:
        for c in bar:
            ...
            bar.write("a line for stdout")   # does not tear the bar

Short work (under ``every_s``) prints nothing when stderr is not a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator, TextIO


class Progress:
    def __init__(self, iterable: Iterable[Any], desc: str, total: int | None = None, unit: str = "it",
                 enabled: bool = True, every_s: float = 10.0, stream: TextIO | None = None) -> None:
        self.iterable, self.desc, self.unit, self.every_s = iterable, desc, unit, every_s
        self.stream = stream or sys.stderr
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.done = 0
        self._bar = None
        self._enabled = enabled
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        if tty:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=self.stream)
        self._t0 = self._last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:  # a plain ``for x in progress(...)`` loop closes the bar too
            self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self._enabled and now - self._last >= self.every_s:
            self._last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        el = (now or time.monotonic()) - self._t0
        rate = self.done / el if el > 0 else 0.0
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            eta = f", ~{left:.0f} s left" if left == left else ""
            return (f"{self.desc}: {self.done}/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%), "
                    f"{el:.0f} s{eta}")
        return f"{self.desc}: {self.done} {self.unit}s, {el:.0f} s"

    def write(self, text: str, file: TextIO | None = None) -> None:
        """Print a line without breaking the bar."""
        out = file or sys.stdout
        if self._bar is not None:
            from tqdm import tqdm
            tqdm.write(text, file=out)
        else:
            print(text, file=out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(iterable: Iterable[Any], desc: str, total: int | None = None, unit: str = "it",
             enabled: bool = True, every_s: float = 10.0, stream: TextIO | None = None) -> Progress:
    """See the module docstring. ``enabled=False``: iterate silently (``--no-progress``)."""
    return Progress(iterable, desc, total, unit, enabled, every_s, stream)
