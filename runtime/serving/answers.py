"""Error answers of ``atfr serve`` as one line. Torch-free.

PyTriton 0.7 turns a failed inference callable into tracebacks twice: in this process it sends
``traceback.format_exception`` of the callable's exception to the proxy model, and the proxy
model (PyTriton's ``model.py``, run by Triton's Python-backend stub) raises that text, catches it
and raises a ``TritonModelException`` holding its own traceback, with server paths. The client
got 17-29 lines. Two pieces undo that:

* ``RequestError`` formats as its one line ``atfr: MESSAGE`` under ``format_exception``;
* ``one_line_proxy`` loads, beside PyTriton's ``model.py``, a ``model.py`` that subclasses PyTriton's and answers every request of a failed batch with
  ``TritonError("atfr: MESSAGE")`` (Triton: HTTP 500 with that line) instead of raising.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from atfr.errors import ATFRError

LOG = logging.getLogger(__name__)


class RequestError(Exception):
    """A refused request. ``format_exception`` reads ``__traceback__`` (hidden here: no stack is
    printed) and prefixes the type's module unless it is ``builtins``: the text is ``atfr: MSG``."""

    __module__ = "builtins"
    __qualname__ = "atfr"

    @property  # type: ignore[override]
    def __traceback__(self) -> None:  # noqa: PLW3201
        return None


def refusal(e: BaseException, i: int, n: int) -> RequestError:
    """The one line for request ``i`` of a batch of ``n`` (PyTriton fails the whole batch)."""
    if isinstance(e, ATFRError):
        msg = str(e)
    else:  # a bug or a backend failure: the traceback goes to our log, never to the client
        LOG.error("request failed", exc_info=e)
        msg = f"internal error: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    return RequestError(f"request {i} of {n} in this batch: {msg}" if n > 1 else msg)


# Runs inside Triton's Python-backend stub, next to PyTriton's proxy model renamed.
PROXY_MODEL = '''"""atfr serve: PyTriton's proxy model, answering refused requests with their one line."""
import gc
import re

import triton_python_backend_utils as pb_utils

from .pytriton_model import TritonPythonModel as _PyTritonModel

# PyTriton wraps the callable's text in a traceback: "...TritonModelException: atfr: MESSAGE"
_LINE = re.compile(r"(?m)TritonModelException: (atfr: [^\\n]*)$")


class TritonPythonModel(_PyTritonModel):
    def execute(self, requests):
        try:
            return super().execute(requests)
        except pb_utils.TritonModelException as e:
            found = _LINE.search(str(e))
            if found is None:
                raise
            line = found.group(1)
        # PyTriton's failed execute() leaves its frame (holding the batch's inputs) in a reference
        # cycle with its exception: without a collection the stub kept a refused 384 MiB batch
        gc.collect()
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(line)) for _ in requests]
'''


def with_proxy(files: dict[str, bytes]) -> dict[str, bytes]:
    """PyTriton's model files (``file:VERSION/NAME`` -> bytes, as Triton's load API takes them) with
    PyTriton's ``model.py`` renamed ``pytriton_model.py`` and ours in its place."""
    out = dict(files)
    for key in [k for k in files if k.endswith("/model.py")]:
        out[key[:-len("model.py")] + "pytriton_model.py"] = out.pop(key)
        out[key] = PROXY_MODEL.encode()
    return out


@contextlib.contextmanager
def one_line_proxy() -> Iterator[None]:
    """Within the block, PyTriton's models load with the one-line proxy (``with_proxy``).

    PyTriton 0.7 offers no hook for the proxy model; ``Model.get_proxy_model_files`` (the files it
    sends with Triton's load request when ``Triton.run()`` loads the models) is wrapped for the
    block, around ``run()`` only."""
    from pytriton.models.model import Model

    original = Model.get_proxy_model_files

    def get_proxy_model_files(self: Any) -> dict[str, bytes]:
        return with_proxy(original(self))

    Model.get_proxy_model_files = get_proxy_model_files  # type: ignore[method-assign]
    try:
        yield
    finally:
        Model.get_proxy_model_files = original  # type: ignore[method-assign]
