r"""Unconditional samples from where the posterior puts its mass: ex-post density estimation.

A VAE's decoders are trained on latents drawn from the posteriors of training tuples. The *aggregate posterior*
:math:`q(z) = \frac{1}{N}\sum_n q(z \mid X_n)` need not fill the prior N(0, I): a prior sample can land where no
training tuple's posterior did, and decode to something no modality agrees on. Ex-post density estimation
(Ghosh et al. 2020, "From Variational to Deterministic Autoencoders"; MultiVae's samplers do the same) fits a
simple density to the posterior means of training tuples after training, here a Gaussian mixture with full
covariances, and samples latents from it instead of the prior. The model is unchanged; only where its decoders
are asked to decode changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .data.dataset import MultimodalDataset
from .model import MultimodalVAE


@dataclass(frozen=True)
class AggregatePosterior:
    """A Gaussian mixture over the latent space: ``weights (C,)``, ``means (C, D)``, ``scale_trils (C, D, D)``."""

    weights: Tensor
    means: Tensor
    scale_trils: Tensor

    @classmethod
    def fit(cls, model: MultimodalVAE, data: MultimodalDataset, components: int = 10, num_tuples: int = 5000,
            seed: int = 0, batch_size: int = 500) -> AggregatePosterior:
        """Fit to the joint posterior means (given all modalities) of the first ``num_tuples`` tuples of ``data``
        (EM with k-means initialisation, scikit-learn; deterministic for a seed)."""
        from sklearn.mixture import GaussianMixture

        model.eval()
        device = next(model.parameters()).device
        everything = list(range(model.num_modalities))
        points = data.subset(torch.arange(min(num_tuples, len(data))))
        with torch.no_grad():
            means = torch.cat([model.infer([x.to(device) for x in batch.x], everything)[0].cpu()
                               for batch in points.batches(batch_size)]).double().numpy()
        mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(means)
        covariances = torch.as_tensor(mixture.covariances_, dtype=torch.float64)
        return cls(torch.as_tensor(mixture.weights_, dtype=torch.float64),
                   torch.as_tensor(mixture.means_, dtype=torch.float64), torch.linalg.cholesky(covariances))

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, D)`` latents (float32): a component by its weight, then its Gaussian."""
        component = torch.multinomial(self.weights, num_samples, replacement=True, generator=generator)
        noise = torch.randn(num_samples, self.means.shape[1], generator=generator, dtype=torch.float64)
        z = self.means[component] + (self.scale_trils[component] @ noise[:, :, None])[:, :, 0]
        return z.float()


@torch.no_grad()
def sample_unconditional(model: MultimodalVAE, num_samples: int, generator: torch.Generator | None = None,
                         sampler: AggregatePosterior | None = None) -> list[Tensor]:
    """Every modality decoded (means) from latents of the prior N(0, I), or of ``sampler`` when given."""
    if sampler is None:
        return model.sample_prior(num_samples, generator)
    reference = next(model.parameters())
    z = sampler.sample(num_samples, generator).to(reference.device, reference.dtype)
    return model.means(model.decode(z, generator=generator))  # type: ignore[return-value]
