"""The book's shipped models: load them if present, otherwise train (and say which happened).

Shipped models live in ``data/pretrained/<experiment>/`` as a run folder reduced to what a reader needs:
``config.json`` (config, environment, the exact command), ``metrics.jsonl`` (learning curves, drawn in
``learning_curves.png``), ``model.safetensors`` and ``MANIFEST.json`` (sha256 of the weights). They are trained
on CPU and shipped by ``python -m mopoe_lib.pretrained export <run folder>`` after a normal training run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .config import ExperimentConfig, build_model, get_config
from .data.integrity import ChecksumError, read_json, sha256_file, verify_file, write_json
from .model import MultimodalVAE
from .settings import data_dir, repo_root
from .train import default_run_dir, latest_checkpoint, load_run, train

PRETRAINED = "pretrained"


def pretrained_dirs() -> list[Path]:
    """Where shipped models are looked up: the data folder, then the checkout's ``data/``."""
    dirs = [data_dir() / PRETRAINED]
    root = repo_root()
    if root is not None and (root / "data" / PRETRAINED) not in dirs:
        dirs.append(root / "data" / PRETRAINED)
    return dirs


def find_pretrained(name: str) -> Path | None:
    """The folder of a shipped model, or ``None``."""
    for base in pretrained_dirs():
        if (base / name / "MANIFEST.json").is_file():
            return base / name
    return None


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def load_pretrained(name: str, map_location: str = "cpu") -> tuple[MultimodalVAE, ExperimentConfig, list[dict]]:
    """Load a shipped model after verifying its checksum.

    Raises:
        FileNotFoundError: not shipped (the message lists what is).
        ChecksumError: the weights file is corrupt.
    """
    folder = find_pretrained(name)
    if folder is None:
        shipped = sorted({p.name for base in pretrained_dirs() if base.is_dir() for p in base.iterdir()
                          if (p / "MANIFEST.json").is_file()})
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(shipped) or 'none'}. Train it with\n"
                                f"    python -m mopoe_lib.train {name}")
    manifest = read_json(folder / "MANIFEST.json")
    verify_file(folder / "model.safetensors", manifest["sha256"]["model.safetensors"])
    blob = read_json(folder / "config.json")
    config = ExperimentConfig.from_dict(blob["config"])
    names = blob.get("modalities")
    model = build_model(config, len(names) if names else 5, tuple(names) if names else None)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(map_location)))
    return model.to(map_location).eval(), config, read_metrics(folder)


@dataclass
class Loaded:
    model: MultimodalVAE
    config: ExperimentConfig
    metrics: list[dict[str, Any]]
    source: str  # "shipped", "trained" or "resumed"
    folder: Path


def load_or_train(config: ExperimentConfig, use_pretrained: bool = True, pretrained_name: str | None = None,
                  run_dir: Path | None = None, progress: bool = True) -> Loaded:
    """The shipped model ``pretrained_name`` when allowed and present; else train ``config`` (resuming a run
    that exists). Prints which path it took."""
    if use_pretrained and pretrained_name and find_pretrained(pretrained_name) is not None:
        model, shipped_config, metrics = load_pretrained(pretrained_name)
        folder = find_pretrained(pretrained_name)
        print(f"{pretrained_name}: loaded the shipped model from {folder}")
        return Loaded(model, shipped_config, metrics, "shipped", folder)  # type: ignore[arg-type]
    run_dir = run_dir or default_run_dir(config)
    if latest_checkpoint(run_dir) is not None:
        saved = ExperimentConfig.from_dict(read_json(run_dir / "config.json")["config"])
        if saved == config:
            metrics = read_metrics(run_dir)
            if metrics and metrics[-1]["epoch"] >= config.epochs:
                model, _ = load_run(run_dir)
                print(f"{config.name}: loaded the finished run in {run_dir}")
                return Loaded(model, config, metrics, "trained", run_dir)
            result = train(config, run_dir, resume=True, progress=progress)
            print(f"{config.name}: resumed and finished the run in {run_dir}")
            return Loaded(result.model.eval(), config, result.metrics, "resumed", run_dir)
        stale = run_dir.with_name(f"{run_dir.name}-old-{int(time.time())}")
        run_dir.rename(stale)  # a run of another config under the same name: keep it, out of the way
        print(f"{config.name}: moved a run with a different config to {stale}")
    result = train(config, run_dir, progress=progress)
    print(f"{config.name}: trained from scratch in {run_dir}")
    return Loaded(result.model.eval(), config, result.metrics, "trained", run_dir)


BOOK_MODELS = ("mvae", "mmvae", "mopoe")


def book_models(scale: str = "fast", use_pretrained: bool = True, seed: int = 0, models: tuple[str, ...] = BOOK_MODELS,
                progress: bool = True) -> dict[str, Loaded]:
    """The models the book's chapters share: for each of ``models``, the shipped ``polymnist-compact-<model>``
    when present and allowed, else the run of ``polymnist-<scale>-<model>`` (chapter 2 trains them; loaded
    from ``runs/`` when finished, trained or resumed otherwise)."""
    return {name: load_or_train(get_config(f"polymnist-{scale}-{name}", seed=seed), use_pretrained=use_pretrained,
                                pretrained_name=f"polymnist-compact-{name}", progress=progress)
            for name in models}


def export(run_dir: Path, name: str | None = None, command: str = "", note: str = "") -> Path:
    """Copy a finished run's newest weights, config and metrics into ``data/pretrained/<name>``; ``note`` (kept
    in config.json) tells readers what they should know about the run."""
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint to export")
    config_blob = read_json(run_dir / "config.json")
    name = name or config_blob["config"]["name"]
    base = (repo_root() / "data" if repo_root() else data_dir()) / PRETRAINED / name
    base.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint / "model.safetensors", base / "model.safetensors")
    shutil.copyfile(run_dir / "metrics.jsonl", base / "metrics.jsonl")
    state = read_json(checkpoint / "state.json")
    write_json(base / "config.json", {**config_blob, "command": command, "progress": state["progress"],
                                      **({"note": note} if note else {})})
    from .viz import learning_curves

    learning_curves(read_metrics(base), title=name).savefig(base / "learning_curves.png", dpi=72)
    write_json(base / "MANIFEST.json", {"sha256": {"model.safetensors": sha256_file(base / "model.safetensors")},
                                        "source_run": str(run_dir), "checkpoint": checkpoint.name})
    return base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.pretrained", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="ship a run's newest weights as data/pretrained/<name>")
    ex.add_argument("run_dir", type=Path)
    ex.add_argument("--name", default=None)
    ex.add_argument("--command-line", default="", help="the command that trained it (recorded)")
    ex.add_argument("--note", default="", help="what readers should know about the run (recorded)")
    sub.add_parser("list", help="list shipped models")
    args = parser.parse_args(argv)
    if args.command == "list":
        for base in pretrained_dirs():
            for folder in sorted(base.glob("*/MANIFEST.json")):
                print(folder.parent)
        return 0
    try:
        print(export(args.run_dir, args.name, args.command_line, args.note))
    except (FileNotFoundError, ChecksumError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
