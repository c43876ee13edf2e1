"""Per-modality likelihoods p(x_m | z), parameterised by what the decoder outputs.

Every likelihood maps a decoder output ``params`` and data ``x`` to a log-density summed over the
modality's event dimensions, keeping any leading sample dimensions: ``params (..., B, *event)`` and ``x
(B, *event)`` give ``(..., B)``.

=============  ==========================  ====================================================
name           decoder output              log p(x | params)
=============  ==========================  ====================================================
laplace        location (scale s)          -|x - loc| / s - log(2 s)
gaussian       mean (std s)                -(x - mean)^2 / (2 s^2) - log s - log(2 pi) / 2
bernoulli      logits                      x log sigmoid(l) + (1 - x) log sigmoid(-l)
categorical    logits over the last axis   sum over positions of log softmax(logits)[x]
=============  ==========================  ====================================================

The scale ``s`` of the Laplace and Gaussian likelihoods is fixed (0.75 in the authors' PolyMNIST experiments), or
a parameter the model learns (``log_scale``, one per modality: a *calibrated decoder*, Rybkin et al. 2021, "Simple
and Effective VAE Training with Calibrated Decoders"), passed to :meth:`Likelihood.log_prob`.

The categorical likelihood takes *logits* and applies ``log_softmax`` itself: the authors' code passed
log-softmax values where probabilities were expected (defect 3 of the README's list). Targets may be one-hot
(same shape as the logits) or integer class indices (logits' shape without the last axis).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _sum_event(values: Tensor, event_dims: int) -> Tensor:
    return values.flatten(start_dim=values.ndim - event_dims).sum(dim=-1) if event_dims else values


class Likelihood:
    """Base class: ``log_prob(params, x)`` and ``mean(params)`` (what to show as a generated sample)."""

    name: str = ""

    #: does the likelihood have a scale a model may learn (``log_scale`` of :meth:`log_prob`)?
    has_scale: bool = False

    def log_prob(self, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
        """``log p(x | params)`` summed over the event dimensions; ``log_scale`` (a scalar tensor) replaces the
        fixed scale of the likelihoods that have one."""
        raise NotImplementedError

    def mean(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def optimal_log_scale(self, params: Tensor, x: Tensor, weights: Tensor | None = None,
                          reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """The log-scale that maximises ``log_prob(params, x)`` summed over every value (a scalar, no gradient):
        Rybkin et al.'s *optimal sigma*. ``weights`` ``(B,)`` (e.g. which rows have the modality) weigh the
        rows; ``reduce`` sums the statistics ``(2,)`` over processes (data-parallel training fits the global
        batch). The likelihoods without a scale raise."""
        raise NotImplementedError(f"the {self.name} likelihood has no scale")

    def _mean_residual(self, params: Tensor, x: Tensor, power: int, weights: Tensor | None,
                       reduce: Callable[[Tensor], Tensor] | None) -> Tensor:
        """The (weighted) mean of ``|x - params| ** power`` over every value, without gradient."""
        dims = self._event_dims(params, x)
        per_row = _sum_event((x - params.detach()).abs().pow(power), dims) / x[0].numel()  # (..., B)
        weights = torch.ones_like(per_row) if weights is None else weights.to(per_row.dtype).expand_as(per_row)
        sums = torch.stack([(per_row * weights).sum(), weights.sum()])
        if reduce is not None:
            sums = reduce(sums)
        return sums[0] / sums[1].clamp_min(1.0)

    @staticmethod
    def _event_dims(params: Tensor, x: Tensor) -> int:
        if params.shape[params.ndim - x.ndim:] != x.shape:
            raise ValueError(f"decoder output {tuple(params.shape)} does not end with the data shape {tuple(x.shape)}")
        return x.ndim - 1


@dataclass(frozen=True)
class Laplace(Likelihood):
    """Laplace with a fixed scale (0.75 in the official PolyMNIST experiments)."""

    scale: float = 0.75
    name: str = "laplace"
    has_scale: bool = True

    def log_prob(self, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
        dims = self._event_dims(params, x)
        if log_scale is None:
            return _sum_event(-(x - params).abs() / self.scale - math.log(2.0 * self.scale), dims)
        return _sum_event(-(x - params).abs() * torch.exp(-log_scale) - log_scale - math.log(2.0), dims)

    def optimal_log_scale(self, params: Tensor, x: Tensor, weights: Tensor | None = None,
                          reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``log mean |x - loc|``, the maximum-likelihood Laplace scale."""
        return self._mean_residual(params, x, 1, weights, reduce).log()

    def mean(self, params: Tensor) -> Tensor:
        return params


@dataclass(frozen=True)
class Gaussian(Likelihood):
    """Gaussian with a fixed standard deviation."""

    scale: float = 1.0
    name: str = "gaussian"
    has_scale: bool = True

    def log_prob(self, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
        dims = self._event_dims(params, x)
        if log_scale is None:
            log_norm = math.log(self.scale) + 0.5 * math.log(2.0 * math.pi)
            return _sum_event(-0.5 * ((x - params) / self.scale).pow(2) - log_norm, dims)
        return _sum_event(-0.5 * ((x - params) * torch.exp(-log_scale)).pow(2) - log_scale
                          - 0.5 * math.log(2.0 * math.pi), dims)

    def optimal_log_scale(self, params: Tensor, x: Tensor, weights: Tensor | None = None,
                          reduce: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``log sqrt(mean (x - mean)^2)``, the maximum-likelihood Gaussian standard deviation."""
        return 0.5 * self._mean_residual(params, x, 2, weights, reduce).log()

    def mean(self, params: Tensor) -> Tensor:
        return params


@dataclass(frozen=True)
class Bernoulli(Likelihood):
    """Bernoulli over logits (x may be binary or in [0, 1], the usual relaxation for grey levels)."""

    name: str = "bernoulli"

    def log_prob(self, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
        dims = self._event_dims(params, x)
        target = x.expand_as(params)
        return _sum_event(-F.binary_cross_entropy_with_logits(params, target, reduction="none"), dims)

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)


@dataclass(frozen=True)
class Categorical(Likelihood):
    """Independent categoricals over the last axis of the logits (e.g. characters of a string)."""

    name: str = "categorical"

    def log_prob(self, params: Tensor, x: Tensor, log_scale: Tensor | None = None) -> Tensor:
        log_p = F.log_softmax(params, dim=-1)
        if x.dtype in (torch.int64, torch.int32, torch.uint8) and params.shape[params.ndim - x.ndim - 1:-1] == x.shape:
            index = x.long().expand(params.shape[:-1]).unsqueeze(-1)
            picked = log_p.gather(-1, index).squeeze(-1)
            return _sum_event(picked, x.ndim - 1)
        dims = self._event_dims(params, x)
        return _sum_event(log_p * x, dims)

    def mean(self, params: Tensor) -> Tensor:
        return torch.softmax(params, dim=-1)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "laplace": Laplace,
    "gaussian": Gaussian,
    "bernoulli": Bernoulli,
    "categorical": Categorical,
}


def get_likelihood(name: str, **kwargs: float) -> Likelihood:
    """A likelihood by name (``laplace``, ``gaussian``, ``bernoulli``, ``categorical``).

    Raises:
        ValueError: unknown name; the message lists the valid ones.
    """
    try:
        cls = LIKELIHOODS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {', '.join(LIKELIHOODS)}") from None
    return cls(**kwargs)
