"""Importance-sampled log-likelihoods, batched without mixing test points.

:math:`\\log p(X) \\approx \\log \\frac{1}{K} \\sum_k \\frac{p(X \\mid z_k)\\, p(z_k)}{q(z_k \\mid X)}`, with
:math:`z_k \\sim q(z \\mid X)` the model's own joint posterior (the mixture over the objective's subsets, or
any subsets given). Every sample is drawn, decoded and weighted *per test point*: tensors are ``(K, B, ...)``
and the log-mean-exp runs over K only (the authors' code reshaped samples so that points got mixed:
defect 2 of the README's list). K is processed in chunks, so memory stays bounded for large K.

With modality-specific latents the proposal is :math:`q(z \\mid X) \\prod_m q(w_m \\mid x_m)`.

Conditional log-likelihoods use :math:`\\log p(X_{rest} \\mid X_S) = \\log p(X) - \\log p(X_S)`, each estimated
with its own proposal (the joint posterior for X, the posterior of S for X_S).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..fusion import SubsetMixture, full_set, reparameterize, singletons, subset_mask
from ..model import MultimodalVAE


@torch.no_grad()
def log_likelihood(model: MultimodalVAE, x: Sequence[Tensor], num_samples: int = 1000,
                   subsets: Tensor | None = None, modalities: Sequence[int] | None = None,
                   chunk: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """Importance-sampled ``log p(X_modalities)`` per row ``(B,)``.

    Args:
        subsets: the proposal's mixture components (default: the full set, i.e. the PoE of all modalities).
        modalities: the modalities whose likelihood is estimated (default all); with a subset of modalities the
            proposal should only use those (pass matching ``subsets``).
        chunk: samples processed at once.
    """
    experts, style = model.encode_all(x)
    subsets = full_set(model.num_modalities) if subsets is None else subsets
    mixture: SubsetMixture = model.posterior(x, subsets, experts=experts)
    wanted = list(range(model.num_modalities)) if modalities is None else list(modalities)
    pieces = []
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        # one component per (sample, row) drawn from the row's weights, then z from that component
        index = torch.multinomial(mixture.weights.T.float().cpu(), k, replacement=True, generator=generator).T
        z = reparameterize(*mixture.component(index.to(mixture.mu.device)), generator)  # (k, B, D)
        ws = model.draw_style(style, wanted, (k,), generator)  # modality-specific latents, if any
        ll = model.log_likelihoods(model.decode(z, wanted, ws), x)[wanted].sum(dim=0)  # (k, B)
        log_w = ll + model.prior_log_prob(z) - mixture.log_prob(z)
        style_ratio = model.style_log_ratio(ws, style)
        pieces.append(log_w if style_ratio is None else log_w + style_ratio.sum(dim=0))
    log_w = torch.cat(pieces)  # (K, B)
    return torch.logsumexp(log_w, dim=0) - math.log(num_samples)


def given_components(model: MultimodalVAE, given: Sequence[int]) -> Tensor:
    """Mixture components of the model's posterior given the modalities ``given``: their product (one
    component), or for a ``"mixture"`` model (MMVAE) their single experts."""
    if model.subset_posterior == "mixture":
        return singletons(model.num_modalities)[sorted(set(given))]
    return subset_mask(list(given), model.num_modalities)


def marginal_log_likelihood(model: MultimodalVAE, x: Sequence[Tensor], given: Sequence[int],
                            num_samples: int = 1000, generator: torch.Generator | None = None) -> Tensor:
    """``log p(X_given)`` per row, with the model's own posterior given those modalities as the proposal (the
    product of their experts, or their mixture for an MMVAE: :func:`given_components`)."""
    return log_likelihood(model, x, num_samples, subsets=given_components(model, given), modalities=list(given),
                          generator=generator)


def conditional_log_likelihood(model: MultimodalVAE, x: Sequence[Tensor], given: Sequence[int],
                               num_samples: int = 1000, generator: torch.Generator | None = None,
                               joint_subsets: Tensor | None = None) -> Tensor:
    """``log p(X_rest | X_given)`` per row, as ``log p(X) - log p(X_given)``.

    ``log p(X)`` uses ``joint_subsets`` as the proposal's components (a model's joint posterior: the subsets of
    its objective), by default the posterior given all modalities; ``log p(X_given)`` the model's posterior given
    ``given`` (:func:`marginal_log_likelihood`)."""
    joint_subsets = given_components(model, range(model.num_modalities)) if joint_subsets is None else joint_subsets
    joint = log_likelihood(model, x, num_samples, subsets=joint_subsets, generator=generator)
    return joint - marginal_log_likelihood(model, x, given, num_samples, generator)


@torch.no_grad()
def conditional_by_num_inputs(model: MultimodalVAE, x: Sequence[Tensor], num_samples: int = 1000,
                              seed: int = 0) -> list[dict]:
    """``log p(x_t | X_S)`` for every target t and every subset S without it (S empty: ``log p(x_t)``), as
    ``log p(X_{S+t}) - log p(X_S)`` with each marginal estimated once (:func:`marginal_log_likelihood`, the
    same noise for all), averaged over the rows of ``x``. Rows ``target``, ``given``, ``num_inputs``, ``value``.

    Every target appears with every number of inputs, so averages by ``num_inputs`` do not mix modalities of
    different density. Each marginal is an importance-sampled estimate, biased low, and the bias grows with the
    number of modalities in it: the difference inherits the bias of the larger joint (see chapter 5).
    """
    m = model.num_modalities
    codes = range(1, 2**m)
    members = {code: [k for k in range(m) if code >> k & 1] for code in codes}
    log_p = {code: marginal_log_likelihood(model, x, members[code], num_samples,
                                           torch.Generator().manual_seed(seed)).mean() for code in codes}
    rows = []
    for target in range(m):
        for code in (0, *codes):
            if code >> target & 1:
                continue
            joint = log_p[code | 1 << target]
            value = joint - (log_p[code] if code else 0.0)
            given = members.get(code, [])
            rows.append({"target": model.names[target], "given": "+".join(model.names[k] for k in given),
                         "num_inputs": len(given), "value": float(value)})
    return rows
