"""The one CLI, ``atfr``. Each subcommand lives in ``atfr/commands/<name>.py`` and is imported
only when used, so ``atfr run`` on a Jetson never imports torch.

Every failure the user can cause ends as one line on stderr and a non-zero exit code; set
ATFR_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help). Order is the order shown in --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("atfr.commands.init", "a checkpoint with random weights from a config, to benchmark before training"),
    "info": ("atfr.commands.info", "architecture, parameters, SGS layers and GFLOPs per B'"),
    "infer": ("atfr.commands.infer", "classify one clip (.npy) with a checkpoint or an export"),
    "export": ("atfr.commands.export", "split a checkpoint into front/SGS/back ONNX + manifest"),
    "verify": ("atfr.commands.verify", "compare an export's backends with the PyTorch reference"),
    "build": ("atfr.commands.build", "build TensorRT engines from an export"),
    "calibrate": ("atfr.commands.calibrate", "INT8 Q/DQ calibration from videos"),
    "run": ("atfr.commands.run", "streaming inference on a camera, stream or video"),
    "predict": ("atfr.commands.predict", "offline multi-view prediction on videos"),
    "bench": ("atfr.commands.bench", "latency and throughput per stage and vs B'"),
    "convert": ("atfr.commands.convert", "convert an official .pyth checkpoint to ours"),
    "demo": ("atfr.commands.demo", "export the built-in demo model and run it on a demo video"),
    "train-demo": ("atfr.commands.train_demo", "train the demo model on generated videos"),
}


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    p = argparse.ArgumentParser(prog="atfr", description="ATFR video models: export, build, run, benchmark.")
    from atfr import __version__
    p.add_argument("--version", action="version", version=f"atfr-deploy {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    return p, sub


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = _parser()
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help", "--version") and not argv[0].startswith("-"):
            print(f"atfr: unknown command {argv[0]!r}; see 'atfr --help'", file=sys.stderr)
            return 2
        parser.parse_args(argv or ["--help"])
        return 0
    name = argv[0]
    from atfr.errors import ATFRError

    debug = os.environ.get("ATFR_DEBUG") == "1"
    try:
        mod = importlib.import_module(COMMANDS[name][0])
        cmd = argparse.ArgumentParser(prog=f"atfr {name}", description=COMMANDS[name][1])
        mod.add_arguments(cmd)
        args = cmd.parse_args(argv[1:])
        importlib.import_module("atfr.commands.init").warn_if_untrained(name, args)  # one stderr line
        rc = mod.run(args)
        return int(rc or 0)
    except ATFRError as e:
        if debug:
            raise
        print(f"atfr {name}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"atfr {name}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if debug:
            raise
        extra = {"torch": "export", "onnx": "export", "onnx_graphsurgeon": "export",
                 "tensorrt": None, "matplotlib": "bench"}.get(e.name or "", "")
        hint = f" (pip install 'atfr-deploy[{extra}]')" if extra else ""
        if e.name == "tensorrt":
            hint = " (TensorRT is not installed; use --backend onnxruntime)"
        print(f"atfr {name}: error: missing Python package {e.name!r}{hint}", file=sys.stderr)
        return 4
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, never a traceback
        if debug:
            raise
        print(f"atfr {name}: internal error: {type(e).__name__}: {e} (set ATFR_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
