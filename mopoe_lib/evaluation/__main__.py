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
from pathlib import Path

from ..integrity import guarded
from .results import evaluate_run
from .suite import SuiteOptions, read_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a run folder, or the name of a shipped model (data/pretrained/<name>)")
    defaults = SuiteOptions()
    parser.add_argument("--test-samples", type=int, default=defaults.test_samples)
    parser.add_argument("--probe-train", type=int, default=defaults.probe_train)
    parser.add_argument("--likelihood-points", type=int, default=defaults.likelihood_points)
    parser.add_argument("--likelihood-samples", type=int, default=defaults.likelihood_samples, help="K")
    parser.add_argument("--density-tuples", type=int, default=defaults.density_tuples,
                        help="training tuples the aggregate-posterior mixture is fitted to")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    def run() -> int:
        options = SuiteOptions(test_samples=args.test_samples, probe_train=args.probe_train,
                               likelihood_points=args.likelihood_points, likelihood_samples=args.likelihood_samples,
                               seed=args.seed, density_tuples=args.density_tuples)
        out = evaluate_run(args.source, options, args.out, progress=not args.no_progress)
        for row in read_tables(out)[1]["summary"]:
            print(f"{row['metric']:24s} inputs={row['num_inputs']}  {row['value']:.4g}")
        print(f"-> {out}")
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())
