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
