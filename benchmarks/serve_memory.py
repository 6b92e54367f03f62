#!/usr/bin/env python
"""Memory of ``atfr serve`` before, during and after large raw-frames requests.

    python benchmarks/serve_memory.py EXPORT --python-env DIR [--side 4096] [--requests 3] [--concurrent 2]
                                      [--max-request-mib 1024]

Starts ``atfr serve EXPORT`` (127.0.0.1, free ports), sends ``--requests`` one-clip requests of
T frames of SIDE x SIDE one after the other, then ``--concurrent`` at once (the dynamic batcher
merges them into one batch), and after each step prints per process of the server's tree (atfr
serve, tritonserver, the Python-backend stubs and their helpers) the resident memory split into
anonymous and shared pages, and the server's files in /dev/shm (the Python backend's shared
memory region, PyTriton's tensor store). RSS counts a shared page in every process that maps it,
so the sum over processes overstates; the /dev/shm total is what the shared pools really hold.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from triton_load import free_ports  # this folder (sys.path[0] when run as a script)

ROOT = Path(__file__).resolve().parents[1]


def tree(root: int) -> dict[int, tuple[str, dict[str, int]]]:
    """PID -> (command name, {VmRSS, RssAnon, RssShmem} in MiB) for root and its descendants."""
    parent = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            parent[int(p.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
    keep, grew = {root}, True
    while grew:
        new = {pid for pid, pp in parent.items() if pp in keep and pid not in keep}
        keep |= new
        grew = bool(new)
    out = {}
    for pid in sorted(keep):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        mem = {ln.split(":")[0]: int(ln.split()[1]) // 1024 for ln in status.splitlines()
               if ln.startswith(("VmRSS", "RssAnon", "RssShmem"))}
        out[pid] = (comm, mem)
    return out


def shm_mib(serve_pid: int) -> dict[str, int]:
    """The server's files in /dev/shm, allocated MiB (du-like: st_blocks)."""
    out = {}
    for f in Path("/dev/shm").iterdir():
        if f.name.startswith((f"pytrtion{serve_pid}-", "psm_")):
            try:
                out[f.name[:24]] = f.stat().st_blocks * 512 // 2**20
            except OSError:
                pass
    return out


def report(tag: str, serve_pid: int) -> None:
    t = tree(serve_pid)
    rows = [f"{comm}({mem.get('VmRSS', 0)}/{mem.get('RssAnon', 0)}/{mem.get('RssShmem', 0)})"
            for comm, mem in t.values() if mem.get("VmRSS", 0) >= 20]
    shm = shm_mib(serve_pid)
    anon = sum(m.get("RssAnon", 0) for _, m in t.values())
    print(f"| {tag} | {sum(m.get('VmRSS', 0) for _, m in t.values())} | {anon} | {sum(shm.values())} | "
          f"{' '.join(rows)} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export")
    ap.add_argument("--python-env", help="a numpy<2 environment for the server (triton_env make-overlay)")
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--max-request-mib", type=int, default=1024, help="atfr serve's limit")
    args = ap.parse_args()
    import tritonclient.http as http

    py = str(Path(args.python_env) / "bin" / "python3") if args.python_env else sys.executable
    hp, gp, mp = free_ports(3)
    proc = subprocess.Popen([py, "-m", "atfr.cli", "serve", args.export, "--http-port", str(hp), "--grpc-port",
                             str(gp), "--metrics-port", str(mp), "--max-request-mib", str(args.max_request_mib)],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
    ready, info = threading.Event(), {}

    def drain() -> None:
        for ln in proc.stdout:
            if ln.startswith('{"ready"'):
                info.update(json.loads(ln))
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(180):
        proc.kill()
        print("atfr serve did not get ready", file=sys.stderr)
        return 1
    model = info["models"][1]
    url = info["http"]
    frames_per_clip = int(json.loads((Path(args.export) / "atfr.json").read_text())["input"]["num_frames"])
    x = np.zeros((1, frames_per_clip, args.side, args.side, 3), np.uint8)
    print(f"atfr serve {args.export}: {model}, requests of 1 clip x {frames_per_clip} x {args.side}^2 x 3 = "
          f"{x.nbytes / 2**20:.0f} MiB\n")
    print("| after | RSS sum MiB | anon sum MiB | /dev/shm MiB | process(RSS/anon/shmem MiB), >= 20 MiB |")
    print("|---|---|---|---|---|")
    report("start", proc.pid)

    def one(_: int) -> None:
        c = http.InferenceServerClient(url, network_timeout=600, connection_timeout=600)
        try:
            i = http.InferInput("frames", list(x.shape), "UINT8")
            i.set_data_from_numpy(x, binary_data=True)
            c.infer(model, [i])
        except Exception as e:  # noqa: BLE001 - refused (over --max-request-mib): say so, keep measuring
            print(f"refused: {str(e).strip()}")
        finally:
            c.close()

    try:
        for k in range(args.requests):
            one(k)
            report(f"request {k + 1}", proc.pid)
        time.sleep(5)
        report("5 s idle", proc.pid)
        if args.concurrent > 1:
            with ThreadPoolExecutor(args.concurrent) as ex:
                list(ex.map(one, range(args.concurrent)))
            report(f"{args.concurrent} at once", proc.pid)
            time.sleep(5)
            report("5 s idle", proc.pid)
    finally:
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
        print(f"\nSIGTERM: exit {rc} after {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
