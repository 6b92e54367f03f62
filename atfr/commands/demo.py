"""atfr demo: export the built-in demo model and run it on generated demo videos (ONNX Runtime).

What it shows: few temporal bins (B') on still clips, many on fast motion, the GFLOPs that saves
against the static model, and per-clip predictions with latency.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from importlib import resources
from pathlib import Path

from atfr.errors import ATFRError


def builtin_checkpoint() -> Path:
    return Path(str(resources.files("atfr").joinpath("assets/demo_atfr.pt")))


def next_command(export_dir: Path, video: Path, work: Path) -> str:
    """The suggested ``atfr run`` line, with absolute, shell-quoted paths: it works from any folder."""
    q = [shlex.quote(str(Path(p).resolve())) for p in (export_dir, video, work / "annotated.mp4")]
    return f"atfr run {q[0]} --source {q[1]} --save {q[2]} --print"


def _class_row(name: str, vals: list[tuple[float, float | None, float]], static: float | None) -> str:
    """One line of the per-class table: mean B', mean GFLOPs, the saving against the static model."""
    bp = sum(v[0] for v in vals) / len(vals)
    gs = [v[1] for v in vals if v[1] is not None]
    g = sum(gs) / len(gs) if gs else None
    lat = sum(v[2] for v in vals) / len(vals)
    gtxt = f"{g:.4f} GFLOPs  saved {100 * (1 - g / static):4.1f}%" if g and static else "-"
    return f"  {name:18s} B'={bp:5.2f}  {gtxt:30s} {lat:6.1f} ms"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="atfr-demo", help="where the export and demo videos go (default ./atfr-demo)")
    p.add_argument("--checkpoint", help="demo checkpoint (default: the built-in one)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "auto"])
    p.add_argument("--videos-per-class", type=int, default=3,
                   help="demo videos per class (default 3: one clip's B' varies, a class mean is telling)")
    p.add_argument("--force", action="store_true", help="re-export and regenerate the videos")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.streaming.runner import RunOptions, StreamRunner
    from atfr.demo.synth import CLASSES, write_demo_videos
    from atfr.runtime.manifest import MANIFEST_NAME, load_manifest
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.video.sources import FrameStream, open_reader

    from atfr.errors import check_range
    from atfr.fileio import check_output_dir

    check_range("--videos-per-class", args.videos_per_class, 1, 100)
    ckpt = Path(args.checkpoint) if args.checkpoint else builtin_checkpoint()
    if not ckpt.exists():
        raise ATFRError(f"demo model {ckpt} is missing; train it with 'atfr train-demo -o {ckpt}'")
    work = Path(args.workdir)
    check_output_dir(work)
    export_dir, video_dir = work / "export", work / "videos"
    t0 = time.perf_counter()
    if args.force or not (export_dir / MANIFEST_NAME).exists():
        from atfr.export.exporter import ExportOptions, export_model  # torch: only when exporting
        from atfr.models.checkpoint import load_checkpoint

        lm = load_checkpoint(ckpt)
        lm.meta.setdefault("source", str(ckpt))
        export_model(lm, export_dir, ExportOptions(force=args.force, name="demo_atfr"))
        print(f"exported {ckpt.name} -> {export_dir} ({time.perf_counter() - t0:.1f} s)")
    else:
        print(f"reusing the export in {export_dir} (pass --force to redo it)")
    m = load_manifest(export_dir, check=True)
    frames = 2 * m.input.num_frames * m.input.sampling_rate
    videos = sorted(video_dir.glob("*.avi")) + sorted(video_dir.glob("*.mp4"))
    if args.force or len(videos) < len(CLASSES) * args.videos_per_class:
        videos = write_demo_videos(video_dir, seed=0, n_per_class=args.videos_per_class, fps=m.input.target_fps,
                                   frames=frames, size=m.input.crop_size, force=True)
        print(f"wrote {len(videos)} demo videos -> {video_dir}")
    pl = Pipeline.load(export_dir, backend=args.backend)
    static = (m.gflops or {}).get("static")
    table = {tuple(r["bprime"]): r["total"] for r in (m.gflops or {}).get("vs_bprime", [])}
    print(f"model {m.name}: {m.arch}, {m.input.num_frames} frames x {m.input.crop_size}px, "
          f"B = {[l.bins for l in m.sgs]}, backend {pl.backend}"
          + (f", static model {static:.4f} GFLOPs/clip" if static else ""))
    rows = []
    for path in videos:
        print(f"{path.name}:")
        reader = open_reader(str(path), fallback_fps=m.input.target_fps)
        stream = FrameStream(reader, pace=False, lossless=True, max_retries=0)
        runner = StreamRunner(pl, stream, RunOptions(stride=m.input.num_frames * m.input.sampling_rate,
                                                     topk=1, lossless=True), status=sys.stdout)
        summ = runner.run()
        hist = summ.bprime_hist[0] if summ.bprime_hist else {}
        n = sum(hist.values()) or 1
        mean_bp = sum(int(k) * v for k, v in hist.items()) / n
        gfl = [table[(int(k),)] for k in hist for _ in range(hist[k]) if (int(k),) in table]
        rows.append((path.stem.rsplit("_", 1)[0], mean_bp, sum(gfl) / len(gfl) if gfl else None,
                     summ.mean_latency_ms))
    per_class: dict[str, list] = {}
    for name, bp, g, lat in rows:
        per_class.setdefault(name, []).append((bp, g, lat))
    print("\nper class: mean B', GFLOPs per clip, GFLOPs saved against the static model (B' = B), mean latency")
    for name, vals in per_class.items():
        print(_class_row(name, vals, static))
    print(_class_row("all clips", [v for vals in per_class.values() for v in vals], static))
    print(f"done in {time.perf_counter() - t0:.1f} s. Try: {next_command(export_dir, videos[0], work)}")
    return 0
