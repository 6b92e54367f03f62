"""atfr unpack ARCHIVE -o OUTDIR: extract an 'atfr pack' archive, verifying every checksum first."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("archive", help="archive written by 'atfr pack'")
    p.add_argument("-o", "--output", required=True, help="export folder to create")
    p.add_argument("--force", action="store_true", help="replace an existing folder")


def run(args: argparse.Namespace) -> int:
    from atfr.runtime.archive import unpack

    print(f"{unpack(args.archive, args.output, force=args.force)}: verified (sizes, sha256, graph checksums)")
    return 0
