r"""Fusing unimodal Gaussian experts into subset posteriors and their mixtures.

Notation (modality first, everywhere): ``mu`` and ``logvar`` have shape ``(M, B, D)`` for M modalities, a
batch of B rows and a D-dimensional latent. A *subset* is a row of a bool tensor ``subsets`` of shape
``(K, M)``. The three models of the book differ only in which subsets they fuse:

================  ================================  ==============================================
model             subsets P                         joint posterior :math:`q(z \mid X)`
================  ================================  ==============================================
MVAE              the full set                      geometric mean: PoE of all experts
MMVAE             the M singletons                  arithmetic mean: MoE of the unimodal experts
MoPoE             all :math:`2^M - 1` subsets        mixture over subsets of the PoE of each subset
================  ================================  ==============================================

**Product of experts.** For a subset S the product of Gaussians is Gaussian with precision
:math:`\lambda_S = \sum_{m\in S} e^{-\ell_m} (+1)` (``+1`` for the optional N(0, I) prior expert) and mean
:math:`\mu_S = \lambda_S^{-1} \sum_{m \in S} e^{-\ell_m}\mu_m`. We compute it for all K subsets at once as a
matrix product of the ``(K, M)`` membership matrix with the ``(M, B*D)`` precisions, after a per-coordinate
max shift of the log-precisions: in float32 while the experts' log-variances lie within ``FP32_HEADROOM`` nats
of each other (any trained model), in float64 beyond (a collapsing run, ``logvar`` from -300 to +300), so the
fusion never overflows or underflows and costs half as much in the common case. Cost: O(K M B D) flops, O(K B D) memory.

**Mixtures.** :class:`SubsetMixture` holds the K subset posteriors of every row with per-row weights. Rows
with missing modalities use only the distinct non-empty restrictions of the subsets to what is available
(for MoPoE: the powerset of the available modalities, each subset once). It provides the KL term used by the
paper (the weighted average of the per-subset analytic KLs, an upper bound of the mixture's KL by
convexity), stratified or random sampling of one subset per row, and the mixture's log-density.

**Many modalities.** For M beyond ~12, enumerating 2^M - 1 subsets is out of the question. Sample L
subsets uniformly from the non-empty subsets with :func:`sample_subsets` and build the mixture from those:
the KL average and the reconstruction term are then unbiased estimates of the full-powerset ones, and memory
and time are O(L M B D), independent of 2^M. (The log-density of the sampled mixture is a biased, consistent
estimate of the full one: the log of an unbiased estimate.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

SamplingStrategy = Literal["stratified", "random", "paper"]
SAMPLING_STRATEGIES: tuple[str, ...] = ("stratified", "random", "paper")
LOG_2PI = math.log(2.0 * math.pi)
#: Largest spread (nats) of the experts' shifted log-precisions fused in float32; e^-60 is far above float32's
#: smallest normal number (e^-87), so sums of the shifted precisions keep full relative precision.
FP32_HEADROOM = 60.0
#: Largest spread (nats) of the shifted log-precisions fused at all: e^-700 is above float64's smallest number
#: (e^-745); a wider spread (variances e^+-350 and beyond) raises a ValueError instead of giving inf or NaN.
FP64_HEADROOM = 700.0
#: Largest M for which :func:`powerset` is allowed (2**20 - 1 subsets is already ~1M rows).
MAX_EXACT_MODALITIES = 20


# ------------------------------------------------------------------------------------------------ subsets


def powerset(num_modalities: int) -> Tensor:
    """Every non-empty subset of ``range(num_modalities)`` once, as a bool tensor ``(2**M - 1, M)``.

    Rows are ordered by subset size, then by the binary code of the subset, so singletons come first
    (in modality order) and the full set last.
    """
    if not 1 <= num_modalities <= MAX_EXACT_MODALITIES:
        raise ValueError(f"powerset needs 1 <= num_modalities <= {MAX_EXACT_MODALITIES}, got {num_modalities}; "
                         "for more modalities sample subsets with sample_subsets()")
    codes = torch.arange(1, 2**num_modalities)
    bits = (codes[:, None] >> torch.arange(num_modalities)) & 1
    order = torch.argsort(bits.sum(1) * 2**num_modalities + codes)
    return bits[order].bool()


def singletons(num_modalities: int) -> Tensor:
    """The M one-modality subsets ``(M, M)`` (the MoE / MMVAE choice)."""
    return torch.eye(num_modalities, dtype=torch.bool)


def full_set(num_modalities: int) -> Tensor:
    """The single subset of all modalities ``(1, M)`` (the PoE / MVAE choice)."""
    return torch.ones(1, num_modalities, dtype=torch.bool)


def sample_subsets(num_modalities: int, num_subsets: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """``num_subsets`` subsets drawn independently and uniformly from the ``2**M - 1`` non-empty subsets.

    Each bit is a fair coin; all-empty draws are redrawn (rejection sampling, acceptance ``1 - 2**-M``).
    Averages over the returned subsets are unbiased estimates of averages over the whole powerset.
    """
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be positive, got {num_subsets}")
    out = torch.empty(0, num_modalities, dtype=torch.bool)
    while out.shape[0] < num_subsets:
        draw = torch.rand(2 * num_subsets, num_modalities, generator=generator) < 0.5
        out = torch.cat([out, draw[draw.any(dim=1)]])
    return out[:num_subsets].to(device)


def check_subsets(subsets: Tensor, num_modalities: int) -> Tensor:
    """Validate a ``(K, M)`` subset tensor; integer index lists are not accepted (use bool masks).

    Raises:
        ValueError: wrong dtype or shape, or an empty subset; the message says which.
    """
    if not isinstance(subsets, Tensor) or subsets.dtype != torch.bool:
        raise ValueError("subsets must be a bool tensor of shape (K, M); build one with powerset(), "
                         "singletons(), full_set() or subset_mask()")
    if subsets.ndim != 2 or subsets.shape[1] != num_modalities or subsets.shape[0] == 0:
        raise ValueError(f"subsets must have shape (K >= 1, M={num_modalities}), got {tuple(subsets.shape)}")
    empty = torch.nonzero(~subsets.any(dim=1)).flatten()
    if empty.numel():
        raise ValueError(f"subsets {empty.tolist()} are empty; every subset needs at least one modality")
    return subsets


def subset_mask(members: list[int] | tuple[int, ...], num_modalities: int) -> Tensor:
    """One subset from modality indices, as a ``(1, M)`` bool tensor (e.g. ``subset_mask([0, 2], 5)``)."""
    members = list(members)
    if not members:
        raise ValueError("a subset needs at least one modality")
    bad = [m for m in members if not 0 <= m < num_modalities]
    if bad:
        raise ValueError(f"modality indices {bad} are out of range 0..{num_modalities - 1}")
    mask = torch.zeros(1, num_modalities, dtype=torch.bool)
    mask[0, members] = True
    return mask


def subset_labels(subsets: Tensor, names: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Readable labels such as ``"m0+m2"`` for each subset row."""
    names = names or [f"m{m}" for m in range(subsets.shape[1])]
    return ["+".join(n for n, keep in zip(names, row.tolist(), strict=True) if keep) for row in subsets]


# --------------------------------------------------------------------------------------- product of experts


def _check_experts(mu: Tensor, logvar: Tensor) -> None:
    if mu.ndim != 3 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both have shape (M, B, D); got {tuple(mu.shape)} and "
                         f"{tuple(logvar.shape)}")


def _working_dtype(log_prec: Tensor, shift: Tensor, with_prior: bool, out_dtype: torch.dtype) -> torch.dtype:
    """float32 while the shifted log-precisions span at most ``FP32_HEADROOM`` nats, float64 up to
    ``FP64_HEADROOM``; beyond that, a ValueError (the product would underflow even in float64)."""
    gap = torch.where(torch.isfinite(log_prec), shift - log_prec.detach(), 0.0).amax()
    if with_prior:
        gap = torch.maximum(gap, shift.amax())
    spread = float(gap)  # the one wait for a GPU in the fusion
    if spread > FP64_HEADROOM:
        raise ValueError(f"the experts' log-variances differ by {spread:.0f} nats at some coordinate: beyond "
                         f"{FP64_HEADROOM:.0f} the product of experts underflows even in float64. Variances of "
                         "e^+-350 and more come from a diverged model; check the encoders' outputs")
    return torch.float64 if out_dtype == torch.float64 or spread > FP32_HEADROOM else torch.float32


def product_of_experts(
    mu: Tensor,
    logvar: Tensor,
    subsets: Tensor,
    prior_expert: bool | Tensor = True,
    available: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Gaussian product of the experts in each subset, for every row, without a loop over subsets.

    Args:
        mu, logvar: unimodal posteriors ``(M, B, D)``.
        subsets: bool ``(K, M)``.
        prior_expert: include the N(0, I) expert: a bool for all subsets, or a bool tensor ``(K,)`` per subset
            (the official MoPoE code adds it to the full set only).
        available: optional bool ``(M, B)``; ``False`` removes that modality's expert for that row.

    Returns:
        ``(mu, logvar)`` of shape ``(K, B, D)``. A subset with no available expert and no prior expert for a
        row has no posterior; it is returned as N(0, I) there, and :class:`SubsetMixture` gives it weight 0.
    """
    _check_experts(mu, logvar)
    num_modalities, batch, dim = mu.shape
    subsets = check_subsets(subsets, num_modalities)
    out_dtype = torch.promote_types(mu.dtype, torch.float32)  # never fuse into bf16/fp16
    log_prec = -logvar.to(out_dtype)  # (M, B, D)
    if available is not None:
        if available.shape != (num_modalities, batch):
            raise ValueError(f"available must have shape (M, B) = ({num_modalities}, {batch}), "
                             f"got {tuple(available.shape)}")
        log_prec = log_prec.masked_fill(~available[:, :, None], -math.inf)
    prior = torch.as_tensor(prior_expert, device=mu.device)
    if prior.dtype != torch.bool:
        raise ValueError(f"prior_expert must be a bool or a bool tensor (K,), got {prior.dtype}: the prior expert "
                         "is in a product or not (it has no fractional weight)")
    prior = prior.expand(subsets.shape[0])  # (K,)
    with_prior = bool(prior.any())

    # Shift per coordinate by the largest log-precision among the experts (and the prior's 0) so that
    # exp() never overflows. The shifted precisions then lie in [e^-headroom, 1]: in float32 that is exact
    # enough while headroom < FP32_HEADROOM; beyond it (variances spread over > 26 orders of magnitude, as in
    # a collapsing run) the smaller experts would underflow, and the fusion runs in float64 instead.
    shift = log_prec.detach().amax(dim=0).clamp(min=0.0 if with_prior else -math.inf)  # (B, D)
    shift = torch.nan_to_num(shift, neginf=0.0)
    work = _working_dtype(log_prec, shift, with_prior, out_dtype)
    log_prec, shift, prior = log_prec.to(work), shift.to(work), prior.to(work)
    weights = torch.exp(log_prec - shift)  # (M, B, D), in [0, 1]
    member = subsets.to(device=mu.device, dtype=work)  # (K, M)
    precision = (member @ weights.reshape(num_modalities, -1)).reshape(-1, batch, dim)  # (K, B, D) * e^-shift
    precision = precision + prior[:, None, None] * torch.exp(-shift)
    weighted_mu = (member @ (weights * mu.to(work)).reshape(num_modalities, -1)).reshape(-1, batch, dim)
    if available is None:
        # every subset has an expert whose shifted precision is >= e^-headroom: no empty case to mask
        return (weighted_mu / precision).to(out_dtype), (-(torch.log(precision) + shift)).to(out_dtype)
    empty = precision <= 0
    safe = torch.where(empty, torch.ones_like(precision), precision)
    fused_mu = torch.where(empty, torch.zeros_like(safe), weighted_mu / safe)
    fused_logvar = torch.where(empty, torch.zeros_like(safe), -(torch.log(safe) + shift))
    return fused_mu.to(out_dtype), fused_logvar.to(out_dtype)


# ---------------------------------------------------------------------------------------------- Gaussians


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over the last dimension."""
    return kl_to_prior_per_dim(mu, logvar).sum(dim=-1)


def kl_to_prior_per_dim(mu: Tensor, logvar: Tensor, prior_logvar: Tensor | None = None) -> Tensor:
    """Per-dimension KL(N(mu, exp(logvar)) || N(0, exp(prior_logvar))), not summed; ``prior_logvar`` ``(D,)``
    (``None``: the standard normal)."""
    if prior_logvar is None:
        return 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar)
    return 0.5 * ((torch.exp(logvar) + mu.pow(2)) * torch.exp(-prior_logvar) - 1.0 - logvar + prior_logvar)


def gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))), summed over the last dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


#: ``(rank, world_size)``: this process holds rows ``rank*B .. (rank+1)*B`` of a global batch of ``world_size*B``.
Shard = tuple[int, int]


def randn_like(like: Tensor, shape: tuple[int, ...] | torch.Size | None = None,
               generator: torch.Generator | None = None, shard: Shard | None = None, batch_dim: int = -2) -> Tensor:
    """Standard normal noise with ``like``'s dtype and device, drawn from ``generator`` (CPU or same device).

    With ``shard``, the noise of the whole global batch is drawn and this process's rows are returned, so a
    data-parallel run consumes exactly the random numbers of a single-process run with the same global batch.
    """
    shape = list(like.shape if shape is None else shape)
    where = like.device if generator is None else generator.device
    if shard is None:
        return torch.randn(shape, generator=generator, device=where, dtype=like.dtype).to(like.device)
    rank, world = shard
    local = shape[batch_dim]
    shape[batch_dim] = local * world
    noise = torch.randn(shape, generator=generator, device=where, dtype=like.dtype)
    return noise.narrow(batch_dim % len(shape), rank * local, local).to(like.device)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None,
                   shard: Shard | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I) (the reparameterisation trick); ``mu`` is ``(B, D)``."""
    return mu + torch.exp(0.5 * logvar) * randn_like(mu, generator=generator, shard=shard)


# ----------------------------------------------------------------------------------------------- mixtures


def _distinct_valid(subsets: Tensor, available: Tensor | None, batch: int) -> Tensor:
    """``(K, B)`` bool: subset k is a component of row b's mixture.

    Without missing modalities every subset is. With them, a subset is restricted to the available modalities;
    restrictions that are empty, or equal to an earlier subset's restriction, are dropped, so each distinct
    fused posterior appears once (MoPoE: the powerset of what is available; MVAE: the PoE of what is available).
    """
    num_subsets, num_modalities = subsets.shape
    if available is None:
        return torch.ones(num_subsets, batch, dtype=torch.bool, device=subsets.device)
    restricted = subsets[:, :, None] & available[None, :, :]  # (K, M, B)
    if num_modalities <= 62:
        powers = (2 ** torch.arange(num_modalities, device=subsets.device, dtype=torch.int64))
        codes = (restricted.to(torch.int64) * powers[None, :, None]).sum(dim=1)  # (K, B)
        same = codes[:, None, :] == codes[None, :, :]  # (K, K, B)
    else:
        same = (restricted[:, None] == restricted[None, :]).all(dim=2)
    earlier = torch.ones(num_subsets, num_subsets, dtype=torch.bool, device=subsets.device).tril(-1)
    duplicate = (same & earlier[:, :, None]).any(dim=1)
    return restricted.any(dim=1) & ~duplicate


def stratified_assignment(weights: Tensor, generator: torch.Generator | None = None,
                          strategy: SamplingStrategy = "stratified", shard: Shard | None = None) -> Tensor:
    """Choose one mixture component per row: ``(B,)`` indices into the K components.

    - ``"stratified"``: the batch is split into K equal strata (sizes differ by at most one), which strata get
      the extra rows is random and rows are assigned in random order, so every row's component is marginally
      distributed as its weights (unbiased) while each component is used by about B/K rows (low variance).
    - ``"random"``: independent draws from each row's weights.
    - ``"paper"``: the authors' code: contiguous chunks of ``floor(B/K)`` rows, the last chunk taking the
      remainder (with B=256, K=31 the full set gets 16 rows and every other subset 8: slightly biased).

    Rows whose weights are not uniform over all K components (missing modalities) are drawn from their own
    weights in every strategy. Random draws happen on the CPU (pass a CPU generator) and move to the weights'
    device. With ``shard`` the balanced assignment is made for the global batch and this process's rows are
    returned (rows with missing modalities are then drawn locally).
    """
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"unknown sampling strategy {strategy!r}; choose one of {', '.join(SAMPLING_STRATEGIES)}")
    num_components, local = weights.shape
    rank, world = shard or (0, 1)
    batch = local * world
    device = weights.device
    # rows without any valid component (possible only with missing modalities) draw uniformly; the
    # objective gives them zero weight
    probs = torch.where(weights.sum(0, keepdim=True) > 0, weights, 1.0).T.float().cpu()
    if strategy == "random":
        if shard is not None:
            probs = probs.repeat(world, 1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)[rank * local:(rank + 1) * local].to(device)
    if strategy == "paper":
        size = batch // num_components
        chosen = torch.clamp(torch.arange(batch) // max(size, 1), max=num_components - 1)
    else:
        relabel = torch.randperm(num_components, generator=generator)
        chosen = relabel[torch.arange(batch) % num_components][torch.randperm(batch, generator=generator)]
    chosen = chosen[rank * local:(rank + 1) * local].to(device)
    full = (weights > 0).all(dim=0)
    if not bool(full.all()):
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        chosen = torch.where(full, chosen, drawn)
    return chosen


@dataclass(frozen=True)
class SubsetMixture:
    """A mixture of subset posteriors per row: q(z | X_b) = sum_k w_kb N(z; mu_kb, diag(exp(logvar_kb))).

    Attributes:
        mu, logvar: ``(K, B, D)`` fused posterior of each subset for each row.
        subsets: ``(K, M)`` bool membership.
        weights: ``(K, B)`` mixture weights; each column sums to 1 (uniform over the row's valid components).
    """

    mu: Tensor
    logvar: Tensor
    subsets: Tensor
    weights: Tensor

    @classmethod
    def from_experts(
        cls,
        mu: Tensor,
        logvar: Tensor,
        subsets: Tensor,
        prior_expert: bool | Tensor = False,
        available: Tensor | None = None,
    ) -> SubsetMixture:
        """Fuse the unimodal experts ``(M, B, D)`` over ``subsets`` (see :func:`product_of_experts`)."""
        fused_mu, fused_logvar = product_of_experts(mu, logvar, subsets, prior_expert, available)
        valid = _distinct_valid(subsets.to(mu.device), available, mu.shape[1]).to(mu.dtype)
        weights = valid / valid.sum(dim=0, keepdim=True).clamp(min=1.0)
        return cls(fused_mu, fused_logvar, subsets, weights)

    @property
    def num_components(self) -> int:
        return int(self.mu.shape[0])

    def kl_per_subset(self, prior_logvar: Tensor | None = None) -> Tensor:
        """``(K, B)`` analytic KL of each subset posterior to the prior: N(0, I), or N(0, diag(exp(prior_logvar)))
        for a learned prior's ``prior_logvar`` ``(D,)``."""
        return kl_to_prior_per_dim(self.mu, self.logvar, prior_logvar).sum(dim=-1)

    def kl_upper_bound(self, prior_logvar: Tensor | None = None) -> Tensor:
        """``(B,)`` weighted average of the per-subset KLs: an upper bound of KL(mixture || prior) (the prior
        as in :meth:`kl_per_subset`)."""
        return (self.weights * self.kl_per_subset(prior_logvar)).sum(dim=0)

    def kl_upper_bound_per_dim(self, prior_logvar: Tensor | None = None) -> Tensor:
        """``(B, D)``: :meth:`kl_upper_bound` before the sum over latent dimensions (for free bits)."""
        per_dim = kl_to_prior_per_dim(self.mu, self.logvar, prior_logvar)  # (K, B, D)
        return (self.weights[:, :, None] * per_dim).sum(dim=0)

    def component(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Per-row component parameters ``(..., B, D)`` for component indices ``(..., B)``."""
        rows = torch.arange(self.mu.shape[1], device=self.mu.device)
        return self.mu[index, rows], self.logvar[index, rows]

    def sample(self, generator: torch.Generator | None = None, strategy: SamplingStrategy = "stratified",
               shard: Shard | None = None) -> tuple[Tensor, Tensor]:
        """One reparameterised z per row: returns ``z (B, D)`` and the chosen component ``(B,)``."""
        index = stratified_assignment(self.weights, generator, strategy, shard)
        mu, logvar = self.component(index)
        return reparameterize(mu, logvar, generator, shard), index

    def rsample_per_component(self, num_samples: int, generator: torch.Generator | None = None,
                              shard: Shard | None = None) -> Tensor:
        """``num_samples`` reparameterised draws from *every* component: ``(S, K, B, D)``."""
        eps = randn_like(self.mu, (num_samples, *self.mu.shape), generator, shard)
        return self.mu + torch.exp(0.5 * self.logvar) * eps

    def log_prob(self, z: Tensor, detach_params: bool = False) -> Tensor:
        """log q(z | X) of the mixture for ``z`` of shape ``(..., B, D)``; returns ``(..., B)``.

        ``detach_params`` stops gradients into the posterior parameters (used by the DReG estimator).
        """
        mu, logvar = (self.mu.detach(), self.logvar.detach()) if detach_params else (self.mu, self.logvar)
        comp = gaussian_log_prob(z.unsqueeze(-3), mu, logvar)  # (..., K, B)
        log_w = torch.log(self.weights)  # -inf for invalid components
        return torch.logsumexp(comp + log_w, dim=-2)
