"""runtime/serving/stop.py without a server: the process-tree ending that ``atfr serve`` relies on.
(The server itself under SIGTERM: tests/test_serve.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atfr.runtime.serving.stop import StopBudget, end_session, server_session, session_members

# fast deadlines for these toy trees (the real budget is StopBudget())
FAST = StopBudget(drain_s=0, term_s=0.3, kill_s=0.8, join_s=1.0)


def _session(script: str) -> subprocess.Popen:
    p = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    t0 = time.monotonic()
    while len(session_members(p.pid)) < 1 and time.monotonic() - t0 < 5:
        time.sleep(0.02)
    return p


def test_real_budget_fits_dockers_grace():
    b = StopBudget()
    # docker sends SIGKILL 10 s after SIGTERM; the stop must end by 8 s, each phase after the last
    assert 0 < b.drain_s < b.term_s < b.kill_s < b.join_s <= 8.0


def test_end_session_kills_a_child_that_ignores_sigterm():
    # the leader dies on SIGTERM; its child ignores SIGTERM (SIG_IGN survives exec, so its
    # sleeps do too), as the orphaned Python-backend stub did
    p = _session('sh -c \'trap "" TERM; while :; do sleep 0.05; done\' & wait')
    time.sleep(0.2)
    assert len(session_members(p.pid)) >= 2
    t0 = time.monotonic()
    assert end_session(p.pid, t0, FAST) == "killed"
    assert time.monotonic() - t0 < FAST.kill_s + 0.6
    assert session_members(p.pid) == []
    p.wait(5)


def test_end_session_removes_the_shared_memory_of_a_killed_tree(tmp_path):
    """A stub killed with SIGKILL cannot unlink its /dev/shm regions: end_session does."""
    name = f"atfr-test-{os.getpid()}-{time.monotonic_ns()}"
    code = ("import mmap, signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"f = open('/dev/shm/{name}', 'w+b'); f.truncate(65536)\n"
            "m = mmap.mmap(f.fileno(), 65536); m[:5] = b'hello'\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    other = Path("/dev/shm") / f"{name}-not-mapped"  # a file the tree does not map stays
    other.write_bytes(b"x")
    try:
        t_end = time.monotonic() + 10
        while not (Path("/dev/shm") / name).exists() and time.monotonic() < t_end:
            time.sleep(0.02)
        time.sleep(0.3)  # mapped by now
        assert end_session(p.pid, time.monotonic(), FAST) == "killed"
        assert not (Path("/dev/shm") / name).exists()
        assert other.exists()
    finally:
        other.unlink()
        (Path("/dev/shm") / name).unlink(missing_ok=True)
        p.wait(5)


def test_end_session_terminates_then_waits_for_nothing():
    p = _session("sleep 60")
    t0 = time.monotonic()
    assert end_session(p.pid, t0, FAST) == "terminated"
    assert session_members(p.pid) == []
    p.wait(5)
    q = _session("sleep 0.1")  # a tree that ends by itself within the budget is left to do so
    assert end_session(q.pid, time.monotonic(), FAST) == "exited"
    q.wait(5)


def test_server_session_starts_sh_commands_in_a_session_of_their_own():
    sh = pytest.importorskip("sh", reason="sh comes with nvidia-pytriton")
    probe = ["-c", "import os; print(os.getsid(0) == os.getpid())"]
    with server_session():
        inside = str(sh.Command(sys.executable)(*probe)).strip()
    outside = str(sh.Command(sys.executable)(*probe)).strip()
    assert (inside, outside) == ("True", "False")
