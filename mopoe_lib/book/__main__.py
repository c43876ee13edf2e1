"""``python -m mopoe_lib.book [--mode fast|full] [--html] [chapter prefixes]``: execute the book."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..integrity import guarded
from ..settings import MODES
from .build import ChapterError, build, notebooks_dir
from .build import __doc__ as build_doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.book", description=build_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="fast")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default build/book)")
    parser.add_argument("--html", action="store_true", help="also write the static HTML edition (needs npm once)")
    parser.add_argument("chapters", nargs="*", help="chapter prefixes to run, e.g. 00 02 (default: all)")
    args = parser.parse_args(argv)

    def run() -> int:
        try:
            written = build(args.mode, args.out, args.chapters or None)
        except ChapterError as exc:
            print(f"\nThe book stopped: {exc}", file=sys.stderr)
            return 1
        if args.html:
            from .html import export_html, vendor

            html_dir = written[0].parent / "html"
            try:
                vendor(html_dir, notebooks_dir().parent / "build" / "npm")
            except (FileNotFoundError, subprocess.CalledProcessError) as exc:
                print(f"\nThe HTML edition needs its JavaScript vendored from npm: {exc}", file=sys.stderr)
                return 1
            print(f"HTML edition: {export_html(written, html_dir)}")
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
