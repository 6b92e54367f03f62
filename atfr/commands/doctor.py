"""atfr doctor [OUTDIR]: check this environment before a build or a run; a fix for each problem.

Exit 0 when the chosen backend can run here, 4 when it cannot (2 for a malformed --source).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", nargs="?", help="export folder to check (its manifest and checksums; disk space there)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"],
                   help="the backend to judge (auto: TensorRT where it imports, else ONNX Runtime)")
    p.add_argument("--plugin", metavar="LIB", help="SGS plugin library to check (loads, exports, registration)")
    p.add_argument("--source", help="a --source to check as well (csi://0, v4l2:///dev/video0, file, pipeline)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also print what each module printed on import (NumPy ABI warnings)")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.doctor import Check, SystemProbe, diagnose, probe_modules

    if args.source is not None:
        from atfr.runtime.video.sources import parse_source

        parse_source(args.source)  # a malformed preset fails here, in a second, with exit 2
    export_check = None
    if args.outdir:
        from atfr.errors import ATFRError
        from atfr.runtime.export_paths import UnsafeExportError
        from atfr.runtime.manifest import load_manifest

        try:
            m = load_manifest(args.outdir, check=True)
            export_check = Check("export", "ok", f"{args.outdir}: {m.name} ({m.arch}), checksums match")
        except UnsafeExportError:
            raise  # a path leaving the export folder: one line, exit 2, like every command
        except ATFRError as e:
            export_check = Check("export", "fail", str(e), "copy the export folder again (or 'atfr unpack' "
                                 "the archive) / re-run 'atfr export'", ("onnxruntime", "tensorrt"))
    mods = probe_modules()
    report = diagnose(args.backend, mods, SystemProbe(), plugin=args.plugin, disk_path=args.outdir or ".",
                      source=args.source)
    if export_check is not None:
        report.checks.insert(0, export_check)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
        if args.verbose:
            for name, mp in mods.items():
                if mp.stderr:
                    print(f"\n--- import {name} printed:\n{mp.stderr}")
    if not report.ok:
        n = sum(report.backend in c.blocks for c in report.checks)
        print(f"atfr doctor: backend {report.backend} cannot run here: {n} blocking problem(s), fixes above",
              file=sys.stderr)
    return report.exit_code
