"""atfr convert OFFICIAL.pyth -o OURS.pt: official checkpoint -> our self-describing format."""

from __future__ import annotations

import argparse

from atfr.errors import ATFRError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="official .pyth (cfg embedded or --config)")
    p.add_argument("-o", "--output", required=True, help="our checkpoint (.pt)")
    p.add_argument("--config", help="official config YAML when the checkpoint has no embedded cfg")
    p.add_argument("--labels", help="text file with one class name per line")
    p.add_argument("--force", action="store_true")


def run(args: argparse.Namespace) -> int:
    from atfr.fileio import check_writable
    from atfr.models.checkpoint import load_checkpoint, save_checkpoint

    check_writable(args.output, args.force)  # before loading: exists without --force, unwritable folder
    lm = load_checkpoint(args.source, args.config)
    labels = lm.labels
    if args.labels:
        try:
            with open(args.labels, encoding="utf-8") as f:
                labels = [ln.strip() for ln in f if ln.strip()]
        except OSError as e:
            raise ATFRError(f"cannot read labels {args.labels}: {e.strerror}") from None
        n = int(lm.cfg["MODEL"]["NUM_CLASSES"])
        if len(labels) != n:
            raise ATFRError(f"{args.labels} has {len(labels)} labels, the model has {n} classes")
    meta = dict(lm.meta, converted_from=str(args.source))
    save_checkpoint(args.output, lm.model, lm.cfg, labels, meta, force=args.force)
    print(f"wrote {args.output} ({lm.cfg['MODEL']['ARCH']}, {len(lm.model.sgs_specs)} SGS layer(s))")
    return 0
