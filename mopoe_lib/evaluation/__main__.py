"""Evaluate a model: ``python -m mopoe_lib.evaluation <run folder | shipped model name> [options]``.

Runs the whole metric suite (:mod:`.suite`: conditional coherence for every subset and target, random
coherence, latent probes, Frechet distance in classifier features, importance-sampled likelihoods) with the
shipped classifiers, and writes tidy CSV tables plus ``evaluation.json`` (with the model's config, progress
and the options) to ``--out`` (default: ``<run folder>/evaluation/``, or ``data/pretrained/<name>/evaluation/``
for a shipped model).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..config import load_dataset
from ..data.integrity import DataError, read_json
from ..pretrained import find_pretrained, load_pretrained
from ..train import CheckpointError, latest_checkpoint, load_run
from .classifiers import classifier_dir, load_classifiers
from .suite import SuiteOptions, evaluate_model, write_tables


def _load(source: str):
    """(model, config, progress, default output folder) of a run folder or a shipped model."""
    path = Path(source)
    if path.is_dir() and (path / "config.json").is_file() and latest_checkpoint(path) is not None:
        model, config = load_run(path)
        progress = read_json(latest_checkpoint(path) / "state.json")["progress"]  # type: ignore[operator]
        return model, config, progress, path / "evaluation"
    folder = find_pretrained(source)
    if folder is None:
        raise CheckpointError(f"{source!r} is neither a run folder with a checkpoint nor a shipped model "
                              "(list them with `python -m mopoe_lib.pretrained list`)")
    model, config, _ = load_pretrained(source)
    return model, config, read_json(folder / "config.json").get("progress"), folder / "evaluation"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run folder, or the name of a shipped model (data/pretrained/<name>)")
    defaults = SuiteOptions()
    parser.add_argument("--test-samples", type=int, default=defaults.test_samples)
    parser.add_argument("--probe-train", type=int, default=defaults.probe_train)
    parser.add_argument("--likelihood-points", type=int, default=defaults.likelihood_points)
    parser.add_argument("--likelihood-samples", type=int, default=defaults.likelihood_samples, help="K")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    options = SuiteOptions(args.test_samples, args.probe_train, args.likelihood_points, args.likelihood_samples,
                           args.seed)
    try:
        model, config, progress, default_out = _load(args.source)
        if config.dataset != "polymnist":
            raise CheckpointError(f"the metric suite needs digit classifiers for {config.dataset}; only PolyMNIST "
                                  "has shipped classifiers so far")
        classifiers = load_classifiers()
    except (CheckpointError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    joint = config.make_objective().subsets(model.num_modalities, torch.Generator().manual_seed(args.seed))
    tables = evaluate_model(model, joint, classifiers, train, test, options, progress=not args.no_progress)
    meta = {"source": args.source, "config": config.to_dict(), "progress": progress,
            "classifier_test_accuracy": read_json(classifier_dir() / "classifiers.json")["test_accuracy"],
            "torch": torch.__version__, "seconds": round(time.perf_counter() - start, 1)}
    out = write_tables(tables, args.out or default_out, meta, options)
    for row in tables["summary"]:
        print(f"{row['metric']:24s} inputs={row['num_inputs']}  {row['value']:.4g}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
