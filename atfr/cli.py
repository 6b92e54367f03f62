"""The one CLI, ``atfr``. Each subcommand lives in ``atfr/commands/<name>.py`` and is imported
only when used, so ``atfr run`` on a Jetson never imports torch.

Every failure the user can cause ends as one line on stderr and a non-zero exit code; set
ATFR_DEBUG=1 to see tracebacks. Library chatter (warnings, quantizer prints) shows only with
``atfr -v COMMAND`` (or ``COMMAND -v``) or ATFR_DEBUG=1; see atfr/log.py.

Exit codes: 0 ok; 1 internal error (a bug: please report it); 2 bad input or usage, including
an output path that cannot be written; 3 verification below threshold; 4 missing dependency or
incompatible engine/plugin; 5 video source failure (also: ``predict`` when any input failed);
130 interrupted; 141 stdout closed early (``atfr ... | head``), quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

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
    "pack": ("atfr.commands.pack", "pack an export folder into one checksummed archive for a device"),
    "unpack": ("atfr.commands.unpack", "unpack and verify an 'atfr pack' archive"),
    "serve": ("atfr.commands.serve", "serve an export on Triton Inference Server (PyTriton): HTTP, gRPC, metrics"),
    "triton-repo": ("atfr.commands.triton_repo", "write a Triton model repository (ensemble, SGS/B' grouping model)"),
    "doctor": ("atfr.commands.doctor", "check this environment (modules, OpenCV, TensorRT, GPU, Jetson) with fixes"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, ``atfr CMD: error: ... (see atfr CMD --help)``, exit 2, instead of
    argparse's usage block (the usage is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    p = _Parser(prog="atfr", description="ATFR video models: export, build, run, benchmark.")
    from atfr import __version__
    p.add_argument("--version", action="version", version=f"atfr-deploy {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show library warnings and debug logs (also: ATFR_DEBUG=1, which adds tracebacks)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    return p, sub


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(e).__name__


def _add_verbose(cmd: argparse.ArgumentParser) -> None:
    """Every command takes -v/--verbose; a command that declares either itself keeps its own."""
    have = cmd._option_string_actions  # argparse's option table (no public accessor)
    if "-v" in have and "--verbose" in have:
        return
    if "--verbose" in have:  # e.g. build's own --verbose: -v shares its dest
        cmd.add_argument("-v", dest=have["--verbose"].dest, action="store_true", help="same as --verbose")
        return
    if "-v" in have:
        return
    cmd.add_argument("-v", "--verbose", action="store_true", help="show library warnings and debug logs")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while argv and argv[0] in ("-v", "--verbose"):
        verbose = True
        argv.pop(0)
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
    from atfr.log import cli_session, debug_env

    debug = debug_env()
    # Decided before the command module is imported, so import-time warnings obey it too.
    verbose = verbose or debug or any(a in ("-v", "--verbose") for a in argv[1:])
    with cli_session(name, verbose):
        return _run_command(name, argv[1:], debug, ATFRError)


def _run_command(name: str, argv: list[str], debug: bool, ATFRError: type) -> int:
    try:
        mod = importlib.import_module(COMMANDS[name][0])
        cmd = _Parser(prog=f"atfr {name}", description=COMMANDS[name][1])
        mod.add_arguments(cmd)
        _add_verbose(cmd)
        args = cmd.parse_args(argv)
        importlib.import_module("atfr.commands.init").warn_if_untrained(name, args)  # one stderr line
        importlib.import_module("atfr.runtime.adafuse_clip").refuse_adafuse_export(name, args)
        rc = mod.run(args)
        return int(rc or 0)
    except ATFRError as e:
        if debug:
            raise
        print(f"atfr {name}: error: {_first_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"atfr {name}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if debug:
            raise
        extra = {"torch": "export", "onnx": "export", "tensorrt": None, "matplotlib": "bench"}.get(e.name or "", "")
        hint = f" (pip install 'atfr-deploy[{extra}]')" if extra else ""
        if e.name == "tensorrt":
            hint = " (TensorRT is not installed; use --backend onnxruntime)"
        print(f"atfr {name}: error: missing Python package {e.name!r}{hint}", file=sys.stderr)
        return 4
    except BrokenPipeError:
        # The reader went away (atfr ... | head): stop quietly, as Unix tools do. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 141
    except OSError as e:  # an unwritable output, a full disk, an unreadable input: name the path
        if debug:
            raise
        where = e.filename or ""
        what = e.strerror or _first_line(e)
        print(f"atfr {name}: error: {where}: {what}" if where else f"atfr {name}: error: {what}",
              file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, never a traceback
        if debug:
            raise
        print(f"atfr {name}: internal error: {type(e).__name__}: {_first_line(e)} "
              "(set ATFR_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
