"""Evaluate a trained run: ``python -m mopoe_lib.evaluation <run folder> [--test-samples N] [--out FILE]``.

Computes conditional coherence for every subset and target (tidy rows), its mean by number of inputs, random
coherence and the latent probes, with the shipped classifiers, and writes them as JSON (with the run's
config and progress) to ``--out`` (default ``<run folder>/evaluation.json``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..data.integrity import DataError, read_json, write_json
from ..data.polymnist import load_polymnist
from ..train import CheckpointError, latest_checkpoint, load_run
from . import coherence_by_num_inputs, conditional_coherence, latent_probe, load_classifiers, random_coherence
from .classifiers import classifier_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.evaluation", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--test-samples", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        model, config = load_run(args.run_dir)
        classifiers = load_classifiers()
    except (CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    train = load_polymnist("train", config.data_variant, seed=config.data_seed)
    test = load_polymnist("test", config.data_variant, seed=config.data_seed)
    test = test.subset(torch.arange(min(args.test_samples, len(test))))
    rows = conditional_coherence(model, classifiers, test)
    by_inputs = coherence_by_num_inputs(rows)
    probes = latent_probe(model, train, test)
    result = {
        "run": str(args.run_dir), "config": config.to_dict(),
        "checkpoint": latest_checkpoint(args.run_dir).name,  # type: ignore[union-attr]
        "progress": read_json(latest_checkpoint(args.run_dir) / "state.json")["progress"],  # type: ignore[operator]
        "test_samples": len(test), "coherence_by_num_inputs": by_inputs,
        "random_coherence": random_coherence(model, classifiers, num_samples=args.test_samples),
        "latent_probe_by_num_inputs": {k: sum(r["accuracy"] for r in probes if r["num_inputs"] == k)
                                       / sum(1 for r in probes if r["num_inputs"] == k)
                                       for k in sorted({r["num_inputs"] for r in probes})},
        "coherence": rows, "latent_probe": probes,
        "classifier_test_accuracy": read_json(classifier_dir() / "classifiers.json")["test_accuracy"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = args.out or args.run_dir / "evaluation.json"
    write_json(out, result)
    print("coherence by number of inputs:", {k: round(v, 3) for k, v in by_inputs.items()})
    probe = {k: round(v, 3) for k, v in result["latent_probe_by_num_inputs"].items()}
    print("latent probe by number of inputs:", probe)
    print(f"random coherence: {result['random_coherence']:.3f} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
