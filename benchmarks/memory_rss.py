"""Peak RSS of the commands that read videos, on short vs long inputs, side by side (issue 12).

Commands: ``atfr calibrate --clips N``, ``atfr bench --videos``, ``atfr verify --precision fp32
--data --data-clips N`` and ``atfr predict`` (default 10x3 views) on the same folders; and
``atfr run --save --fast`` on a 4K video (set "4k": the footage upscaled to 3840x2160, ``--frames4k``
frames, mp4v), whose target is a peak of at most 1 GB (issue 22).

Target: ``atfr calibrate --clips 32`` and ``atfr bench --videos`` stay within 600 MB above the
loaded model, whatever the videos' length. Each command runs as a child process; its peak RSS is
the child's ``ru_maxrss`` (``os.wait4``). "model" is a child that loads the export on ONNX
Runtime and runs one clip: the floor every command pays.

Inputs (real footage, tests/footage.py): "short" = ``--copies`` copies of the video, "long" =
the same number of copies of the video concatenated ``--repeat`` times (re-encoded MJPG, same
frame size), so only the length differs.

    python benchmarks/memory_rss.py [--workdir /tmp/atfr-memory-rss] [--video vtest]
                                    [--copies 4] [--repeat 4] [--clips 32] [--checkpoint CKPT]
                                    [--atfr "/path/to/atfr"] [--sets short,long,4k] [--frames4k 100]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, wall seconds, exit code) of one child process."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss / 1024.0, time.perf_counter() - t0, p.returncode


def concat_video(src: Path, dst: Path, repeat: int) -> int:
    """``src`` ``repeat`` times in a row, as MJPG at the source fps and size; returns frames."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    vw = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    n = 0
    for _ in range(repeat):  # stream frame by frame: the benchmark's own memory stays flat too
        cap = cv2.VideoCapture(str(src))
        while True:
            ok, f = cap.read()
            if not ok:
                break
            vw.write(f)
            n += 1
        cap.release()
    vw.release()
    return n


def upscale_video(src: Path, dst: Path, frames: int, size: tuple[int, int] = (3840, 2160)) -> int:
    """The first ``frames`` frames of ``src`` resized to ``size`` (bicubic), mp4v at the source fps."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    vw = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    n = 0
    while n < frames:
        ok, f = cap.read()
        if not ok:
            break
        vw.write(cv2.resize(f, size, interpolation=cv2.INTER_CUBIC))
        n += 1
    cap.release()
    vw.release()
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/atfr-memory-rss")
    ap.add_argument("--video", default="vtest", help="a tests/footage.py name (default vtest: 795 frames 768x576)")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=4, help="the long input is the video this many times over")
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--sets", default="short,long,4k",
                    help="which inputs (a before-the-fix run on long ones needs about 17 GB: give 'short')")
    ap.add_argument("--frames4k", type=int, default=100, help="frames of the 4K video for atfr run --save")
    ap.add_argument("--checkpoint", help="default: the built-in demo model")
    ap.add_argument("--atfr", default=f"{shlex.quote(sys.executable)} -m atfr.cli",
                    help="how to run the CLI (e.g. another checkout's venv/bin/atfr, for a before/after)")
    ap.add_argument("--bench-args", default="--iters 5 --warmup 1 --no-progress",
                    help="extra bench arguments (timing length does not change its memory)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    from footage import find_video

    src = find_video(args.video)
    if src is None:
        print(f"memory_rss: real footage {args.video!r} not installed (scripts/bootstrap.sh)", file=sys.stderr)
        return 2
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    atfr = shlex.split(args.atfr)
    export = work / "export"
    if not (export / "atfr.json").exists():
        ckpt = args.checkpoint or str(ROOT / "atfr" / "assets" / "demo_atfr.pt")
        subprocess.run(atfr + ["export", ckpt, "-o", str(export), "--force"], check=True, stdout=subprocess.DEVNULL)
    sets: dict[str, tuple[Path, int]] = {}
    import cv2
    cap = cv2.VideoCapture(str(src))
    n_short = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    for name, rep in (("short", 1), ("long", args.repeat)):
        if name not in args.sets.split(",") or name == "4k":
            continue
        d = work / f"{name}_videos"
        if not d.exists():
            d.mkdir()
            first = d / f"copy0{src.suffix if rep == 1 else '.avi'}"
            if rep == 1:
                shutil.copy(src, first)
            else:
                concat_video(src, first, rep)
            for i in range(1, args.copies):
                shutil.copy(first, d / f"copy{i}{first.suffix}")
        sets[name] = (d, n_short * rep)

    py = shlex.quote(sys.executable)
    load = (f"{py} -c \"import numpy as np; from atfr.runtime.pipeline import Pipeline; "
            f"p = Pipeline.load('{export}'); p.infer([np.zeros(s, np.float32) for s in p.manifest.clip_shapes(1)])\"")
    rows = []
    floor, wall, rc = peak_rss(shlex.split(load), work / "model.log")
    rows.append(("model (load + 1 clip)", "-", "-", floor, 0.0, wall, rc))
    for name, (d, frames) in sets.items():
        cache = work / f"cache_{name}.json"
        cache.unlink(missing_ok=True)
        cmds = {
            f"calibrate --clips {args.clips}": atfr + ["calibrate", str(export), "--data", str(d), "--clips", str(args.clips),
                                                       "--cache", str(cache), "--no-progress", "--force"],
            "bench --videos": atfr + ["bench", str(export), "--videos", str(d), "--out", str(work / f"bench_{name}.json"),
                                      "--force"] + shlex.split(args.bench_args),
            f"verify --precision fp32 --data-clips {args.clips}": atfr + [
                "verify", str(export), "--precision", "fp32", "--data", str(d), "--data-clips", str(args.clips)],
            "predict (10x3 views)": atfr + ["predict", str(export), str(d)],
        }
        for label, cmd in cmds.items():
            rss, wall, rc = peak_rss(cmd, work / f"{label.split()[0]}_{name}.log")
            rows.append((label, name, f"{args.copies} x {frames}", rss, rss - floor, wall, rc))
    if "4k" in args.sets.split(","):
        v4k = work / f"4k_{args.frames4k}.mp4"
        if not v4k.exists():
            upscale_video(src, v4k, args.frames4k)
        cmd = atfr + ["run", str(export), "--source", str(v4k), "--save", str(work / "run4k_annotated.mp4"),
                      "--fast", "--force", "--backend", "onnxruntime"]
        rss, wall, rc = peak_rss(cmd, work / "run_4k.log")
        rows.append(("run --save --fast (3840x2160)", "4k", f"1 x {args.frames4k}", rss, rss - floor, wall, rc))
    print(f"peak RSS (MiB), {src.name} ({n_short} frames), export {export}, CLI: {args.atfr}")
    print(f"| command | videos | frames | peak RSS MiB | above model MiB | wall s | exit |")
    print("|---|---|---|---|---|---|---|")
    for label, name, frames, rss, above, wall, rc in rows:
        print(f"| {label} | {name} | {frames} | {rss:.0f} | {above:+.0f} | {wall:.1f} | {rc} |")
    # targets: 600 MiB above the model for the readers of video folders; 1 GB in all for run at 4K
    bad = [r for r in rows[1:] if (r[3] > 1000 if r[1] == "4k" else r[4] > 600) or r[6] != 0]
    if bad:
        print(f"memory_rss: {len(bad)} row(s) above target or failed (logs in {work})", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
