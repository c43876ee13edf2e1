"""``python -m mopoe_lib.train <experiment> [--set key=value ...] [--out folder] [--resume]``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import EXPERIMENTS, get_config, parse_overrides
from ..integrity import guarded
from ..runs import default_run_dir
from . import __doc__ as package_doc
from .trainer import train


def _list() -> None:
    for name, cfg in EXPERIMENTS.items():
        latent = f"{cfg.latent_dim}+{cfg.style_dim}" if cfg.style_dim else str(cfg.latent_dim)
        print(f"{name:28s} {cfg.architecture:8s} latent {latent:>5s}  {cfg.epochs:4d} epochs  "
              f"objective {cfg.objective:10s} data {cfg.data_variant}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.train", description=package_doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", help="a named experiment (see --list)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/<experiment>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--list", action="store_true", help="list the named experiments")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.list or not args.experiment:
        _list()
        return 0 if args.list else 2

    def run() -> int:
        config = get_config(args.experiment, **parse_overrides(args.overrides))
        out = args.out or default_run_dir(config)
        result = train(config, out, resume=args.resume, progress=not args.no_progress)
        if int(os.environ.get("RANK", "0")) == 0:
            last = result.metrics[-1] if result.metrics else {}
            print(f"done: {result.run_dir} ({result.stopped_early or 'completed'}); last epoch: "
                  + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
        return 0

    resume = f"continue with\n    python -m mopoe_lib.train {' '.join(sys.argv[1:] if argv is None else argv)}"
    return guarded(run, interrupted=resume if "--resume" in resume else resume + " --resume")


if __name__ == "__main__":
    sys.exit(main())
