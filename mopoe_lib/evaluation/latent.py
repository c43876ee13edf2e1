"""Latent representation quality: a linear probe on posterior means, for every subset of modalities.

Protocol (Sutter et al. 2021): logistic regression (lbfgs, max_iter 1000) trained on the posterior means of 500
training tuples, accuracy on the test set, for each subset's posterior (for MMVAE the mean of its mixture).
Means for all subsets are computed at once per batch.
"""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression

from ..data.dataset import MultimodalDataset
from ..fusion import powerset, subset_labels
from ..model import MultimodalVAE


@torch.no_grad()
def subset_posteriors(model: MultimodalVAE, data: MultimodalDataset, subsets: torch.Tensor,
                      batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior ``(mean, logvar)`` given every subset for every sample: ``(K, N, D)`` each (the moments of the
    mixture for MMVAE, :meth:`~mopoe_lib.model.MultimodalVAE.moments_given`); with incomplete data each row is
    conditioned on the subset's modalities it has."""
    model.eval()
    device = next(model.parameters()).device
    mus, logvars = [], []
    for batch in data.batches(batch_size):
        available = None if batch.available is None else batch.available.to(device)
        mu, logvar = model.moments_given(model.encode([x.to(device) for x in batch.x]), subsets, available)
        mus.append(mu.cpu())
        logvars.append(logvar.cpu())
    return torch.cat(mus, dim=1), torch.cat(logvars, dim=1)


def subset_means(model: MultimodalVAE, data: MultimodalDataset, subsets: torch.Tensor,
                 batch_size: int = 500) -> torch.Tensor:
    """Posterior means of every subset for every sample: ``(K, N, D)``."""
    return subset_posteriors(model, data, subsets, batch_size)[0]


def latent_probe(model: MultimodalVAE, train: MultimodalDataset, test: MultimodalDataset,
                 subsets: torch.Tensor | None = None, num_train: int = 500, seed: int = 0) -> list[dict]:
    """Test accuracy of a linear probe per subset: rows ``subset``, ``num_inputs``, ``accuracy``."""
    subsets = powerset(model.num_modalities) if subsets is None else subsets
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:num_train]
    train_means = subset_means(model, train.subset(pick), subsets)
    test_means = subset_means(model, test, subsets)
    rows = []
    for k, label in enumerate(subset_labels(subsets, model.names)):
        probe = LogisticRegression(solver="lbfgs", max_iter=1000)
        probe.fit(train_means[k].numpy(), train.labels[pick].numpy())
        accuracy = float((probe.predict(test_means[k].numpy()) == test.labels.numpy()).mean())
        rows.append({"subset": label, "num_inputs": int(subsets[k].sum()), "accuracy": accuracy})
    return rows
