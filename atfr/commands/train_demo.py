"""``atfr train-demo``: train a built-in demo model on generated videos (CPU, a few minutes):
the ATFR model (default) or, with ``--family adafuse``, the AdaFuse-TSN model."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from atfr.errors import ATFRError
from atfr.fileio import check_writable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt",
                   help="checkpoint to write (our self-describing format)")
    p.add_argument("--family", choices=["atfr", "adafuse"], default="atfr",
                   help="which demo model: atfr (3DResNet-18 + SGS, default) or adafuse (AdaFuse-TSN-R18)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, batch order and data (default 0)")
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs, each on freshly generated clips (default: the demo recipe)")
    p.add_argument("--train-per-class", type=int, default=None, metavar="N",
                   help="training clips per class and epoch (default: the demo recipe)")
    p.add_argument("--heldout-per-class", type=int, default=None, metavar="N",
                   help="held-out clips per class for the reported accuracy (default: the demo recipe)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--kernel", choices=["linear", "linear_normalized", "delta", "delta_normalized"],
                   help="SGS kernel (default: the demo recipe's)")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="first epochs with SGS bypassed (default: the demo recipe's, 10)")
    p.add_argument("--final-kernel", choices=["none", "linear", "linear_normalized", "delta", "delta_normalized"],
                   help="kernel of the last SGS phase, which the saved model uses ('none': no such phase; "
                        "default: the demo recipe's, linear)")
    p.add_argument("--final-epochs", type=int, default=None,
                   help="epochs of the last SGS phase (default: the demo recipe's)")
    p.add_argument("--sgs-lr-scale", type=float, default=None,
                   help="peak learning rate of the SGS phase relative to the first phase")
    p.add_argument("--force", action="store_true", help="overwrite OUT.pt if it exists")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix not in (".pt", ".pth", ".pyth"):
        raise ATFRError(f"output {out} should end in .pt")
    if out.exists() and out.is_dir():
        raise ATFRError(f"output {out} is a directory")
    check_writable(out, args.force)  # fail before minutes of training, not after
    if out.parent != Path("") and out.parent.exists() and not out.parent.is_dir():
        raise ATFRError(f"output folder {out.parent} is not a directory")
    for name in ("epochs", "train_per_class", "heldout_per_class", "threads", "final_epochs"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ATFRError(f"--{name.replace('_', '-')} must be >= 1, got {v}")

    if args.family == "adafuse":
        return _run_adafuse(args, out)
    from atfr.demo import synth
    from atfr.demo.train import RECIPE, train_demo
    from atfr.models.checkpoint import save_checkpoint

    kw = dict(RECIPE)
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.train_per_class is not None:
        kw["n_train_per_class"] = args.train_per_class
    if args.heldout_per_class is not None:
        kw["n_val_per_class"] = args.heldout_per_class
    if args.kernel:
        kw["overrides"] = {**kw.get("overrides", {}), "kernel": args.kernel}
    if args.sgs_lr_scale is not None:
        kw["sgs_lr_scale"] = args.sgs_lr_scale
    if args.warmup_epochs is not None:
        if args.warmup_epochs < 0:
            raise ATFRError(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
        kw["warmup_epochs"] = args.warmup_epochs
    if args.final_kernel is not None:
        kw["final_kernel"] = None if args.final_kernel == "none" else args.final_kernel
    if args.final_epochs is not None:
        kw["final_epochs"] = args.final_epochs
    if kw.get("final_kernel") and kw.get("final_epochs", 0) >= kw["epochs"] - kw["warmup_epochs"]:
        raise ATFRError(f"--final-epochs {kw['final_epochs']} leaves no epochs for the first SGS phase "
                        f"({kw['epochs']} epochs, {kw['warmup_epochs']} without SGS)")
    cmd = ["atfr", "train-demo", "-o", str(out), "--seed", str(args.seed), "--epochs", str(kw["epochs"])]
    if args.kernel:
        cmd += ["--kernel", args.kernel]
    if args.sgs_lr_scale is not None:
        cmd += ["--sgs-lr-scale", str(args.sgs_lr_scale)]
    if args.warmup_epochs is not None:
        cmd += ["--warmup-epochs", str(args.warmup_epochs)]
    if args.final_kernel is not None:
        cmd += ["--final-kernel", args.final_kernel]
    if args.final_epochs is not None:
        cmd += ["--final-epochs", str(args.final_epochs)]
    if args.train_per_class is not None:
        cmd += ["--train-per-class", str(args.train_per_class)]
    if args.heldout_per_class is not None:
        cmd += ["--heldout-per-class", str(args.heldout_per_class)]
    res = train_demo(seed=args.seed, threads=args.threads, command=" ".join(shlex.quote(c) for c in cmd), **kw)
    p = save_checkpoint(out, res.model, res.cfg, list(synth.CLASSES), res.meta, force=args.force)
    size = p.stat().st_size
    print(f"wrote {p} ({size / 1e6:.2f} MB): held-out accuracy {res.meta['heldout_accuracy']:.4f}, "
          f"mean B' {res.meta['mean_bprime']:.2f}")
    return 0


ATFR_ONLY = ("kernel", "warmup_epochs", "final_kernel", "final_epochs", "sgs_lr_scale")


def _run_adafuse(args: argparse.Namespace, out: Path) -> int:
    given = [f"--{k.replace('_', '-')}" for k in ATFR_ONLY if getattr(args, k) is not None]
    if given:
        raise ATFRError(f"{', '.join(given)}: ATFR options; the AdaFuse demo model has no SGS layer")
    from atfr.demo import synth
    from atfr.demo.train_adafuse import RECIPE, train_adafuse_demo
    from atfr.models.checkpoint import save_checkpoint

    kw = dict(RECIPE)
    cmd = ["atfr", "train-demo", "--family", "adafuse", "-o", str(out), "--seed", str(args.seed),
           "--threads", str(args.threads)]
    for name, key in (("epochs", "epochs"), ("train_per_class", "n_train_per_class"),
                      ("heldout_per_class", "n_val_per_class")):
        if getattr(args, name) is not None:
            kw[key] = getattr(args, name)
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    res = train_adafuse_demo(seed=args.seed, threads=args.threads, command=" ".join(shlex.quote(c) for c in cmd), **kw)
    p = save_checkpoint(out, res.model, res.cfg, list(synth.CLASSES), res.meta, force=args.force)
    f = res.meta["fractions"]
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB): held-out accuracy {res.meta['heldout_accuracy']:.4f}, "
          f"skip/reuse/keep {f['skip']:.3f}/{f['reuse']:.3f}/{f['keep']:.3f}, GFLOPs saved vs TSN "
          f"{res.meta['gflops_saved_vs_static']:.1%}")
    return 0
