"""The shipped models' command line: ``python -m mopoe_lib.pretrained export <run folder> | list``.

Shipped models live in ``data/pretrained/<experiment>/`` as a run folder reduced to what a reader needs
(:mod:`mopoe_lib.runs`): ``config.json`` (config, environment, the exact command, a note), ``metrics.jsonl``,
``model.safetensors``, ``MANIFEST.json`` (sha256 of the weights and the config) and ``learning_curves.png``.
They are trained on a CPU with ``python -m mopoe_lib.train`` and shipped by ``export`` after the run.
Load one with :func:`mopoe_lib.runs.load_pretrained`, or in a chapter with :func:`mopoe_lib.book.load_or_train`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .integrity import guarded
from .runs import export_run, pretrained_dirs, read_metrics, shipped_models


def export(run_dir: Path, name: str | None = None, command: str = "", note: str = "",
           target: Path | None = None) -> Path:
    """Ship a run (:func:`mopoe_lib.runs.export_run`) and draw its learning curves next to it."""
    from .viz import learning_curves

    folder = export_run(run_dir, name, command, note, target)
    learning_curves(read_metrics(folder), title=folder.name).savefig(folder / "learning_curves.png", dpi=72)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.pretrained", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="ship a run's newest weights as data/pretrained/<name>")
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("--name", default=None)
    ex.add_argument("--command-line", default="", help="the command that trained it (recorded)")
    ex.add_argument("--note", default="", help="what readers should know about the run (recorded)")
    ex.add_argument("--target", type=Path, default=None, help="folder of shipped models (default data/pretrained)")
    sub.add_parser("list", help="list shipped models")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name in shipped_models():
            print(name)
        print(f"(looked in {', '.join(map(str, pretrained_dirs()))})")
        return 0
    return guarded(lambda: print(export(args.run_dir, args.name, args.command_line, args.note, args.target)) or 0)


if __name__ == "__main__":
    sys.exit(main())
