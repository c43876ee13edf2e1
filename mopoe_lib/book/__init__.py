"""The book's layer: what the chapters share, and the machinery that executes and publishes them.

- :func:`book_setup`: every chapter's preamble (mode, seed, plot style, versions, device) in one call;
- :func:`load_or_train` / :func:`book_models`: the shipped model when allowed and present, else a run of this
  machine (loaded when finished, resumed, or trained), saying which path it took;
- :mod:`.build`: ``python -m mopoe_lib.book`` executes the chapters (FAST or FULL);
- :mod:`.html`: the static HTML edition, with every script vendored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .. import __version__, runs
from ..config import EXPERIMENTS, ExperimentConfig, get_config
from ..model import MultimodalVAE
from ..settings import Mode, run_mode, seed_everything
from ..train import train
from .build import RECORD_ENV


class BookSetup(NamedTuple):
    """What a chapter's setup cell defines: ``MODE, FAST, SEED, DEVICE = book_setup()``."""

    mode: Mode
    fast: bool
    seed: int
    device: str


def book_setup(seed: int = 0, extra: str = "") -> BookSetup:
    """A chapter's preamble: read the mode (``$MOPOE_MODE``), seed Python/NumPy/torch, set the plot style and
    pandas' display width, print the versions, mode and device (and ``extra``)."""
    from ..viz import set_style

    mode = run_mode()
    seed_everything(seed)
    set_style()
    try:
        import pandas as pd

        pd.set_option("display.width", 160)
        pd.set_option("display.precision", 3)
    except ImportError:  # pandas is part of the book's environment; the library runs without it
        pass
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"mopoe_lib {__version__} | torch {torch.__version__} | mode {mode} | device {device} | seed {seed}"
          + (f" | {extra}" if extra else ""))
    return BookSetup(mode, mode == "fast", seed, device)


def record(key: str, value: float | int | str) -> None:
    """Keep a number the chapter shows, so the tests can check it against the library (a no-op outside
    ``python -m mopoe_lib.book``, which sets ``$MOPOE_RECORD``)."""
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"key": key, "value": value}) + "\n")


def read_records(path: Path) -> dict[str, Any]:
    """The numbers a chapter kept with :func:`record` (``{}`` if none)."""
    if not path.is_file():
        return {}
    return {row["key"]: row["value"] for row in map(json.loads, path.read_text().splitlines()) if row}


@dataclass
class Loaded:
    """A model for a chapter, with where it came from (``source``: "shipped", "trained" or "resumed")."""

    model: MultimodalVAE
    config: ExperimentConfig
    metrics: list[dict[str, Any]]
    source: str
    folder: Path


def _digest(config: ExperimentConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]


def run_dir_for(config: ExperimentConfig) -> Path:
    """``runs/<name>`` for a named experiment as registered, ``runs/<name>-<config digest>`` for any other config,
    so runs of different configs never share (or overwrite) a folder."""
    base = runs.default_run_dir(config)
    return base if EXPERIMENTS.get(config.name) == config else base.with_name(f"{base.name}-{_digest(config)}")


def load_or_train(config: ExperimentConfig, use_pretrained: bool = True, pretrained_name: str | None = None,
                  run_dir: Path | None = None, progress: bool = True) -> Loaded:
    """The shipped model ``pretrained_name`` when allowed and present; else the run of ``config`` (loaded when
    finished, resumed when interrupted, trained otherwise). Prints which path it took. A folder holding a run of
    another config is left alone: this config then trains into ``runs/<name>-<digest>``."""
    if use_pretrained and pretrained_name and runs.find_pretrained(pretrained_name) is not None:
        shipped = runs.load_pretrained(pretrained_name)
        print(f"{pretrained_name}: loaded the shipped model from {shipped.folder}")
        return Loaded(shipped.model, shipped.config, shipped.metrics, "shipped", shipped.folder)
    run_dir = run_dir or run_dir_for(config)
    if runs.latest_checkpoint(run_dir) is not None and runs.read_run_config(run_dir)[0] != config:
        run_dir = run_dir.with_name(f"{run_dir.name}-{_digest(config)}")
        print(f"{run_dir.parent} holds a run of another config under that name; this one uses {run_dir}")
    if runs.latest_checkpoint(run_dir) is None:
        result = train(config, run_dir, progress=progress)
        print(f"{config.name}: trained from scratch in {run_dir}")
        return Loaded(result.model.eval(), config, result.metrics, "trained", run_dir)
    metrics = runs.read_metrics(run_dir)
    if metrics and metrics[-1]["epoch"] >= config.epochs:
        model, _ = runs.rebuild_model(run_dir)
        print(f"{config.name}: loaded the finished run in {run_dir}")
        return Loaded(model, config, metrics, "trained", run_dir)
    result = train(config, run_dir, resume=True, progress=progress)
    print(f"{config.name}: resumed and finished the run in {run_dir}")
    return Loaded(result.model.eval(), config, result.metrics, "resumed", run_dir)


def time_to_coherence(label: str, experiment: str, seed: int = 0) -> dict[str, Any] | None:
    """A committed result of ``benchmarks/time_to_coherence.py`` (its points: training minutes, steps, coherence
    by number of inputs per judge, probe, test bound), or ``None`` outside a checkout or if it was not run."""
    from ..integrity import read_json
    from ..settings import repo_root

    root = repo_root()
    if root is None:
        return None
    path = root / "benchmarks" / "results" / "time_to_coherence" / f"{label}-{experiment}-s{seed}.json"
    return read_json(path) if path.is_file() else None


def plot_time_to_coherence(lines: list[tuple[str, str, str, str, str]], panels: bool = False) -> bool:
    """Coherence from one input against training minutes, one line per committed result of
    ``benchmarks/time_to_coherence.py``: ``(label, experiment, colour, line style, legend text)``; with
    ``panels``, one panel per experiment. Shows the figure and returns True, or returns False (nothing drawn)
    where none of the results is in this copy."""
    import matplotlib.pyplot as plt

    found = [(experiment, result, rest) for label, experiment, *rest in lines
             if (result := time_to_coherence(label, experiment)) is not None]
    if not found:
        return False
    experiments = list(dict.fromkeys(experiment for experiment, _, _ in found)) if panels else [""]
    _, axes = plt.subplots(1, len(experiments), figsize=(4.4 * len(experiments) if panels else 7, 3.6),
                           sharey=True, squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], experiments, strict=True):
        for experiment, result, (colour, style, text) in found:
            if panels and experiment != panel:
                continue
            points = result["points"]
            ax.plot([p["minutes"] for p in points], [p["coherence/shipped"]["1"] for p in points], style,
                    marker="o", markersize=3, color=colour, label=text)
        ax.axhline(0.1, color="0.5", linestyle=":", label="chance")
        ax.set_xlabel("training minutes (one CPU thread)")
        ax.set_title(panel, fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    axes[0][0].set_ylabel("coherence from one input")
    plt.show()
    return True


BOOK_MODELS = ("mvae", "mmvae", "mopoe")


def book_models(scale: str = "fast", use_pretrained: bool = True, seed: int = 0, models: tuple[str, ...] = BOOK_MODELS,
                progress: bool = True) -> dict[str, Loaded]:
    """The models the book's chapters share: for each of ``models``, the shipped ``polymnist-compact-<model>``
    when present and allowed, else the run of ``polymnist-<scale>-<model>`` (chapter 2 trains them; loaded
    from ``runs/`` when finished, trained or resumed otherwise)."""
    return {name: load_or_train(get_config(f"polymnist-{scale}-{name}", seed=seed), use_pretrained=use_pretrained,
                                pretrained_name=f"polymnist-compact-{name}", progress=progress)
            for name in models}
