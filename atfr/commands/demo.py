"""atfr demo: export the built-in demo model and run it on generated demo videos (ONNX Runtime).

What it shows: few temporal bins (B') on still clips, many on fast motion, the GFLOPs that saves
against the static model, and per-clip predictions with latency. Then the built-in AdaFuse-TSN
demo model on the same videos and clips (atfr/demo/adafuse_demo.py): per class its skip/reuse/keep
fractions and the Eq. 5 GFLOPs it saves against its static TSN twin; and both models' held-out
accuracy as recorded in their checkpoints when they were trained.
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


def builtin_adafuse_checkpoint() -> Path:
    return Path(str(resources.files("atfr").joinpath("assets/demo_adafuse.pt")))


HELDOUT_NAME = "heldout.json"  # beside each export: the checkpoint's recorded held-out statistics


def _export_once(ckpt: Path, export_dir: Path, name: str, force: bool) -> None:
    """Export ``ckpt`` unless ``export_dir`` holds an export; record its held-out statistics beside it
    (the checkpoint's meta needs torch to read, the reused export does not)."""
    from atfr.runtime.manifest import MANIFEST_NAME

    t0 = time.perf_counter()
    if not force and (export_dir / MANIFEST_NAME).exists():
        print(f"reusing the export in {export_dir} (pass --force to redo it)")
        return
    from atfr.export.exporter import ExportOptions, export_model  # torch: only when exporting
    from atfr.fileio import write_json_atomic
    from atfr.models.checkpoint import load_checkpoint

    lm = load_checkpoint(ckpt)
    lm.meta.setdefault("source", str(ckpt))
    export_model(lm, export_dir, ExportOptions(force=force, name=name))
    keys = ("heldout_accuracy", "heldout_split", "heldout_clips_per_class", "per_class", "seed", "command")
    write_json_atomic(export_dir.parent / f"{export_dir.name}.{HELDOUT_NAME}",
                      {k: lm.meta[k] for k in keys if k in lm.meta})
    print(f"exported {ckpt.name} -> {export_dir} ({time.perf_counter() - t0:.1f} s)")


def _heldout(export_dir: Path) -> dict:
    import json

    p = export_dir.parent / f"{export_dir.name}.{HELDOUT_NAME}"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


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
    p.add_argument("--adafuse-checkpoint", metavar="PT",
                   help="AdaFuse demo checkpoint shown after the ATFR model (default: the built-in one)")
    p.add_argument("--no-adafuse", action="store_true", help="show the ATFR model only")
    p.add_argument("--force", action="store_true", help="re-export and regenerate the videos")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.streaming.runner import RunOptions, StreamRunner
    from atfr.demo.synth import CLASSES, write_demo_videos
    from atfr.runtime.manifest import load_manifest
    from atfr.runtime.pipeline import Pipeline
    from atfr.runtime.video.sources import FrameStream, open_reader

    from atfr.errors import check_range
    from atfr.fileio import check_output_dir

    check_range("--videos-per-class", args.videos_per_class, 1, 100)
    ckpt = Path(args.checkpoint) if args.checkpoint else builtin_checkpoint()
    if not ckpt.exists():
        raise ATFRError(f"demo model {ckpt} is missing; train it with 'atfr train-demo -o {ckpt}'")
    if not args.no_adafuse:
        _adafuse_checkpoint(args)  # a missing one fails before the ATFR half runs
    work = Path(args.workdir)
    check_output_dir(work)
    export_dir, video_dir = work / "export", work / "videos"
    t0 = time.perf_counter()
    _export_once(ckpt, export_dir, "demo_atfr", args.force)
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
    if not args.no_adafuse:
        _adafuse_part(args, work, videos)
    print(f"\nheld-out accuracy (recorded at training): {_accuracy_text(_heldout(export_dir))} ATFR"
          + ("" if args.no_adafuse else f", {_accuracy_text(_heldout(work / 'export_adafuse'))} AdaFuse"))
    print(f"done in {time.perf_counter() - t0:.1f} s. Try: {next_command(export_dir, videos[0], work)}")
    return 0


def _accuracy_text(h: dict) -> str:
    if "heldout_accuracy" not in h:
        return "-"
    n = h.get("heldout_clips_per_class")
    return f"{100 * h['heldout_accuracy']:.1f}%" + (f" ({n} clips per class)" if n else "")


def _adafuse_checkpoint(args: argparse.Namespace) -> Path:
    ckpt = Path(args.adafuse_checkpoint) if args.adafuse_checkpoint else builtin_adafuse_checkpoint()
    if not ckpt.exists():
        raise ATFRError(f"AdaFuse demo model {ckpt} is missing; train it with "
                        f"'atfr train-demo --family adafuse -o {ckpt}' (or pass --no-adafuse)")
    return ckpt


def _adafuse_part(args: argparse.Namespace, work: Path, videos: list[Path]) -> None:
    """The AdaFuse demo model on the same videos and clips: per-class policy fractions and savings."""
    from atfr.demo.adafuse_demo import class_row, video_clips
    from atfr.runtime.adafuse_clip import AdaFuseClipRunner, is_adafuse_export

    ckpt = _adafuse_checkpoint(args)
    export_dir = work / "export_adafuse"
    print()
    _export_once(ckpt, export_dir, "demo_adafuse", args.force)
    if not is_adafuse_export(export_dir):
        raise ATFRError(f"{export_dir} does not hold an AdaFuse export ({ckpt} is not an AdaFuse model?); "
                        "pass an AdaFuse checkpoint with --adafuse-checkpoint and --force, or --no-adafuse")
    runner = AdaFuseClipRunner.load(export_dir, "onnxruntime")
    m = runner.manifest
    static = float(m.raw["gflops"]["static_official"])
    print(f"model {m.name}: AdaFuse-{m.raw['adafuse']['variant']}-R{m.raw['adafuse']['depth']}, "
          f"{m.input.num_frames} frames (every {m.input.sampling_rate}) x {m.input.crop_size}px, "
          f"{len(m.raw['adafuse']['policy_blocks'])} gated blocks, static TSN {static:.4f} GFLOPs/clip "
          "(official convention)")
    per_class: dict[str, list] = {}
    for path in videos:
        name = path.stem.rsplit("_", 1)[0]
        per_class.setdefault(name, []).extend(video_clips(runner, path, name))
    print("per class: mean skip/reuse/keep fractions (all gated blocks, frames, channels), Eq. 5 GFLOPs per "
          "clip, GFLOPs saved against the static TSN, top-1 hits")
    for name, clips in per_class.items():
        print(class_row(name, clips, static))
    print(class_row("all clips", [c for cl in per_class.values() for c in cl], static))
