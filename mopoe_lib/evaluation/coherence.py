"""Coherence: do generated samples show the digit of the input?

- *Conditional coherence*: for every subset S of input modalities, infer z from S (one sample of the model's
  posterior given S: the product of S's experts, or their mixture for MMVAE), generate every modality, and
  classify each generated image with that modality's classifier; coherence is the fraction of generated images
  whose predicted digit equals the true label. All subsets are processed at once per batch (one encoding, one
  posterior per subset, one batched decoding).
- *Random (joint) coherence*: decode z ~ N(0, I) into all modalities; the fraction of samples on which all
  classifiers predict the same digit. With an :class:`~mopoe_lib.sampler.AggregatePosterior`, z comes from a
  density fitted to the training posteriors instead of the prior.

Results are tidy rows (one per subset and target modality) that aggregate by the number of inputs, counting
only targets *outside* the input subset (generating a modality the model was shown is reconstruction).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..data.dataset import MultimodalDataset
from ..fusion import powerset, subset_labels
from ..model import MultimodalVAE, given_rows
from ..sampler import AggregatePosterior, sample_unconditional
from .classifiers import ModalityClassifiers, predict


@torch.no_grad()
def conditional_coherence(
    model: MultimodalVAE,
    classifiers: ModalityClassifiers,
    data: MultimodalDataset,
    subsets: torch.Tensor | None = None,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """One row per (subset, target modality): ``subset``, ``num_inputs``, ``target``, ``in_subset``,
    ``coherence``, ``n``."""
    return conditional_coherence_by_judge(model, {"judge": classifiers}, data, subsets, batch_size, seed,
                                          progress)["judge"]


@torch.no_grad()
def conditional_coherence_by_judge(
    model: MultimodalVAE,
    judges: Mapping[str, ModalityClassifiers],
    data: MultimodalDataset,
    subsets: torch.Tensor | None = None,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[dict]]:
    """:func:`conditional_coherence` of the *same* generations judged by several classifier sets: coherence
    depends on the judge (a classifier that reads blurry decoder means differently scores them differently),
    and judging one set of generations separates that spread from the sampling error.

    With incomplete data (``data.available``) each row is conditioned only on the subset's modalities it has,
    and a subset counts only the rows that have at least one of them (``n`` per row of the result).
    """
    model.eval()
    subsets = powerset(model.num_modalities) if subsets is None else subsets
    labels = subset_labels(subsets, model.names)
    generator = torch.Generator().manual_seed(seed)
    correct = {name: torch.zeros(subsets.shape[0], model.num_modalities) for name in judges}
    counted = torch.zeros(subsets.shape[0])
    batches = tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc="coherence",
                   disable=not progress, leave=False)
    device = next(model.parameters()).device
    for batch in batches:
        batch = batch.to(device)
        z = model.sample_given(model.encode(batch.x), subsets, generator, batch.available)  # (K, B, D)
        valid = given_rows(subsets, batch.available, batch.size).cpu()  # (K, B)
        counted += valid.sum(dim=1)
        generated = model.means(model.decode(z, generator=generator))  # M tensors (K, B, ...)
        flat = [g.flatten(0, 1).clamp(0, 1) for g in generated]  # (K*B, ...)
        for name, classifiers in judges.items():
            predicted = predict(classifiers, flat).view(model.num_modalities, subsets.shape[0], -1)  # (M, K, B)
            hits = (predicted.cpu() == batch.label.cpu()) & valid[None]
            correct[name] += hits.sum(dim=2).T.float()
    return {name: [{"subset": label, "num_inputs": int(subsets[k].sum()), "target": target,
                    "in_subset": bool(subsets[k, m]), "coherence": float(hits[k, m] / max(float(counted[k]), 1.0)),
                    "n": int(counted[k])}
                   for k, label in enumerate(labels) for m, target in enumerate(model.names)]
            for name, hits in correct.items()}


def coherence_by_num_inputs(rows: Sequence[dict], include_inputs: bool = False) -> dict[int, float]:
    """Mean coherence per number of input modalities, over subsets and targets (targets outside the subset
    only, unless ``include_inputs``)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if include_inputs or not row["in_subset"]:
            groups[row["num_inputs"]].append(row["coherence"])
    return {k: sum(v) / len(v) for k, v in sorted(groups.items())}


@torch.no_grad()
def random_coherence(model: MultimodalVAE, classifiers: ModalityClassifiers, num_samples: int = 10_000,
                     batch_size: int = 1000, seed: int = 0, sampler: AggregatePosterior | None = None) -> float:
    """Fraction of unconditional samples whose generated modalities are all classified as the same digit:
    latents from the prior, or from ``sampler`` (an ex-post density estimate of the aggregate posterior)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    agree = 0
    for start in range(0, num_samples, batch_size):
        n = min(batch_size, num_samples - start)
        generated = [g.clamp(0, 1) for g in sample_unconditional(model, n, generator, sampler)]
        predicted = predict(classifiers, generated)  # (M, n)
        agree += int((predicted == predicted[:1]).all(dim=0).sum())
    return agree / num_samples
