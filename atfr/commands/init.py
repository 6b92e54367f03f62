"""``atfr init CONFIG -o CKPT``: a checkpoint with seeded random (or zero) weights from a config.

For benchmarking an architecture before anyone has trained it: ``atfr init`` then ``atfr info``
(GFLOPs), ``atfr export`` + ``atfr bench`` (latency, throughput) or ``atfr build`` (TensorRT);
``atfr init CONFIG -o CKPT --export OUT`` does the export too, so ``atfr bench OUT`` follows.
CONFIG is a file (our compact JSON/YAML or an official yacs YAML dump) or inline compact JSON,
e.g. ``'{"arch": "x3d", "variant": "S"}'``.

The checkpoint's meta says ``untrained: true``; ``atfr export`` copies that into the manifest,
and every command that loads such a checkpoint or export prints one warning line on stderr
(:func:`warn_if_untrained`, called by the CLI), because its predictions mean nothing.

This module imports nothing heavy at import time: the CLI calls :func:`warn_if_untrained` for
every command, including ``atfr run`` on a Jetson without torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atfr.errors import ATFRError

UNTRAINED_KEY = "untrained"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="config file (compact JSON/YAML or official YAML) or inline compact JSON")
    p.add_argument("-o", "--output", required=True, help="checkpoint to write (.pt)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--seed", type=int, default=0, help="seed of the PyTorch default initialisation (default 0)")
    g.add_argument("--zeros", action="store_true",
                   help="all parameters zero (BN statistics keep mean 0 / var 1): deterministic, "
                        "every clip gives B' = 1")
    p.add_argument("--labels", help="class names: a text file with one per line, or a comma-separated list")
    p.add_argument("--export", metavar="OUTDIR", help="also export it (as 'atfr export CKPT -o OUTDIR'), so "
                   "'atfr bench OUTDIR' is the only other command needed")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint (and export)")


def parse_config(text_or_path: str) -> dict[str, Any]:
    """Config dict (official keys) from a file or inline compact JSON."""
    from atfr.models import config as C

    s = text_or_path.strip()
    if s.startswith("{"):
        try:
            raw = json.loads(s)
        except json.JSONDecodeError as e:
            raise ATFRError(f"inline config is not valid JSON ({e.msg} at column {e.colno})") from None
        return C.from_compact(raw)
    if not Path(text_or_path).exists():
        raise ATFRError(f"config {text_or_path} does not exist (pass a file or inline JSON such as "
                        "'{\"arch\": \"x3d\", \"variant\": \"S\"}')")
    return C.load_config_file(text_or_path)


def parse_labels(spec: str | None, num_classes: int) -> list[str]:
    if not spec:
        return []
    p = Path(spec)
    if p.exists():
        try:
            labels = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise ATFRError(f"cannot read labels {spec}: {e}") from None
    elif "," in spec or num_classes == 1:
        labels = [v.strip() for v in spec.split(",")]
    else:
        raise ATFRError(f"--labels {spec}: no such file (or pass a comma-separated list)")
    if len(labels) != num_classes:
        raise ATFRError(f"--labels has {len(labels)} names, the model has {num_classes} classes")
    return labels


def init_checkpoint(cfg: dict[str, Any], output: str | Path, seed: int | None = 0, zeros: bool = False,
                    labels: list[str] | None = None, force: bool = False, source: str = "") -> Path:
    """Build the model from ``cfg`` with seeded default init (or zeros) and save it, marked untrained."""
    import torch

    from atfr.fileio import check_writable
    from atfr.models.checkpoint import save_checkpoint
    from atfr.models.zoo import build_model

    check_writable(output, force)  # before building a large model
    torch.manual_seed(int(seed or 0))
    model = build_model(cfg).eval()
    if zeros:
        with torch.no_grad():
            for prm in model.parameters():
                prm.zero_()
    meta = {UNTRAINED_KEY: True, "init": "zeros" if zeros else f"pytorch default, seed {int(seed or 0)}",
            "created_by": "atfr init", "config_source": source}
    return save_checkpoint(output, model, cfg, labels or [], meta, force=force)


def run(args: argparse.Namespace) -> int:
    cfg = parse_config(args.config)
    labels = parse_labels(args.labels, int(cfg["MODEL"]["NUM_CLASSES"]))
    src = args.config if not args.config.strip().startswith("{") else "inline JSON"
    out = init_checkpoint(cfg, args.output, args.seed, args.zeros, labels, args.force, src)
    from atfr.models.config import input_spec
    spec = input_spec(cfg)
    print(f"wrote {out}: {cfg['MODEL']['ARCH']}, {cfg['MODEL']['NUM_CLASSES']} classes, "
          f"{spec.num_frames}x{spec.crop_size}^2 input, SGS stage {cfg['MODEL']['TEMPORAL_LAYER_STAGE']}, "
          f"{'zero' if args.zeros else f'random (seed {args.seed})'} weights")
    print("  untrained: for GFLOPs, export, latency and throughput only; its predictions mean nothing")
    if args.export:
        from atfr.export.exporter import ExportOptions, export_model
        from atfr.models.checkpoint import load_checkpoint
        lm = load_checkpoint(out)
        lm.meta.setdefault("source", str(out))
        export_model(lm, args.export, ExportOptions(force=args.force, name=Path(str(out)).stem))
        nxt = (f"atfr infer {args.export} --input CLIP.npy --json" if cfg["MODEL"]["ARCH"] == "adafuse"
               else f"atfr bench {args.export} [--throughput]")
        print(f"exported to {args.export}; next: {nxt}")
    else:
        print(f"  next: atfr info {out}; atfr export {out} -o EXPORT; atfr bench EXPORT [--throughput]")
    return 0


# -- the warning every later command prints ------------------------------------------------------

def untrained_source(path: str | Path) -> bool:
    """True if ``path`` is an export whose manifest, or one of our checkpoints whose meta, says
    untrained. Cheap: a JSON read, or a memory-mapped torch.load (tensors are not read)."""
    p = Path(path)
    try:
        if p.is_dir():
            from atfr.runtime.export_paths import inside

            mf = inside(p, "atfr.json", "the manifest")  # a link leaving the folder is not read (load_manifest says why)
            return mf.is_file() and bool(json.loads(mf.read_text(encoding="utf-8")).get(UNTRAINED_KEY))
        if not p.is_file():
            return False
        with open(p, "rb") as f:
            if f.read(4) != b"PK\x03\x04":  # torch.save's zip container; videos, clips, YAML are not
                return False
        if "torch" not in sys.modules:
            import importlib.util
            if importlib.util.find_spec("torch") is None:
                return False
        import zipfile

        import torch
        with zipfile.ZipFile(p) as z:  # the pickle record's CRC first (zipfile checks it on read), then unpickle
            for name in z.namelist():
                if name.endswith("/data.pkl"):
                    z.read(name)
        d = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        return isinstance(d, dict) and isinstance(d.get("meta"), dict) and bool(d["meta"].get(UNTRAINED_KEY))
    except Exception:  # noqa: BLE001 - informative only: the command itself reports bad input
        return False


# Argument names under which commands take a checkpoint or an export folder.
_PATH_ARGS = ("checkpoint", "source", "outdir", "export", "torch", "static")


def warn_if_untrained(command: str, args: argparse.Namespace, stream: Any = None) -> bool:
    """Print one stderr line if any checkpoint/export the command was given is untrained."""
    if command == "init":
        return False
    for name in _PATH_ARGS:
        v = getattr(args, name, None)
        if isinstance(v, str) and v and untrained_source(v):
            print(f"atfr {command}: warning: {v} holds an untrained model (atfr init): timings and GFLOPs "
                  "are real, its predictions mean nothing", file=stream or sys.stderr)
            return True
    return False
