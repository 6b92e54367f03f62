#!/usr/bin/env python
"""Soak `atfr run` the way an unattended deployment runs it, then stop it with SIGTERM.

Runs ``atfr run EXPORT --source VIDEO --fast --stride 1 --save soak.mp4 --jsonl soak.jsonl`` in a
child process on real footage (OpenCV's vtest.avi, 768x576 MJPEG, played twice over when one pass
is shorter than the clips asked for), samples the child's resident memory, thread count and open
file descriptors from /proc while it runs, sends SIGTERM once ``--clips`` clips are logged, and
checks what the run leaves behind:

* exit code 0 and a summary ending "(ended: terminated)";
* the mp4 finalized (renamed from its temp file) and decodable, with as many frames as the
  summary says were read; no temp file in the output folder;
* the jsonl complete: every line parses, clips numbered 0..N-1, N = the summary's clip count;
* RSS flat after warm-up (growth from the sample at ``--warmup`` clips to the last one before
  SIGTERM <= ``--max-growth``), and the thread and fd counts constant after warm-up.

    python benchmarks/soak_run.py [--export DIR] [--video PATH] [--clips 1000] [--work DIR]

Without ``--export`` it exports the built-in demo model into WORK (torch needed once). Prints the
command, the load average before/after, a table of samples and one line per check; exits 1 when a
check fails. ``tests/test_soak.py`` runs a short version in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass
class Sample:
    t: float
    clips: int
    rss_mib: float
    threads: int
    fds: int


def proc_sample(pid: int) -> tuple[float, int, int] | None:
    """(VmRSS MiB, threads, open fds) of a live process, None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rss = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    threads = re.search(r"^Threads:\s+(\d+)", status, re.M)
    if rss is None or threads is None:  # a zombie (exited, not yet reaped) has no VmRSS
        return None
    return int(rss.group(1)) / 1024, int(threads.group(1)), fds


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def video_frames(path: Path) -> tuple[int, float]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n, fps


def long_enough(video: Path, frames_needed: int, work: Path) -> Path:
    """``video`` itself, or WORK/<name>_xK.avi: the video K times over (re-encoded MJPEG), when
    one pass has fewer frames than the run needs. Still real footage, just looped."""
    import cv2

    n, fps = video_frames(video)
    if n >= frames_needed:
        return video
    k = -(-frames_needed // n)
    out = work / f"{video.stem}_x{k}.avi"
    if out.exists() and video_frames(out)[0] == k * n:
        return out
    tmp = out.with_suffix(".tmp.avi")
    wr = None
    for _ in range(k):
        cap = cv2.VideoCapture(str(video))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            if wr is None:
                wr = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), fps, (f.shape[1], f.shape[0]))
            wr.write(f)
        cap.release()
    wr.release()
    os.replace(tmp, out)
    return out


def demo_export(work: Path) -> Path:
    out = work / "demo_export"
    if not (out / "atfr.json").exists():
        ckpt = ROOT / "atfr" / "assets" / "demo_atfr.pt"
        subprocess.run([sys.executable, "-m", "atfr.cli", "export", str(ckpt), "-o", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def window_frames(export: Path, fps: float) -> int:
    import math

    spec = json.loads((export / "atfr.json").read_text())["input"]
    return math.ceil(spec["num_frames"] * spec["sampling_rate"] * fps / spec["target_fps"])


def thread_names(pid: int) -> list[str]:
    try:
        return sorted(Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task"))
    except (FileNotFoundError, ProcessLookupError):
        return []


def soak(export: Path, video: Path, clips: int, work: Path, warmup: int, interval: float = 0.5,
         max_growth: float = 0.05, timeout: float = 1800.0, backend: str = "onnxruntime",
         fast: bool = True, out=sys.stdout) -> bool:
    """Run the soak; print the table and the checks to ``out``; True when every check passed."""
    work.mkdir(parents=True, exist_ok=True)
    _, fps = video_frames(video)
    source = long_enough(video, clips + window_frames(export, fps) + 50, work)
    res = work / "out"
    res.mkdir(exist_ok=True)
    for f in res.iterdir():
        f.unlink()
    mp4, jsonl = res / "soak.mp4", res / "soak.jsonl"
    cmd = [sys.executable, "-m", "atfr.cli", "run", str(export), "--source", str(source), "--backend", backend,
           *(["--fast"] if fast else []), "--stride", "1", "--save", str(mp4), "--jsonl", str(jsonl)]
    print("command:", shlex.join(["atfr", *cmd[3:]]), file=out)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)", file=out)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[Sample] = []
    names: dict[int, list[str]] = {}  # thread names at each new thread count (to name a leak)
    sent = None
    try:
        while proc.poll() is None and time.monotonic() - t0 < timeout:
            n = count_lines(jsonl)
            s = proc_sample(proc.pid)
            if s is not None:
                samples.append(Sample(time.monotonic() - t0, n, *s))
                names.setdefault(s[1], thread_names(proc.pid))
            if sent is None and n >= clips:
                proc.send_signal(signal.SIGTERM)
                sent = time.monotonic() - t0
            time.sleep(interval)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.monotonic() - t0
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; wall {wall:.1f} s, "
          f"SIGTERM at {sent if sent is None else round(sent, 1)} s", file=out)

    # the table: about 12 rows spread over the run, plus the last sample before SIGTERM
    before = [s for s in samples if sent is None or s.t < sent]
    step = max(1, len(before) // 12)
    rows = before[::step] + ([before[-1]] if before and before[-1] not in before[::step] else [])
    print(f"\n{'t (s)':>7} {'clips':>6} {'RSS MiB':>8} {'threads':>7} {'fds':>4}", file=out)
    for s in rows:
        print(f"{s.t:7.1f} {s.clips:6d} {s.rss_mib:8.1f} {s.threads:7d} {s.fds:4d}", file=out)

    checks: list[tuple[bool, str]] = []

    def check(ok: bool, text: str) -> None:
        checks.append((bool(ok), text))

    m = re.search(r"summary: (\d+) clip\(s\) from (\d+) frame\(s\) in ([\d.]+) s \(ended: (\S+)\)", stdout)
    check(sent is not None, f"SIGTERM sent after {clips} clips were logged")
    check(proc.returncode == 0, f"exit code {proc.returncode} (0 expected)")
    check(m is not None and m.group(4) == "terminated", f"summary ends 'terminated': {m.group(0) if m else stdout[-200:]!r}")
    check("Traceback" not in stderr, "no traceback on stderr")
    left = sorted(p.name for p in res.iterdir())
    check(left == ["soak.jsonl", "soak.mp4"], f"output folder holds exactly soak.jsonl, soak.mp4: {left}")
    if m:
        n_clips, n_frames = int(m.group(1)), int(m.group(2))
        events = []
        try:
            events = [json.loads(line) for line in jsonl.read_text().splitlines()]
            parsed = True
        except (ValueError, OSError):
            parsed = False
        check(parsed and [e["clip"] for e in events] == list(range(n_clips)),
              f"jsonl complete: {len(events)} parsed lines, clips 0..{n_clips - 1}")
        check(n_clips >= clips, f"{n_clips} clips >= {clips}")
        got = video_frames(mp4)[0] if mp4.exists() else 0
        check(got == n_frames, f"mp4 finalized and decodable: {got} frames = {n_frames} read")
    warm = [s for s in before if s.clips >= warmup]
    if len(warm) >= 2:
        growth = (warm[-1].rss_mib - warm[0].rss_mib) / warm[0].rss_mib
        check(growth <= max_growth, f"RSS flat: {warm[0].rss_mib:.1f} MiB at {warm[0].clips} clips -> "
                                    f"{warm[-1].rss_mib:.1f} MiB at {warm[-1].clips} clips ({100 * growth:+.2f}%, "
                                    f"limit {100 * max_growth:+.0f}%)")
        th = {s.threads for s in warm}
        fd = {s.fds for s in warm}
        check(len(th) == 1, f"threads constant after warm-up: {sorted(th)}"
                            + ("" if len(th) == 1 else f" ({', '.join(f'{k}: {names.get(k)}' for k in sorted(th))})"))
        check(len(fd) == 1, f"open fds constant after warm-up: {sorted(fd)}")
    else:
        check(False, f"enough samples after warm-up ({len(warm)})")
    print("", file=out)
    for ok, text in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}", file=out)
    if m:
        print("\n" + "\n".join(ln for ln in stdout.splitlines() if ln.startswith(("summary", "  latency", "  model",
                                                                                  "  dropped"))), file=out)
    return all(ok for ok, _ in checks)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, help="export folder (default: the built-in demo model, exported into WORK)")
    p.add_argument("--video", type=Path, default=VTEST, help=f"real footage (default {VTEST})")
    p.add_argument("--clips", type=int, default=1000, help="clips before SIGTERM (default 1000)")
    p.add_argument("--warmup", type=int, help="clips before the RSS/threads/fds baseline (default clips/10)")
    p.add_argument("--work", type=Path, default=Path("soak-work"), help="working folder (default ./soak-work)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between /proc samples")
    p.add_argument("--max-growth", type=float, default=0.05, help="RSS growth allowed after warm-up (default 0.05)")
    a = p.parse_args(argv)
    if not a.video.is_file():
        print(f"soak_run: {a.video} not found (apt-get install opencv-doc, or pass --video)", file=sys.stderr)
        return 2
    export = a.export or demo_export(a.work)
    ok = soak(export, a.video, a.clips, a.work, a.warmup or max(1, a.clips // 10), a.interval, a.max_growth)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
