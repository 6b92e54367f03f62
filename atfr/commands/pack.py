"""atfr pack OUTDIR -o ARCHIVE: the export folder as one verified file (.tar / .tar.gz) to copy to a device."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", help="export folder (atfr export)")
    p.add_argument("-o", "--output", required=True, help="archive to write: .tar, .tar.gz or .tgz")
    p.add_argument("--force", action="store_true", help="overwrite an existing archive")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.archive import pack

    r = pack(args.outdir, args.output, force=args.force)
    print(f"{r.path}: {r.files} file(s), {r.bytes / 2**20:.1f} MiB, sha256 of each in atfr-pack.json")
    return 0
