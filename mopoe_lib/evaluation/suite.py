"""The full metric suite for one model, as tidy tables written to CSV and JSON.

Tables (lists of flat dicts, one CSV each):

- ``coherence``: conditional coherence per (input subset, target modality), from :mod:`.coherence`;
- ``latent_probe``: linear-probe accuracy per subset, from :mod:`.latent`;
- ``frechet``: Frechet distance in classifier features per (source, target), from :mod:`.frechet`;
- ``likelihood``: importance-sampled ``log p(X)`` (proposal: the model's own joint posterior, i.e. the mixture
  over its objective's subsets) and ``log p(X_rest | x_m)`` for each single modality m, mean and standard error
  over test points, from :mod:`.likelihood`;
- ``summary``: one row per (metric, number of inputs), the numbers a paper table shows.

``python -m mopoe_lib.evaluation <run folder or shipped model>`` runs this and writes the files.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.dataset import MultimodalDataset
from ..integrity import atomic_dir, write_json
from ..model import MultimodalVAE
from ..sampler import AggregatePosterior
from .classifiers import ModalityClassifiers
from .coherence import coherence_by_num_inputs, conditional_coherence_by_judge, random_coherence
from .frechet import frechet_classifier_distance
from .latent import latent_probe
from .likelihood import log_likelihood, marginal_log_likelihood

TABLES = ("summary", "coherence", "latent_probe", "frechet", "likelihood")


@dataclass(frozen=True)
class SuiteOptions:
    """How much of the test set each metric uses (the defaults take a few minutes on a CPU for a compact model)."""

    test_samples: int = 2000
    probe_train: int = 500
    likelihood_points: int = 500
    likelihood_samples: int = 250
    seed: int = 0
    #: training tuples whose joint posterior means the aggregate-posterior mixture is fitted to (the unconditional
    #: samples of random coherence and the Frechet distance); the fit's time grows with it
    density_tuples: int = 5000

    def __post_init__(self) -> None:
        for name in ("test_samples", "probe_train", "likelihood_points", "likelihood_samples", "density_tuples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def _mean_sem(values: Tensor) -> tuple[float, float]:
    values = values.double()
    sem = float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")
    return float(values.mean()), sem


def likelihood_rows(model: MultimodalVAE, joint_subsets: Tensor, data: MultimodalDataset, num_samples: int,
                    seed: int = 0, batch_size: int = 100) -> list[dict]:
    """``log p(X)`` and ``log p(X_rest | x_m)`` for every single modality, averaged over ``data``."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    joint, conditional = [], defaultdict(list)
    for batch in data.batches(batch_size):
        x = [t.to(device) for t in batch.x]
        lj = log_likelihood(model, x, num_samples, subsets=joint_subsets, generator=generator).cpu()
        joint.append(lj)
        for m in range(model.num_modalities):
            conditional[m].append(lj - marginal_log_likelihood(model, x, [m], num_samples, generator).cpu())
    rows = []
    mean, sem = _mean_sem(torch.cat(joint))
    rows.append({"quantity": "log p(X)", "given": "", "num_inputs": 0, "mean": mean, "sem": sem,
                 "num_samples": num_samples, "n": len(data)})
    for m, name in enumerate(model.names):
        mean, sem = _mean_sem(torch.cat(conditional[m]))
        rows.append({"quantity": "log p(X_rest | X_given)", "given": name, "num_inputs": 1, "mean": mean,
                     "sem": sem, "num_samples": num_samples, "n": len(data)})
    return rows


def _by_inputs(rows: list[dict], key: str) -> dict[int, float]:
    groups: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if not row.get("in_subset", False):
            groups[row["num_inputs"]].append(row[key])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


def evaluate_model(model: MultimodalVAE, joint_subsets: Tensor, classifiers: ModalityClassifiers,
                   train: MultimodalDataset, test: MultimodalDataset, options: SuiteOptions = SuiteOptions(),
                   progress: bool = True, other_judges: dict[str, ModalityClassifiers] | None = None
                   ) -> dict[str, list[dict]]:
    """Every metric of the paper for one model; ``joint_subsets`` are its objective's mixture components.

    ``other_judges``: more classifier sets that judge the *same* generations; their coherence by number of inputs
    goes into the summary as ``coherence (<name>)``, so the spread between judges shows next to the numbers.
    """
    model.eval()
    test = test.subset(torch.arange(min(options.test_samples, len(test))))
    judged = conditional_coherence_by_judge(model, {"shipped": classifiers, **(other_judges or {})}, test,
                                            seed=options.seed, progress=progress)
    coherence = judged.pop("shipped")
    probes = latent_probe(model, train, test, num_train=options.probe_train, seed=options.seed)
    # the feature-space distance needs the judges' features (PolyMNIST's classifiers have them)
    sampler = AggregatePosterior.fit(model, train, num_tuples=options.density_tuples, seed=options.seed)
    frechet = frechet_classifier_distance(model, classifiers, test, seed=options.seed, progress=progress,
                                          sampler=sampler) if hasattr(classifiers, "embed") else []
    points = test.subset(torch.arange(min(options.likelihood_points, len(test))))
    likelihood = likelihood_rows(model, joint_subsets, points, options.likelihood_samples, options.seed)
    summary = [{"metric": "coherence", "num_inputs": k, "value": v}
               for k, v in coherence_by_num_inputs(coherence).items()]
    summary += [{"metric": f"coherence ({name})", "num_inputs": k, "value": v}
                for name, rows in judged.items() for k, v in coherence_by_num_inputs(rows).items()]
    summary.append({"metric": "random_coherence", "num_inputs": 0,
                    "value": random_coherence(model, classifiers, num_samples=len(test), seed=options.seed)})
    summary.append({"metric": "random_coherence (aggregate posterior)", "num_inputs": 0,
                    "value": random_coherence(model, classifiers, num_samples=len(test), seed=options.seed,
                                              sampler=sampler)})
    summary += [{"metric": "latent_probe", "num_inputs": k, "value": v}
                for k, v in _by_inputs(probes, "accuracy").items()]
    from_sampler = [row for row in frechet if row["source"] == "aggregate posterior"]
    summary += [{"metric": "frechet", "num_inputs": k, "value": v} for k, v in
                _by_inputs([r for r in frechet if r["source"] != "aggregate posterior"], "frechet").items()]
    if from_sampler:
        summary.append({"metric": "frechet (aggregate posterior)", "num_inputs": 0,
                        "value": sum(r["frechet"] for r in from_sampler) / len(from_sampler)})
    summary += [{"metric": row["quantity"], "num_inputs": row["num_inputs"], "value": row["mean"]}
                for row in likelihood if row["quantity"] == "log p(X)"]
    conditional = [row["mean"] for row in likelihood if row["num_inputs"] == 1]
    summary.append({"metric": "log p(X_rest | x_m)", "num_inputs": 1, "value": sum(conditional) / len(conditional)})
    return {"summary": summary, "coherence": coherence, "latent_probe": probes, "frechet": frechet,
            "likelihood": likelihood}


def write_tables(tables: dict[str, list[dict]], folder: Path | str, meta: dict[str, Any],
                 options: SuiteOptions | None = None) -> Path:
    """Write ``evaluation.json`` (meta, options, every table) and one CSV per table, atomically."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        write_json(tmp / "evaluation.json", {**meta, "options": asdict(options) if options else None,
                                             "tables": tables})
        for name, rows in tables.items():
            if not rows:
                continue
            with open(tmp / f"{name}.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    return folder


def read_tables(folder: Path | str) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """``(meta, tables)`` from a folder written by :func:`write_tables`."""
    blob = json.loads((Path(folder) / "evaluation.json").read_text())
    tables = blob.pop("tables")
    return blob, tables
