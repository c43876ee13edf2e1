r"""An exact toy: the linear-Gaussian multimodal model, where everything is known in closed form.

Generative model: :math:`z \sim N(0, I_D)` and, for each modality,
:math:`x_m = W_m z + b_m + \sigma_m \epsilon_m`. We choose every :math:`W_m = Q_m \operatorname{diag}(s_m)`
with orthonormal columns :math:`Q_m` (so :math:`W_m^\top W_m` is diagonal and every posterior is a
*diagonal* Gaussian, the family our encoders produce). Then, for any subset S of modalities:

- the marginal is :math:`X_S \sim N(b_S, W_S W_S^\top + \operatorname{diag}(\sigma_S^2))`, so
  :math:`\log p(X_S)` is exact;
- the posterior :math:`p(z \mid X_S)` has precision :math:`I + \sum_{m \in S} W_m^\top W_m / \sigma_m^2` and
  mean :math:`\Lambda^{-1} \sum_{m\in S} W_m^\top (x_m - b_m)/\sigma_m^2`;
- the *likelihood experts* :math:`\ell_m(z) \propto p(x_m \mid z)` are Gaussians in z with precision
  :math:`W_m^\top W_m / \sigma_m^2`, and the product of the experts of S with the prior expert **is** the exact
  posterior of S. An MVAE with these experts therefore has a zero ELBO gap.

:meth:`LinearGaussianToy.model` builds a :class:`~mopoe_lib.model.MultimodalVAE` whose linear encoders output
exactly these experts and whose decoders are the true ones, so every objective in the library can be checked
against ``log_marginal``.

With ``style_dim > 0`` each modality also has a private latent, :math:`x_m = W_m z + V_m w_m + b_m + \sigma_m
\epsilon_m` with :math:`w_m \sim N(0, I)`: still linear-Gaussian, so :math:`\log p(X_S)` stays exact (the
covariance gains :math:`V_m V_m^\top` blocks), but the posterior couples z and the w_m, so no encoder of our
factorised family is exact; :meth:`model` then gives the no-style experts for z and the prior for every w_m.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from .likelihoods import Gaussian
from .model import MultimodalVAE
from .networks.linear import LinearDecoder, LinearEncoder


@dataclass(frozen=True)
class LinearGaussianToy:
    """The exact model. ``weights[m]`` is ``(d_m, D)``, ``biases[m]`` ``(d_m,)``, ``noise[m]`` the std."""

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    noise: tuple[float, ...]
    style_weights: tuple[Tensor, ...] = ()  # (d_m, S) per modality, or empty: no modality-specific latents

    @classmethod
    def random(cls, num_modalities: int = 3, latent_dim: int = 2, obs_dim: int | Sequence[int] = 3,
               noise: float | Sequence[float] = 0.5, seed: int = 0, style_dim: int = 0,
               style_scale: float = 0.3) -> LinearGaussianToy:
        """A random instance; ``obs_dim >= latent_dim`` so that each expert has full rank.

        ``style_dim``: size of each modality's private latent, with loadings of norm about ``style_scale``.
        """
        gen = torch.Generator().manual_seed(seed)
        dims = [obs_dim] * num_modalities if isinstance(obs_dim, int) else list(obs_dim)
        noises = [float(noise)] * num_modalities if isinstance(noise, (int, float)) else [float(n) for n in noise]
        if any(d < latent_dim for d in dims):
            raise ValueError(f"every obs_dim must be >= latent_dim={latent_dim} for full-rank experts, got {dims}")
        weights, biases = [], []
        for d in dims:
            q, _ = torch.linalg.qr(torch.randn(d, latent_dim, generator=gen, dtype=torch.float64))
            scales = 0.5 + 1.5 * torch.rand(latent_dim, generator=gen, dtype=torch.float64)
            weights.append(q * scales)
            biases.append(torch.randn(d, generator=gen, dtype=torch.float64))
        style = tuple(style_scale * torch.randn(d, style_dim, generator=gen, dtype=torch.float64) / d**0.5
                      for d in dims) if style_dim else ()
        return cls(tuple(weights), tuple(biases), tuple(noises), style)

    @property
    def style_dim(self) -> int:
        return int(self.style_weights[0].shape[1]) if self.style_weights else 0

    @property
    def num_modalities(self) -> int:
        return len(self.weights)

    @property
    def latent_dim(self) -> int:
        return int(self.weights[0].shape[1])

    def _members(self, subset: Sequence[int] | None) -> list[int]:
        return list(range(self.num_modalities)) if subset is None else list(subset)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> tuple[Tensor, list[Tensor]]:
        """``z (N, D)`` and the modalities ``[x_m (N, d_m)]`` in float64."""
        z = torch.randn(num_samples, self.latent_dim, generator=generator, dtype=torch.float64)
        xs = [z @ w.T + b + s * torch.randn(num_samples, w.shape[0], generator=generator, dtype=torch.float64)
              for w, b, s in zip(self.weights, self.biases, self.noise, strict=True)]
        for m, v in enumerate(self.style_weights):
            xs[m] = xs[m] + torch.randn(num_samples, v.shape[1], generator=generator, dtype=torch.float64) @ v.T
        return z, xs

    def log_marginal(self, xs: Sequence[Tensor], subset: Sequence[int] | None = None) -> Tensor:
        """Exact ``log p(X_S)`` per row ``(N,)`` (all modalities when ``subset`` is None)."""
        members = self._members(subset)
        w = torch.cat([self.weights[m] for m in members])
        b = torch.cat([self.biases[m] for m in members])
        var = torch.cat([torch.full((self.weights[m].shape[0],), self.noise[m] ** 2, dtype=torch.float64)
                         for m in members])
        cov = w @ w.T + torch.diag(var)
        if self.style_weights:
            cov = cov + torch.block_diag(*[self.style_weights[m] @ self.style_weights[m].T for m in members])
        x = torch.cat([xs[m].double() for m in members], dim=1)
        return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)

    def log_marginal_observed(self, xs: Sequence[Tensor], available: Tensor) -> Tensor:
        """Exact ``log p(X_A)`` per row ``(N,)``, with ``A`` the modalities row n has: ``available`` is bool
        ``(N, M)`` (the layout of :func:`~mopoe_lib.data.missing.availability`); rows sharing a pattern are
        scored together."""
        out = torch.empty(available.shape[0], dtype=torch.float64)
        patterns, which = torch.unique(available, dim=0, return_inverse=True)
        for k, pattern in enumerate(patterns):
            rows = which == k
            out[rows] = self.log_marginal([x[rows] for x in xs], torch.nonzero(pattern).flatten().tolist())
        return out

    def expert_precisions(self) -> Tensor:
        """``(M, D)`` diagonal precisions of the likelihood experts, ``diag(W^T W) / sigma^2``."""
        return torch.stack([(w * w).sum(0) / s**2 for w, s in zip(self.weights, self.noise, strict=True)])

    def experts(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Exact likelihood experts ``(mu, logvar)``, each ``(M, N, D)``."""
        prec = self.expert_precisions()
        mus = [((xs[m].double() - self.biases[m]) @ self.weights[m]) / (self.noise[m] ** 2) / prec[m]
               for m in range(self.num_modalities)]
        mu = torch.stack(mus)
        return mu, (-prec.log())[:, None, :].expand_as(mu)

    def posterior(self, xs: Sequence[Tensor], subset: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
        """Exact ``p(z | X_S)`` as ``(mu, logvar)``, each ``(N, D)``."""
        members = self._members(subset)
        prec = self.expert_precisions()
        total = 1.0 + prec[members].sum(0)
        num = sum(((xs[m].double() - self.biases[m]) @ self.weights[m]) / self.noise[m] ** 2 for m in members)
        return num / total, (-total.log()).expand_as(num)

    def model(self, prior_expert: str = "always", exact_encoders: bool = True,
              dtype: torch.dtype = torch.float64, auxiliary_style: bool = False,
              learn_prior: bool = False) -> MultimodalVAE:
        """A :class:`MultimodalVAE` with the true decoders and, if ``exact_encoders``, the exact experts.

        With ``exact_encoders=False`` the encoders are randomly initialised (a model to train). With style
        latents the decoders read ``[z, w_m]`` and the "exact" encoders give the no-style experts for z and
        N(0, I) for w_m (an approximation: see the module docstring). ``auxiliary_style``: with MMVAE+'s
        auxiliary style priors (standard deviations 1 to start with, as the prior's). ``learn_prior``: with a
        learned prior of z (standard deviations 1 to start with; :meth:`scaled` is the exact model for others).
        """
        style = self.style_dim
        encoders, decoders = [], []
        prec = self.expert_precisions()
        for m, (w, b, s) in enumerate(zip(self.weights, self.biases, self.noise, strict=True)):
            enc = LinearEncoder(w.shape[0], self.latent_dim + style)
            dec = LinearDecoder(self.latent_dim + style, (w.shape[0],))
            d = self.latent_dim
            with torch.no_grad():
                dec.linear.weight.copy_(torch.cat([w, self.style_weights[m]], dim=1) if style else w)
                dec.linear.bias.copy_(b)
                if exact_encoders:
                    gain = w.T / (s**2) / prec[m][:, None]  # (D, d_m)
                    enc.mu.weight.zero_()
                    enc.mu.bias.zero_()
                    enc.logvar_bias.zero_()
                    enc.mu.weight[:d].copy_(gain)
                    enc.mu.bias[:d].copy_(-gain @ b)
                    enc.logvar_bias[:d].copy_(-prec[m].log())
            encoders.append(enc)
            decoders.append(dec)
        likelihoods = [Gaussian(scale=s) for s in self.noise]
        return MultimodalVAE(encoders, decoders, likelihoods, self.latent_dim, prior_expert=prior_expert,
                             style_dims=[style] * self.num_modalities, auxiliary_style=auxiliary_style,
                             learn_prior=learn_prior).to(dtype)

    def scaled(self, prior_std: Tensor) -> LinearGaussianToy:
        """The same model with the prior N(0, diag(prior_std^2)) instead of N(0, I), written as the equivalent
        toy with a standard prior (z = prior_std * u, so the loadings become ``W diag(prior_std)``): its
        :meth:`log_marginal` is the exact likelihood of a model that learned ``prior_std``."""
        std = prior_std.detach().to(torch.float64)
        return replace(self, weights=tuple(w * std for w in self.weights))

