"""The objective's own numbers on test data: the bound, its terms and the active units of the joint posterior."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from ..data.dataset import MultimodalDataset
from ..model import MultimodalVAE
from ..objectives import Objective


@torch.no_grad()
def evaluate_bound(model: MultimodalVAE, objective: Objective, data: MultimodalDataset, batch_size: int = 250,
                   seed: int = 0,
                   autocast: Callable[[], AbstractContextManager] = nullcontext) -> dict[str, float]:
    """Mean bound (the objective's main term), reconstruction and KL on ``data`` with fixed noise, as
    ``test/<name>``; and ``test/active_units``, the latent dimensions whose joint-posterior mean varies across
    test tuples (variance > 0.01; Burda et al. 2016): 0 means the posterior has collapsed onto the prior.

    The model is left in the training mode it had.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    count = 0
    means = []
    everything = list(range(model.num_modalities))
    for batch in data.batches(batch_size):
        with autocast():
            out = objective(model, batch, generator=generator)
            means.append(model.infer(batch.x, everything)[0].float())  # the joint posterior's mean
        for key, value in out.as_floats(model.names).items():
            totals[key] = totals.get(key, 0.0) + value * batch.size
        count += batch.size
    model.train(was_training)
    metrics = {f"test/{k}": v / count for k, v in totals.items() if k not in ("beta", "loss")}
    if count > 1:
        metrics["test/active_units"] = int((torch.cat(means).var(dim=0) > 0.01).sum())
    return metrics
