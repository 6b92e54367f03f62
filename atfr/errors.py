"""One error type for bad input: the CLI turns it into a single line and an exit code."""

from __future__ import annotations


class ATFRError(Exception):
    """A user-facing error. ``str(err)`` is the one line the CLI prints.

    exit_code follows a small convention so scripts can tell failures apart:
    2 bad input / usage, 3 accuracy or verification failure, 4 missing
    dependency or incompatible engine/plugin, 5 runtime source failure (camera, stream).
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class VerificationError(ATFRError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=3)


class DependencyError(ATFRError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=4)


class SourceError(ATFRError):
    def __init__(self, message: str):
        super().__init__(message, exit_code=5)


def check_range(flag: str, value: float | None, lo: float | None = None, hi: float | None = None,
                unit: str = "") -> None:
    """One-line ATFRError (exit 2) for a numeric option outside [lo, hi]; None means unset."""
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = (f"{lo}..{hi}" if lo is not None and hi is not None
                else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ATFRError(f"{flag} {value}: must be {span}{' ' + unit if unit else ''}")
