"""Stopping ``atfr serve`` like a service: drain, then end the server's whole process tree. Torch-free.

PyTriton starts ``tritonserver`` as a child of this process, and the server starts one
``triton_python_backend_stub`` per model instance. Left to PyTriton, a SIGTERM under load went
wrong: Triton kept serving requests that arrived on open keep-alive connections until its exit
timeout (10 s), then cut the in-flight ones, the exit came after docker's grace, and a stub that
outlived its server was orphaned (parent PID 1; it ignores SIGTERM). So:

* the server starts in a session of its own (``server_session``): its stubs stay in it, so the
  whole tree can be ended at once, and a terminal's Ctrl+C reaches only ``atfr serve``, which
  then stops the tree in order instead of the stubs dying under in-flight requests;
* on a signal, ``drain_and_end`` first unloads the models (Triton refuses new requests for a model
  that is unloading, on every connection, and lets the accepted ones finish), then has PyTriton
  stop the server (SIGINT: new connections refused, so readiness probes fail; the server exits
  once the in-flight requests are done or its exit timeout passes), and ends the session's
  leftovers with SIGTERM and then SIGKILL at fixed deadlines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence


@dataclass(frozen=True)
class StopBudget:
    """Seconds after the signal (docker's grace is 10 s; the whole stop stays under 8 s)."""

    drain_s: int = 4  # Triton's --exit-timeout-secs: in-flight requests and the unload get this long
    term_s: float = 6.0  # then the server's session gets SIGTERM (a stub left unloading ignores it)
    kill_s: float = 6.5  # and SIGKILL
    join_s: float = 7.6  # PyTriton's clean-up (its proxies, ~1 s per model) is waited for until then


@contextlib.contextmanager
def server_session() -> Iterator[None]:
    """Within the block, PyTriton's ``sh`` starts commands in a new session (``setsid``).

    PyTriton 0.7 starts ``tritonserver`` with ``sh`` and no way to ask for a session; ``sh``'s
    per-class defaults are the one hook. Only ``Triton.run()`` runs inside this block (one
    command, from this thread), and the old default is restored after it."""
    import sh

    defaults = sh.Command._call_args
    old = defaults["new_session"]
    defaults["new_session"] = True
    try:
        yield
    finally:
        defaults["new_session"] = old


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after ``pid (comm)``: state, ppid, pgrp, session, ..."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    out = []
    for pid in _pids():
        f = _stat(pid)
        if f is not None and int(f[3]) == sid and f[0] != "Z":
            out.append(pid)
    return out


def child_named(name: str, parent: int | None = None) -> int | None:
    """PID of a child of ``parent`` (default: this process) whose command name is ``name``."""
    parent = os.getpid() if parent is None else parent
    for pid in _pids():
        f = _stat(pid)
        if f is None or int(f[1]) != parent or f[0] == "Z":
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name[:15]:
                return pid
        except OSError:
            continue
    return None


def unload_models(http: str, names: Sequence[str], token: str | None, timeout_s: float = 1.0) -> None:
    """Ask Triton to unload ``names`` (explicit model control, as PyTriton runs it; PyTriton restricts
    the repository API to its access ``token``). Triton starts the unload and answers; the model
    refuses new requests from then on and finishes the accepted ones. Errors are ignored: the
    SIGINT that follows stops the server anyway."""
    for name in names:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["triton-access-token"] = token
        req = urllib.request.Request(f"http://{http}/v2/repository/models/{name}/unload", data=b"{}",
                                     method="POST", headers=headers)
        try:
            urllib.request.urlopen(req, timeout=timeout_s).close()
        except (OSError, urllib.error.URLError):
            pass


def _wait_gone(sid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not session_members(sid):
            return True
        time.sleep(0.05)
    return not session_members(sid)


def shm_files(pids: Sequence[int]) -> set[Path]:
    """Files under /dev/shm that ``pids`` map (not yet unlinked)."""
    out: set[Path] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)  # address perms offset dev inode [path]
            path = parts[5] if len(parts) == 6 else ""
            if path.startswith("/dev/shm/") and not path.endswith(" (deleted)"):
                out.add(Path(path))
    return out


def end_session(sid: int, t0: float, budget: StopBudget) -> str:
    """Wait for session ``sid`` to empty, then SIGTERM and SIGKILL it at ``t0`` + the budget's
    deadlines. Returns how it ended: "exited", "terminated" or "killed".

    A killed server cannot unlink its shared memory (the Python backend's regions, PyTriton's
    tensor store: up to the largest batch each, kept in RAM until reboot outside a container), so
    the /dev/shm files its processes mapped are removed once they are gone."""
    if _wait_gone(sid, t0 + budget.term_s):
        return "exited"
    mapped = shm_files(session_members(sid))
    try:
        return _terminate(sid, t0, budget)
    finally:
        for f in mapped:
            with contextlib.suppress(OSError):
                f.unlink()


def _terminate(sid: int, t0: float, budget: StopBudget) -> str:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signal.SIGTERM)  # the session leader's group: the server and its stubs
    for pid in session_members(sid):  # anything that changed group inside the session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    if _wait_gone(sid, t0 + budget.kill_s):
        return "terminated"
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(sid, time.monotonic() + 0.5)
    return "killed"


def drain_and_end(server_pid: int, http: str, models: Sequence[str], token: str | None, t0: float,
                  budget: StopBudget, stop_server: Callable[[], object]) -> str:
    """The stop sequence (see the module's docstring) for a server leading its own session.

    ``stop_server`` is PyTriton's own stop (SIGINT to the server, wait, then clean up its proxies
    and workspace): it runs in a thread of its own, and the session's deadlines bound it."""
    unload_models(http, models, token)
    stopper = threading.Thread(target=stop_server, name="atfr-serve-stop", daemon=True)
    stopper.start()
    how = end_session(server_pid, t0, budget)
    stopper.join(max(0.0, t0 + budget.join_s - time.monotonic()))
    return how
