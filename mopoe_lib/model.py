r"""MultimodalVAE: encode each modality, fuse a subset of experts, decode every modality.

One class serves MVAE, MMVAE and MoPoE: they share the networks and differ only in the subsets the objective
fuses (:mod:`mopoe_lib.objectives`) and in where the N(0, I) prior expert enters the products, which is a
property of the model's posterior and therefore stored here (``prior_expert``):

- ``"always"``: every product includes the prior expert (MVAE, Wu & Goodman 2018);
- ``"full_set"``: only the product of all modalities does (the official MoPoE code);
- ``"never"``: no product does (MMVAE's unimodal experts are used as they are).

The posterior given a subset S of the modalities (conditional generation, latent probes) also depends on the
model (``subset_posterior``), as in the authors' code:

- ``"product"``: the PoE of S's experts (MVAE, MoPoE);
- ``"mixture"``: the uniform mixture of S's unimodal experts (MMVAE: its objective never multiplies experts, so
  a product of them is a density it was not trained to produce).

Modality-specific ("style") latents: with ``style_dims``, modality m also has a private latent
:math:`w_m \sim N(0, I_{S_m})` that only its own decoder sees, :math:`p(x_m \mid z, w_m)`, and a posterior
:math:`q(w_m \mid x_m)` from its own encoder (which then outputs ``latent_dim + S_m`` values: shared first, style
last). Only the shared z is fused across modalities; conditional generation draws the styles of the generated
modalities from their prior (Sutter et al. 2020/2021, CelebA: 20 shared + 32 style dimensions). Stacked
networks (the grouped PolyMNIST ones) take styles too, of one size S for every modality: the encoder returns
``latent_dim + S`` values per modality and the decoder reads ``[z, w_m]`` through its per-modality pass.

``auxiliary_style=True`` adds MMVAE+'s auxiliary priors (Palumbo et al., ICLR 2023): per modality a zero-mean
Gaussian :math:`r_m(w_m)` with learned standard deviations ``S * softmax(theta_m)`` (the authors'
parameterisation: they start at 1 and their sum stays S), from which the MMVAE+ objective draws the style of
a modality that a term does not encode (:meth:`draw_auxiliary_style`). Generation still draws unknown styles
from the prior N(0, I), as the authors' code does.

``learn_prior=True`` learns the prior of the shared latent as Shi et al. (2019) do for the MMVAE ("results in
our paper are produced with this enabled", github.com/iffsid/mmvae): zero mean, standard deviations
``D * softmax(theta)`` (they start at 1, and their sum stays D, so the prior can only move its variance between
dimensions). Only models whose products never include the prior expert can learn it (the mixtures).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .fusion import (
    Shard,
    SubsetMixture,
    check_subsets,
    gaussian_log_prob,
    product_of_experts,
    randn_like,
    reparameterize,
    standard_normal_log_prob,
    subset_mask,
)
from .likelihoods import Likelihood

PriorExpert = Literal["always", "full_set", "never"]
PRIOR_EXPERT_CHOICES: tuple[str, ...] = ("always", "full_set", "never")
SubsetPosterior = Literal["product", "mixture"]
SUBSET_POSTERIOR_CHOICES: tuple[str, ...] = ("product", "mixture")
#: Smallest likelihood scale a model may learn (pixel values lie in [0, 1]).
MIN_SCALE = 1e-3
#: How far each training batch moves the stored scales of a model with ``optimal_scales`` (a running average).
OPTIMAL_SCALE_MOMENTUM = 0.1
#: Style posteriors, one ``(mu, logvar)`` pair ``(B, S_m)`` per modality, ``None`` where a modality has none.
StyleParams = list[tuple[Tensor, Tensor] | None]


def given_rows(subsets: Tensor, available: Tensor | None, batch: int) -> Tensor:
    """``(K, B)`` bool: row b has at least one modality of subset k (all rows when nothing is missing)."""
    if available is None:
        return torch.ones(subsets.shape[0], batch, dtype=torch.bool, device=subsets.device)
    return (subsets.to(available.device)[:, :, None] & available[None, :, :]).any(dim=1)


def prior_expert_flags(subsets: Tensor, policy: str) -> Tensor:
    """Per-subset bool ``(K,)``: does the product of subset k include the N(0, I) expert under ``policy``?"""
    if policy == "always":
        return torch.ones(subsets.shape[0], dtype=torch.bool, device=subsets.device)
    if policy == "never":
        return torch.zeros(subsets.shape[0], dtype=torch.bool, device=subsets.device)
    if policy == "full_set":
        return subsets.all(dim=1)
    raise ValueError(f"unknown prior_expert policy {policy!r}; choose one of {', '.join(PRIOR_EXPERT_CHOICES)}")


class PerModalityEncoders(nn.ModuleList):
    """M separate encoders behind the stacked interface: ``xs -> (mu, logvar)``, each ``(M, B, D)``."""

    stacked = True

    def forward(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        outputs = self.each(xs)
        return torch.stack([o[0] for o in outputs]), torch.stack([o[1] for o in outputs])

    def each(self, xs: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Every encoder's own output, unstacked (sizes may differ with modality-specific latents)."""
        return [encoder(x_m) for encoder, x_m in zip(self, xs, strict=True)]


class PerModalityDecoders(nn.ModuleList):
    """M separate decoders behind the stacked interface: ``z (N, D), modalities -> list of M outputs``."""

    stacked = True

    def forward(self, z: Tensor, modalities: Sequence[int] | None = None) -> list[Tensor | None]:
        wanted = range(len(self)) if modalities is None else modalities
        out: list[Tensor | None] = [None] * len(self)
        for m in wanted:
            out[m] = self[m](z)
        return out


def _count(networks: nn.Module | Sequence[nn.Module]) -> int:
    return int(networks.num_modalities) if isinstance(networks, nn.Module) else len(networks)


class MultimodalVAE(nn.Module):
    """A multimodal VAE with one shared latent and per-modality encoders, decoders and likelihoods.

    Args:
        encoders: M modules, ``x_m (B, *shape_m) -> (mu, logvar)`` each ``(B, latent_dim)``; or one module with
            ``stacked = True`` and ``num_modalities`` mapping the M inputs to ``(mu, logvar)`` of shape ``(M, B, D)``
            (e.g. :class:`~mopoe_lib.networks.GroupedConvEncoder`).
        decoders: M modules, ``z (N, latent_dim) -> params (N, *shape_m)``; or one stacked module
            ``(z, modalities) -> list of M outputs`` (e.g. :class:`~mopoe_lib.networks.GroupedConvDecoder`).
        likelihoods: M :class:`~mopoe_lib.likelihoods.Likelihood` objects.
        latent_dim: size of the shared latent.
        names: modality names (default ``m0..``).
        recon_weights: per-modality weights of the log-likelihoods (default 1).
        prior_expert: where the prior expert enters products (see module docstring).
        subset_posterior: ``"product"`` or ``"mixture"``, the posterior given a subset (see module docstring).
        style_dims: sizes of the modality-specific latents, one per modality (0: none). Needs one encoder and
            one decoder per modality (lists, not stacked networks); encoder m outputs ``latent_dim + S_m``
            values and decoder m reads ``latent_dim + S_m``.
        learn_scales: learn the scale of each modality's Laplace/Gaussian likelihood (a parameter
            ``log_scales`` ``(M,)``, starting at the likelihood's own scale, never below :data:`MIN_SCALE`)
            instead of keeping it fixed: a calibrated decoder.
        optimal_scales: with ``learn_scales``, do not learn the scales by gradient: in training, every batch uses
            each modality's maximum-likelihood scale on that batch's reconstructions (Rybkin et al.'s *optimal
            sigma*), and ``log_scales`` keeps a running average of it for evaluation.
        auxiliary_style: learn MMVAE+'s auxiliary style priors (see the module docstring); needs style latents.
        learn_prior: learn the standard deviations of the shared latent's prior (see the module docstring);
            needs ``prior_expert="never"``.
    """

    def __init__(
        self,
        encoders: nn.Module | Sequence[nn.Module],
        decoders: nn.Module | Sequence[nn.Module],
        likelihoods: Sequence[Likelihood],
        latent_dim: int,
        names: Sequence[str] | None = None,
        recon_weights: Sequence[float] | None = None,
        prior_expert: PriorExpert = "full_set",
        style_dims: Sequence[int] | None = None,
        subset_posterior: SubsetPosterior = "product",
        learn_scales: bool = False,
        auxiliary_style: bool = False,
        learn_prior: bool = False,
        optimal_scales: bool = False,
    ) -> None:
        super().__init__()
        count = _count(encoders)
        if count == 0 or _count(decoders) != count or len(likelihoods) != count:
            raise ValueError(f"need one encoder, decoder and likelihood per modality; got {_count(encoders)}, "
                             f"{_count(decoders)} and {len(likelihoods)}")
        prior_expert_flags(torch.ones(1, count, dtype=torch.bool), prior_expert)  # validates the policy
        if subset_posterior not in SUBSET_POSTERIOR_CHOICES:
            raise ValueError(f"unknown subset_posterior {subset_posterior!r}; choose one of "
                             f"{', '.join(SUBSET_POSTERIOR_CHOICES)}")
        self.subset_posterior = subset_posterior
        stacked = isinstance(encoders, nn.Module) and getattr(encoders, "stacked", False)
        self.encoders = encoders if stacked else PerModalityEncoders(encoders)
        stacked = isinstance(decoders, nn.Module) and getattr(decoders, "stacked", False)
        self.decoders = decoders if stacked else PerModalityDecoders(decoders)
        self._count = count
        self.likelihoods = tuple(likelihoods)
        self.latent_dim = latent_dim
        self.names = tuple(names) if names is not None else tuple(f"m{m}" for m in range(count))
        if len(self.names) != count:
            raise ValueError(f"{len(self.names)} names for {count} modalities")
        weights = torch.ones(count) if recon_weights is None else torch.as_tensor(recon_weights, dtype=torch.float)
        if weights.shape != (count,):
            raise ValueError(f"recon_weights needs {count} values, got {tuple(weights.shape)}")
        self.register_buffer("recon_weights", weights, persistent=False)
        self.prior_expert = prior_expert
        self.style_dims = tuple(int(d) for d in style_dims) if style_dims is not None else (0,) * count
        if len(self.style_dims) != count or any(d < 0 for d in self.style_dims):
            raise ValueError(f"style_dims needs {count} non-negative sizes, got {style_dims}")
        self.optimal_scales = optimal_scales
        self.log_scales = self._scale_parameter(learn_scales, optimal_scales)
        self._stacked_style = self._check_style_networks(auxiliary_style)
        self.auxiliary_style_logits: nn.ParameterList | None = None
        if auxiliary_style:
            self.auxiliary_style_logits = nn.ParameterList(nn.Parameter(torch.zeros(s)) for s in self.style_dims)
        self.prior_logits: nn.Parameter | None = None
        if learn_prior:
            if prior_expert != "never":
                raise ValueError(f"learn_prior needs prior_expert='never' (got {prior_expert!r}): products that "
                                 "include the N(0, I) expert would no longer match the learned prior")
            self.prior_logits = nn.Parameter(torch.zeros(latent_dim))

    def _scale_parameter(self, learn_scales: bool, optimal_scales: bool) -> nn.Parameter | None:
        """The learned log-scales ``(M,)`` (``None`` when fixed), frozen to gradients under ``optimal_scales``."""
        if optimal_scales and not learn_scales:
            raise ValueError("optimal_scales needs learn_scales")
        if not learn_scales:
            return None
        if not any(lik.has_scale for lik in self.likelihoods):
            raise ValueError("learn_scales needs a likelihood with a scale (laplace or gaussian)")
        start = [math.log(getattr(lik, "scale", 1.0)) for lik in self.likelihoods]
        return nn.Parameter(torch.tensor(start, dtype=torch.float32), requires_grad=not optimal_scales)

    def _check_style_networks(self, auxiliary_style: bool) -> bool:
        """Validate the networks for the style latents; returns whether they are stacked networks with styles."""
        if auxiliary_style and not self.has_style:
            raise ValueError("auxiliary_style needs modality-specific latents (style_dims)")
        if not self.has_style:
            return False
        stacked = not isinstance(self.encoders, PerModalityEncoders)
        if stacked == isinstance(self.decoders, PerModalityDecoders):
            raise ValueError("modality-specific latents need encoders and decoders of one kind: both lists, or "
                             "both stacked")
        if stacked and (len(set(self.style_dims)) != 1 or not hasattr(self.decoders, "forward_each")):
            raise ValueError("stacked networks take modality-specific latents of one size for every modality and a "
                             f"decoder with forward_each; got style_dims {self.style_dims}")
        return stacked

    @property
    def has_style(self) -> bool:
        """Does any modality have a modality-specific latent?"""
        return any(self.style_dims)

    @property
    def num_modalities(self) -> int:
        return self._count

    # ------------------------------------------------------------------------------------------ inference

    def _check_inputs(self, x: Sequence[Tensor]) -> int:
        """The batch size, after checks that turn common mistakes into messages: a wrong number of modalities,
        unequal or empty batches, integer images (convert with :func:`~mopoe_lib.data.to_float`), another float
        type than the parameters', and (on a CPU, where the check costs no wait) NaN or infinite values."""
        if len(x) != self.num_modalities:
            raise ValueError(f"expected {self.num_modalities} modalities {self.names}, got {len(x)} tensors")
        batch = x[0].shape[0]
        if any(t.shape[0] != batch for t in x):
            raise ValueError(f"all modalities need the same batch size, got {[t.shape[0] for t in x]}")
        if batch == 0:
            raise ValueError("the batch is empty: at least one row is needed")
        dtype = next(self.parameters()).dtype
        for name, t, lik in zip(self.names, x, self.likelihoods, strict=True):
            if not t.is_floating_point() and lik.name != "categorical":
                raise ValueError(f"modality {name} is {t.dtype}: pass float images in [0, 1] "
                                 "(mopoe_lib.data.to_float converts uint8)")
            if t.is_floating_point() and t.dtype != dtype and t.dtype in (torch.float64, torch.float32):
                raise ValueError(f"modality {name} is {t.dtype} but the model's parameters are {dtype}: "
                                 f"convert it with .to({dtype})")
            if t.device.type == "cpu" and t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"modality {name} holds NaN or infinite values")
        return batch

    def encode(self, x: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Unimodal posteriors of the shared latent, stacked modality first: ``(M, B, D)`` each.

        Under mixed-precision autocast the networks run in low precision, but the returned parameters are
        at least float32, so fusion and KL terms are computed accurately.
        """
        return self.encode_all(x)[0]

    def encode_all(self, x: Sequence[Tensor]) -> tuple[tuple[Tensor, Tensor], StyleParams]:
        """Shared experts ``(mu, logvar)`` ``(M, B, D)`` and the style posteriors (``None`` without style)."""
        self._check_inputs(x)
        d = self.latent_dim
        if not self.has_style:
            mu, logvar = _at_least_float32(*self.encoders(x))
            if mu.shape[-1] != d:
                raise ValueError(f"encoders return latent size {mu.shape[-1]}, the model expects {d}")
            return (mu, logvar), [None] * self.num_modalities
        if self._stacked_style:
            mu, logvar = _at_least_float32(*self.encoders(x))
            outputs = list(zip(mu.unbind(0), logvar.unbind(0), strict=True))
        else:
            outputs = [_at_least_float32(*o) for o in self.encoders.each(x)]
        for m, (mu_m, _) in enumerate(outputs):
            if mu_m.shape[-1] != d + self.style_dims[m]:
                raise ValueError(f"encoder {self.names[m]} returns {mu_m.shape[-1]} values, the model expects "
                                 f"latent_dim + style = {d} + {self.style_dims[m]}")
        shared = torch.stack([o[0][:, :d] for o in outputs]), torch.stack([o[1][:, :d] for o in outputs])
        style: StyleParams = [(o[0][:, d:], o[1][:, d:]) if s else None
                              for o, s in zip(outputs, self.style_dims, strict=True)]
        return shared, style

    def draw_style(self, style: StyleParams, modalities: Sequence[int] | None = None, lead: tuple[int, ...] = (),
                   generator: torch.Generator | None = None, shard: Shard | None = None) -> list[Tensor | None]:
        """Reparameterised ``w_m ~ q(w_m | x_m)`` of shape ``(*lead, B, S_m)`` for the wanted modalities."""
        wanted = range(self.num_modalities) if modalities is None else modalities
        out: list[Tensor | None] = [None] * self.num_modalities
        for m in wanted:
            if style[m] is not None:
                mu, logvar = style[m]
                out[m] = mu + torch.exp(0.5 * logvar) * randn_like(mu, (*lead, *mu.shape), generator, shard)
        return out

    def auxiliary_style_std(self, m: int) -> Tensor:
        """``(S_m,)``: the standard deviations of modality m's auxiliary style prior, ``S_m * softmax(theta_m)``."""
        if self.auxiliary_style_logits is None:
            raise ValueError("this model has no auxiliary style priors: build it with auxiliary_style=True "
                             "(the MMVAE+ experiments do)")
        return torch.exp(_log_softmax_scales(self.auxiliary_style_logits[m]))

    def draw_auxiliary_style(self, like: Tensor, modalities: Sequence[int] | None = None,
                             lead: tuple[int, ...] = (), generator: torch.Generator | None = None,
                             shard: Shard | None = None) -> list[Tensor | None]:
        """Reparameterised ``w_m ~ r_m(w_m)`` of shape ``(*lead, B, S_m)`` (B = ``like.shape[0]``) for the wanted
        modalities: MMVAE+'s style for a modality a term does not encode."""
        wanted = range(self.num_modalities) if modalities is None else modalities
        out: list[Tensor | None] = [None] * self.num_modalities
        for m in wanted:
            if self.style_dims[m]:
                std = self.auxiliary_style_std(m).to(like.dtype)
                out[m] = std * randn_like(like, (*lead, like.shape[0], self.style_dims[m]), generator, shard)
        return out

    def prior_logvar(self) -> Tensor | None:
        """``(D,)``: log-variances of the learned prior of the shared latent, ``None`` for the fixed N(0, I)."""
        if self.prior_logits is None:
            return None
        return 2.0 * _log_softmax_scales(self.prior_logits)

    def prior_std(self) -> Tensor:
        """``(D,)``: standard deviations of the shared latent's prior (ones for N(0, I))."""
        logvar = self.prior_logvar()
        if logvar is None:
            return torch.ones(self.latent_dim, device=next(self.parameters()).device)
        return torch.exp(0.5 * logvar)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) of the shared latent's prior, summed over the last dimension (``z (..., D)``)."""
        logvar = self.prior_logvar()
        if logvar is None:
            return standard_normal_log_prob(z)
        return gaussian_log_prob(z, torch.zeros_like(logvar), logvar.to(z.dtype))

    def style_log_ratio(self, samples: Sequence[Tensor | None], style: StyleParams,
                        detach_params: bool = False) -> Tensor | None:
        """``log p(w_m) - log q(w_m | x_m)`` per modality, ``(M, ..., B)`` (zeros where none), or ``None``."""
        rows = []
        for w, params in zip(samples, style, strict=True):
            if w is None or params is None:
                rows.append(None)
                continue
            mu, logvar = (params[0].detach(), params[1].detach()) if detach_params else params
            rows.append(standard_normal_log_prob(w) - gaussian_log_prob(w, mu, logvar))
        present = [r for r in rows if r is not None]
        if not present:
            return None
        return torch.stack([r if r is not None else torch.zeros_like(present[0]) for r in rows])

    def posterior(
        self,
        x: Sequence[Tensor],
        subsets: Tensor,
        available: Tensor | None = None,
        experts: tuple[Tensor, Tensor] | None = None,
    ) -> SubsetMixture:
        """The mixture over ``subsets`` of the fused posteriors (pass ``experts`` to reuse an encoding)."""
        mu, logvar = experts if experts is not None else self.encode(x)
        subsets = check_subsets(subsets.to(mu.device), self.num_modalities)
        return SubsetMixture.from_experts(mu, logvar, subsets, prior_expert_flags(subsets, self.prior_expert),
                                          available)

    def _subset(self, subset: Sequence[int | str] | Tensor) -> Tensor:
        """One subset as a ``(1, M)`` mask, from names, indices, an integer tensor of indices or a bool mask."""
        if isinstance(subset, Tensor):
            if subset.dtype == torch.bool:
                return check_subsets(subset.reshape(1, -1), self.num_modalities)
            if subset.is_floating_point() or subset.is_complex():
                raise ValueError(f"a subset tensor must be a bool mask or integer indices, got {subset.dtype}")
            subset = subset.flatten().tolist()
        unknown = [s for s in subset if isinstance(s, str) and s not in self.names]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; the model has {', '.join(self.names)}")
        members = [self.names.index(s) if isinstance(s, str) else int(s) for s in subset]
        return subset_mask(members, self.num_modalities)

    def infer(self, x: Sequence[Tensor], subset: Sequence[int | str] | Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance ``(B, D)`` of the posterior given one subset (indices, names or a mask).

        For a ``"product"`` model this is the Gaussian PoE; for a ``"mixture"`` model (MMVAE) the mixture's mean
        and per-dimension variance (its moments: a mixture is not Gaussian, so draw samples with
        :meth:`sample_given`). Modalities outside the subset are ignored: pass any placeholder tensor of the
        right shape for them.
        """
        mean, logvar = self.moments_given(self.encode(x), self._subset(subset))
        return mean[0], logvar[0]

    def moments_given(self, experts: tuple[Tensor, Tensor], subsets: Tensor,
                      available: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of the posterior given each subset, ``(K, B, D)`` each (see :meth:`infer`).

        ``available`` (bool ``(M, B)``): condition each row only on the subset's modalities it has; a row with none
        of them gets the prior N(0, I) (:func:`given_rows` tells which rows those are).
        """
        if self.subset_posterior == "product":
            return self.fuse(experts, subsets, available)
        mu, logvar = experts
        weights = self._member_weights(subsets, available, mu)  # (K, B, M)
        mean = torch.einsum("kbm,mbd->kbd", weights, mu)
        second = torch.einsum("kbm,mbd->kbd", weights, logvar.exp() + mu.square())
        empty = weights.sum(dim=2, keepdim=True) == 0
        second = torch.where(empty, torch.ones_like(second), second)  # no member: the prior's moments
        return mean, (second - mean.square()).clamp_min(torch.finfo(mu.dtype).tiny).log()

    def _member_weights(self, subsets: Tensor, available: Tensor | None, like: Tensor) -> Tensor:
        """``(K, B, M)``: uniform weights over each row's members of each subset (its observed ones)."""
        members = check_subsets(subsets.to(like.device), self.num_modalities)[:, None, :]  # (K, 1, M)
        if available is not None:
            members = members & available.T[None, :, :]
        else:
            members = members.expand(-1, like.shape[1], -1)
        weights = members.to(like.dtype)
        return weights / weights.sum(dim=2, keepdim=True).clamp_min(1.0)

    def sample_given(self, experts: tuple[Tensor, Tensor], subsets: Tensor,
                     generator: torch.Generator | None = None, available: Tensor | None = None) -> Tensor:
        """One z per row from the posterior given each subset: ``(K, B, D)``.

        ``"mixture"`` models draw the component uniformly among the subset's experts, independently per row.
        ``available`` (bool ``(M, B)``): only the modalities a row has count (see :meth:`moments_given`).
        """
        mu, logvar = experts
        subsets = check_subsets(subsets.to(mu.device), self.num_modalities)
        if self.subset_posterior == "product":
            return reparameterize(*self.fuse(experts, subsets, available), generator)
        weights = self._member_weights(subsets, available, mu)  # (K, B, M)
        members = weights > 0
        counts = members.sum(dim=2)  # (K, B)
        where = mu.device if generator is None else generator.device
        pick = (torch.rand(*counts.shape, generator=generator, device=where).to(mu.device) * counts).long()
        pick = torch.minimum(pick, (counts - 1).clamp_min(0))  # which member, 0 .. |S| - 1
        rank = members.cumsum(dim=2) - 1  # (K, B, M): position of each member
        chosen = ((rank == pick[:, :, None]) & members).int().argmax(dim=2)  # (K, B)
        rows = torch.arange(mu.shape[1], device=mu.device)
        z = reparameterize(mu[chosen, rows], logvar[chosen, rows], generator)
        if available is None:
            return z
        return torch.where((counts > 0)[:, :, None], z, torch.zeros_like(z) + randn_like(z, generator=generator))

    def fuse(self, experts: tuple[Tensor, Tensor], subsets: Tensor,
             available: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Fused posterior of every subset, ``(K, B, D)`` each, from encoded ``experts`` (model's prior policy);
        with ``available`` only each row's observed experts enter its products."""
        mu, logvar = experts
        subsets = subsets.to(mu.device)
        return product_of_experts(mu, logvar, subsets, prior_expert_flags(subsets, self.prior_expert), available)

    # ----------------------------------------------------------------------------------------- generation

    def decode(self, z: Tensor, modalities: Sequence[int] | None = None, style: Sequence[Tensor | None] | None = None,
               generator: torch.Generator | None = None) -> list[Tensor | None]:
        """Decoder outputs for ``z (..., D)``: a list with ``(..., *shape_m)`` per modality (``None`` if skipped).

        With modality-specific latents, ``style[m]`` ``(..., S_m)`` is decoder m's style; a missing one is drawn
        from its prior N(0, I) with ``generator``.
        """
        lead = z.shape[:-1]
        flat = z.reshape(-1, z.shape[-1])
        if not self.has_style:
            outputs = self.decoders(flat, modalities)
        elif self._stacked_style:
            wanted = range(self.num_modalities) if modalities is None else modalities
            every = self._decode_stacked_style(flat.expand(self.num_modalities, *flat.shape), style, lead, generator)
            outputs = [every[m] if m in wanted else None for m in range(self.num_modalities)]
        else:
            outputs = [None] * self.num_modalities
            for m in range(self.num_modalities) if modalities is None else modalities:
                size = self.style_dims[m]
                inputs = flat
                if size:
                    w = style[m] if style is not None and style[m] is not None else \
                        randn_like(flat, (*lead, size), generator)
                    inputs = torch.cat([flat, w.reshape(-1, size).to(flat.dtype)], dim=-1)
                outputs[m] = self.decoders[m](inputs)
        return [None if p is None else p.reshape(*lead, *p.shape[1:]) for p in outputs]

    def decode_each(self, z: Tensor, style: Sequence[Tensor | None] | None = None,
                    generator: torch.Generator | None = None) -> list[Tensor]:
        """Decoder m applied to its own latent ``z[m]``: ``z (M, ..., D)`` -> M outputs ``(..., *shape_m)``.

        Decoders with a ``forward_each`` method (the grouped PolyMNIST ones) do it in one pass, the cost of
        decoding a single z; others decode modality by modality.
        """
        if z.ndim < 2 or z.shape[0] != self.num_modalities:
            raise ValueError(f"z must have shape (M, ..., D) with M = {self.num_modalities}; got {tuple(z.shape)}")
        each = getattr(self.decoders, "forward_each", None)
        lead = z.shape[1:-1]
        if self._stacked_style:
            outputs = self._decode_stacked_style(z.reshape(self.num_modalities, -1, z.shape[-1]), style, lead,
                                                 generator)
            return [p.reshape(*lead, *p.shape[1:]) for p in outputs]
        if each is None or self.has_style:
            return [self.decode(z[m], [m], style, generator)[m] for m in range(self.num_modalities)]  # type: ignore
        outputs = each(z.reshape(self.num_modalities, -1, z.shape[-1]))
        return [p.reshape(*lead, *p.shape[1:]) for p in outputs]

    def _decode_stacked_style(self, z: Tensor, style: Sequence[Tensor | None] | None, lead: tuple[int, ...],
                              generator: torch.Generator | None) -> list[Tensor]:
        """Stacked decoders with styles: decoder m reads ``[z[m], w_m]`` for ``z (M, N, D)``, in one pass; a
        missing ``style[m]`` ``(*lead, S)`` is drawn from the prior N(0, I)."""
        size = self.style_dims[0]
        ws = [style[m] if style is not None and style[m] is not None else
              randn_like(z[m], (*lead, size), generator) for m in range(self.num_modalities)]
        w = torch.stack([w_m.reshape(-1, size).to(z.dtype) for w_m in ws])  # (M, N, S)
        return self.decoders.forward_each(torch.cat([z, w], dim=-1))  # type: ignore

    def means(self, params: Sequence[Tensor | None]) -> list[Tensor | None]:
        """The likelihoods' means of decoder outputs (what a generated sample looks like)."""
        return [None if p is None else lik.mean(p) for lik, p in zip(self.likelihoods, params, strict=True)]

    @torch.no_grad()
    def generate(self, x: Sequence[Tensor], subset: Sequence[int | str] | Tensor,
                 generator: torch.Generator | None = None, sample: bool = True) -> list[Tensor]:
        """Conditional generation: infer z from ``subset`` of ``x`` and decode every modality (means).

        ``sample=False`` decodes the posterior mean instead of a sample (and the prior mean of any style).
        """
        experts, mask = self.encode(x), self._subset(subset)
        z = self.sample_given(experts, mask, generator)[0] if sample else self.moments_given(experts, mask)[0][0]
        style = None if sample else [torch.zeros(*z.shape[:-1], d, dtype=z.dtype, device=z.device) if d else None
                                     for d in self.style_dims]
        return self.means(self.decode(z, style=style, generator=generator))  # type: ignore[return-value]

    @torch.no_grad()
    def sample_prior(self, num_samples: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """Unconditional samples: z from the prior (N(0, I) or the learned one), decoded into every modality
        (means)."""
        z = self.sample_prior_latent(num_samples, generator)
        return self.means(self.decode(z, generator=generator))  # type: ignore[return-value]

    @torch.no_grad()
    def sample_prior_latent(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``(num_samples, D)`` draws of the shared latent's prior."""
        reference = next(self.parameters())
        z = torch.randn(num_samples, self.latent_dim, generator=generator).to(reference.device, reference.dtype)
        return z * self.prior_std().to(z.dtype)

    def scales(self) -> list[float | None]:
        """Each modality's likelihood scale (learned or fixed), ``None`` for likelihoods without one."""
        return [None if not lik.has_scale else float(self._log_scale(m).detach().exp()) if self.log_scales is not None
                else float(lik.scale) for m, lik in enumerate(self.likelihoods)]  # type: ignore[attr-defined]

    def _fitted_log_scale(self, m: int, params: Tensor, x: Tensor, rows: Tensor | None) -> Tensor | None:
        """Modality m's log-scale: in training with ``optimal_scales`` the batch's maximum-likelihood value (a
        running average of it is kept in ``log_scales`` for evaluation), otherwise :meth:`_log_scale`."""
        if not (self.optimal_scales and self.training and self.likelihoods[m].has_scale):
            return self._log_scale(m)
        fitted = self.likelihoods[m].optimal_log_scale(params.float(), x, rows, _sum_over_processes())
        fitted = fitted.clamp_min(math.log(MIN_SCALE))
        with torch.no_grad():
            self.log_scales[m].lerp_(fitted, OPTIMAL_SCALE_MOMENTUM)  # type: ignore[index]
        return fitted

    def _log_scale(self, m: int) -> Tensor | None:
        if self.log_scales is None or not self.likelihoods[m].has_scale:
            return None
        return self.log_scales[m].clamp_min(math.log(MIN_SCALE))

    def log_likelihoods(self, params: Sequence[Tensor | None], x: Sequence[Tensor],
                        available: Tensor | None = None) -> Tensor:
        """Weighted log p(x_m | z) per modality: ``(M, ..., B)``; modalities not decoded give zeros.

        ``available`` ``(M, B)`` says which rows have each modality: a model with ``optimal_scales`` fits its
        scales, in training, to those rows only (the caller masks the values)."""
        rows = [None if p is None else self.recon_weights[m] * lik.log_prob(
                    p.float(), x_m, self._fitted_log_scale(m, p, x_m, None if available is None else available[m]))
                for m, (lik, p, x_m) in enumerate(zip(self.likelihoods, params, x, strict=True))]
        present = [r for r in rows if r is not None]
        if not present:
            raise ValueError("no modality was decoded")
        return torch.stack([r if r is not None else torch.zeros_like(present[0]) for r in rows])


def _sum_over_processes() -> Callable[[Tensor], Tensor] | None:
    """In data-parallel training, a function summing a tensor over the processes; ``None`` in one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None

    def reduce(values: Tensor) -> Tensor:
        values = values.clone()
        dist.all_reduce(values)
        return values

    return reduce


def _log_softmax_scales(theta: Tensor) -> Tensor:
    """Log of the standard deviations ``n * softmax(theta)`` (``n = len(theta)``): the parameterisation of the
    learned prior and of MMVAE+'s auxiliary priors (Shi et al. 2019, Palumbo et al. 2023), 1 at ``theta = 0``
    and summing to n."""
    return torch.log_softmax(theta, dim=0) + math.log(theta.shape[0])


def _at_least_float32(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior parameters from low-precision (autocast) networks, upcast to float32."""
    if mu.dtype in (torch.float16, torch.bfloat16):
        return mu.float(), logvar.float()
    return mu, logvar
