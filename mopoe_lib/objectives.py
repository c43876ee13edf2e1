r"""One objective, three models: MVAE, MMVAE and MoPoE differ only in the subsets and the estimator.

Every objective is a sum of *terms*. A term fuses the unimodal experts over a set of subsets P into the
mixture :math:`q_P(z \mid X) = \frac{1}{|P|}\sum_{S \in P} \mathrm{PoE}_S` and evaluates a lower bound of the
log-likelihood of the modalities R it reconstructs:

- ``estimator="elbo"``: one stratified sample per row,
  :math:`\sum_{m \in R} w_m \log p(x_m \mid z) - \beta\, \overline{\mathrm{KL}}` where
  :math:`\overline{\mathrm{KL}} = \frac{1}{|P|}\sum_S \mathrm{KL}(\mathrm{PoE}_S \,\|\, p(z))` upper-bounds
  the mixture's KL (so the result is still a lower bound);
- ``estimator="iwae"`` / ``"dreg"``: the importance-weighted bound of Shi et al. (2019) with K samples from
  *every* component (their "looser" bound):
  :math:`\frac{1}{|P|}\sum_S \mathbb{E}\log\frac{1}{K}\sum_k
  \frac{p(X \mid z_k)\,p(z_k)}{q_P(z_k \mid X)}`, :math:`z_k \sim \mathrm{PoE}_S`; ``dreg`` uses the
  doubly-reparameterised gradient (Tucker et al., 2019) with the same value. ``iw_bound="tight"`` moves the
  average over components inside the logarithm, :math:`\mathbb{E}\log\frac{1}{|P|K}\sum_{S,k} w_{S,k}` (Shi et
  al.'s tighter bound: every sample is weighed against all the others), which is at least the looser one.

====================  =====================================  ===========================================
objective             terms                                  notes
====================  =====================================  ===========================================
``mopoe``             P = all 2^M - 1 subsets, R = all       Sutter et al. 2021; sampled subsets for big M
``mmvae``             P = singletons, R = all                the MoE ELBO of the MoPoE paper's code
``mmvae_iw``          P = singletons, R = all, DReG, K=30    Shi et al. 2019
``mvae``              P = {all}, R = all; plus P = {{m}},    Wu & Goodman 2018; random subset terms and KL
                      R = {m} for each m                     annealing optional
``mmjsd``             P = singletons and the prior, R = all  Sutter et al. 2020; ``divergence="jsd"``
``mvtcae``            P = {all} (no prior expert), R = all   Hwang et al. 2021; ``divergence="tc"``
``mmvae_plus``        P = singletons, R = all, beta 2.5;     Palumbo et al. 2023; ``cross_style=
                      style latents                          "auxiliary"``
====================  =====================================  ===========================================

``divergence="jsd"`` (mmJSD, as in the authors' code): the mixture gets one more component, the prior
N(0, I), and all components weigh the same, :math:`\pi_k = 1/(|P| + 1)`; z for the reconstruction is drawn
from that mixture, and the regulariser is :math:`\sum_k \pi_k \mathrm{KL}(q_k \,\|\, f)` with the *dynamic
prior* :math:`f \propto \prod_k q_k^{\pi_k}` (a Gaussian: :func:`dynamic_prior`). For any density f,
:math:`\sum_k \pi_k \mathrm{KL}(q_k \| f) = \mathrm{JS}_\pi(q_1, \dots, q_{|P|+1}) + \mathrm{KL}(\bar q \| f)`
with :math:`\bar q = \sum_k \pi_k q_k`, so the regulariser upper-bounds the Jensen-Shannon divergence of the
paper's objective. The result is *not* a bound of log p(X) (the prior component and the data-dependent f
see to that); ``elbo`` then reports the mmJSD objective at beta = 1.

``divergence="tc"`` (MVTCAE, as in the authors' code, ``tc_ratio`` :math:`\alpha`, 5/6 for PolyMNIST): with
:math:`q = q(z \mid X)` the product of the M unimodal experts and :math:`\ell = \sum_m \log p(x_m \mid z)`,

.. math:: \tfrac{M - \alpha}{M}\,\mathbb{E}_q[\ell] - \beta\Big[(1 - \alpha)\,\mathrm{KL}(q \,\|\, p(z))
          + \tfrac{\alpha}{M} \sum_m \mathrm{KL}(q \,\|\, q(z \mid x_m))\Big].

At beta = 1 this is :math:`(1 - \alpha)` times the ELBO of X plus :math:`\alpha` times the mean over m of
:math:`\mathbb{E}_q[\log p(X_{\setminus m} \mid z)] - \mathrm{KL}(q \,\|\, q(z \mid x_m))`, a bound of
:math:`\log p(X_{\setminus m} \mid x_m)` only where :math:`q(z \mid x_m)` is the true posterior; so the whole is
no bound of log p(X) in general, and ``elbo`` reports the MVTCAE objective at beta = 1. M counts the modalities
a row has.

Modality-specific latents (``model.style_dims``): a term that reconstructs modality m also draws
:math:`w_m \sim q(w_m \mid x_m)` and adds :math:`\mathrm{KL}(q(w_m \mid x_m) \,\|\, N(0, I))` to its KL
(ELBO), or :math:`\log p(w_m) - \log q(w_m \mid x_m)` to its importance weights (IWAE/DReG). Since
:math:`q(z, w \mid X) = q(z \mid X) \prod_m q(w_m \mid x_m)`, the result is still a lower bound.

``cross_style="auxiliary"`` (MMVAE+, as in the authors' code): a component reconstructs
the modalities of its subset with their encoded styles :math:`w_d \sim q(w_d \mid x_d)` and every other
modality d with a style drawn from the model's auxiliary prior :math:`r_d(w_d)`
(:meth:`~mopoe_lib.model.MultimodalVAE.draw_auxiliary_style`); only the encoded styles enter the importance
weights, :math:`\log p(w) - \log q(w \mid x)`. With :math:`r_d = p(w_d)` this is a lower bound of log p(X)
(an auxiliary-variable bound: the component index is a latent with the responsibility :math:`q_m(z) / \sum_j
q_j(z)` as its reverse model); with learned :math:`r_d` each borrowed style adds
:math:`\mathrm{KL}(r_d \,\|\, p(w_d))` on average, so the objective is no bound of log p(X) in general. The
decoders learn to read a style drawn from r for the other modalities, so the shared z has to carry what they
share (the digit) and the styles keep what they do not (the background). The authors train PolyMNIST with one
importance sample from every component (``estimator="iwae"``, K = 1); ``estimator="elbo"`` (the record's
default) draws one component per row, stratified, and weighs the sample in the same way (log q(z | X) of the
mixture, not the analytic KL): the same objective in expectation at the cost of one decoding per row.

With ``beta = 1`` every term is a valid lower bound of the log-likelihood of its modalities. MVAE's sum of
terms is not a bound of log p(X) (the paper's remark); its joint term is, and it is reported as ``elbo``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import torch
from torch import Tensor

from .data.dataset import Batch
from .fusion import (
    SAMPLING_STRATEGIES,
    SamplingStrategy,
    Shard,
    SubsetMixture,
    full_set,
    kl_to_standard_normal,
    powerset,
    reparameterize,
    sample_subsets,
    singletons,
)
from .model import PRIOR_EXPERT_CHOICES, SUBSET_POSTERIOR_CHOICES, MultimodalVAE, StyleParams

Estimator = Literal["elbo", "iwae", "dreg"]
ESTIMATORS: tuple[str, ...] = ("elbo", "iwae", "dreg")
SubsetChoice = Literal["powerset", "singletons", "full"]
SUBSET_CHOICES: tuple[str, ...] = ("powerset", "singletons", "full")
IWBound = Literal["looser", "tight"]
IW_BOUNDS: tuple[str, ...] = ("looser", "tight")
Divergence = Literal["prior", "jsd", "tc"]
DIVERGENCES: tuple[str, ...] = ("prior", "jsd", "tc")
CrossStyle = Literal["posterior", "auxiliary"]
CROSS_STYLES: tuple[str, ...] = ("posterior", "auxiliary")


@dataclass(frozen=True)
class ObjectiveConfig:
    """What an objective computes, and the posterior policies of the model it trains: one record per named
    objective (:data:`OBJECTIVES`). Build named ones with :func:`make_objective`.

    ``prior_expert`` (where the N(0, I) expert enters products) and ``subset_posterior`` (the posterior given a
    subset: product or mixture of experts) are properties of the *model* (:class:`~mopoe_lib.model.MultimodalVAE`),
    recorded here because each objective defines them: the objective never reads them itself.
    """

    name: str
    subsets: SubsetChoice
    beta: float = 1.0
    estimator: Estimator = "elbo"
    num_samples: int = 1
    sampling: SamplingStrategy = "stratified"
    max_subsets: int | None = 64
    unimodal_terms: bool = False
    random_subset_terms: int = 0
    kl_anneal_steps: int = 0
    free_bits: float = 0.0
    prior_expert: str = "full_set"
    subset_posterior: str = "product"
    divergence: Divergence = "prior"
    tc_ratio: float = 0.0
    cross_style: CrossStyle = "posterior"
    iw_bound: IWBound = "looser"

    def __post_init__(self) -> None:
        for name, choices in (("subsets", SUBSET_CHOICES), ("estimator", ESTIMATORS), ("sampling", SAMPLING_STRATEGIES),
                              ("prior_expert", PRIOR_EXPERT_CHOICES), ("divergence", DIVERGENCES),
                              ("iw_bound", IW_BOUNDS), ("cross_style", CROSS_STYLES),
                              ("subset_posterior", SUBSET_POSTERIOR_CHOICES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.num_samples < 1 or (self.estimator == "elbo" and self.num_samples != 1):
            raise ValueError(f"num_samples={self.num_samples}: the elbo estimator uses 1 sample, "
                             "iwae/dreg need num_samples >= 1")
        if not (math.isfinite(self.beta) and self.beta >= 0) or self.kl_anneal_steps < 0 \
                or self.random_subset_terms < 0:
            raise ValueError("beta must be finite and non-negative, kl_anneal_steps and random_subset_terms "
                             "non-negative")
        if not (math.isfinite(self.free_bits) and self.free_bits >= 0):
            raise ValueError(f"free_bits must be finite and non-negative (nats per latent dimension), got "
                             f"{self.free_bits}")
        if self.max_subsets is not None and self.max_subsets < 1:
            raise ValueError(f"max_subsets must be positive or None, got {self.max_subsets}")
        if not 0.0 <= self.tc_ratio <= 1.0:
            raise ValueError(f"tc_ratio must lie in [0, 1], got {self.tc_ratio}")
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Options that exist only together with others."""
        if self.divergence != "prior" and (self.estimator != "elbo" or self.free_bits):
            raise ValueError(f"divergence={self.divergence!r} (mmJSD, MVTCAE) is defined for the elbo estimator "
                             "without free bits")
        if self.iw_bound == "tight" and self.estimator == "elbo":
            raise ValueError("iw_bound='tight' is a choice of the iwae and dreg estimators")
        if self.cross_style == "auxiliary" and (self.free_bits or self.divergence != "prior"):
            raise ValueError("cross_style='auxiliary' (MMVAE+) is defined without free bits and with the prior as "
                             "divergence")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


#: The named objectives, one record each: subsets, estimator and the model's posterior policies
#: (the mixture models never multiply experts, so their posterior given a subset is the experts' mixture).
OBJECTIVES: dict[str, ObjectiveConfig] = {
    "mopoe": ObjectiveConfig("mopoe", "powerset", prior_expert="full_set", subset_posterior="product"),
    "mmvae": ObjectiveConfig("mmvae", "singletons", prior_expert="never", subset_posterior="mixture"),
    "mmvae_iw": ObjectiveConfig("mmvae_iw", "singletons", estimator="dreg", num_samples=30, prior_expert="never",
                                subset_posterior="mixture"),
    "mvae": ObjectiveConfig("mvae", "full", unimodal_terms=True, prior_expert="always", subset_posterior="product"),
    "mmjsd": ObjectiveConfig("mmjsd", "singletons", divergence="jsd", prior_expert="never",
                             subset_posterior="mixture"),
    "mvtcae": ObjectiveConfig("mvtcae", "full", divergence="tc", tc_ratio=5 / 6, prior_expert="never",
                              subset_posterior="product"),
    "mmvae_plus": ObjectiveConfig("mmvae_plus", "singletons", beta=2.5, prior_expert="never",
                                  subset_posterior="mixture", cross_style="auxiliary"),
}
#: The options of a named objective that an experiment may override (its subsets define it; the library's
#: :func:`make_objective` accepts ``subsets`` too, to show that the three models are one code path).
OBJECTIVE_OPTIONS: tuple[str, ...] = tuple(f.name for f in fields(ObjectiveConfig) if f.name not in ("name", "subsets"))


def make_objective(name: str, **overrides: object) -> Objective:
    """A named objective (``mopoe``, ``mmvae``, ``mmvae_iw``, ``mvae``, ``mmjsd``, ``mvtcae``, ``mmvae_plus``)
    with optional field overrides.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or invalid overrides.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVES)}")
    valid = ("subsets", *OBJECTIVE_OPTIONS)
    unknown = set(overrides) - set(valid)
    if unknown:
        raise ValueError(f"unknown objective options {sorted(unknown)}; valid: {', '.join(valid)}")
    return Objective(replace(OBJECTIVES[name], **overrides))


@dataclass(frozen=True)
class Term:
    """One term: the bound at beta = 1 per row (B,), the differentiable objective at the current beta (B,),
    weighted log-likelihoods (M, B) and the KL term (B,)."""

    bound: Tensor
    surrogate: Tensor
    log_likelihood: Tensor
    kl: Tensor


@dataclass
class LossOutput:
    """What one call returns: ``loss`` to minimise, and detached diagnostics averaged over the batch.

    ``elbo`` and ``per_row`` are the main term's bound at beta = 1 (a true lower bound of the log-likelihood
    with the recon weights as likelihood exponents), whatever beta the loss uses.
    """

    loss: Tensor
    elbo: Tensor
    recon: Tensor
    kl: Tensor
    beta: float
    per_row: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)

    def logged(self, names: Sequence[str]) -> tuple[tuple[str, ...], Tensor]:
        """The logged quantities as names and one detached float64 vector on the loss's device: ``loss``,
        ``elbo``, ``kl``, ``recon`` and ``recon/<modality>``. Stacking these vectors over steps and reading them
        once spares the host a wait for the GPU at every step."""
        keys = ("loss", "elbo", "kl", "recon", *(f"recon/{n}" for n in names))
        if len(keys) != 4 + len(self.recon):
            raise ValueError(f"{len(names)} names for {len(self.recon)} modalities")
        head = [t.detach().double().reshape(1) for t in (self.loss, self.elbo, self.kl, self.recon.sum())]
        return keys, torch.cat([*head, self.recon.detach().double()])

    def as_floats(self, names: Sequence[str]) -> dict[str, float]:
        """Flat ``{name: value}`` for logging (``recon/<modality>`` per modality, and ``beta``)."""
        keys, values = self.logged(names)
        return {**dict(zip(keys, values.tolist(), strict=True)), "beta": self.beta}


class Objective:
    """Callable objective: ``objective(model, batch, step=..., generator=...) -> LossOutput``."""

    def __init__(self, config: ObjectiveConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"Objective({self.config})"

    def beta_at(self, step: int) -> float:
        """beta, linearly annealed from 0 over ``kl_anneal_steps`` steps when that is set (MVAE)."""
        c = self.config
        return c.beta if c.kl_anneal_steps == 0 else c.beta * min(1.0, step / c.kl_anneal_steps)

    def subsets(self, num_modalities: int, generator: torch.Generator | None = None) -> Tensor:
        """The subsets P of the main term; for a powerset larger than ``max_subsets``, a uniform sample."""
        choice = self.config.subsets
        if choice == "singletons":
            return singletons(num_modalities)
        if choice == "full":
            return full_set(num_modalities)
        limit = self.config.max_subsets
        if limit is not None and 2**num_modalities - 1 > limit:
            return sample_subsets(num_modalities, limit, generator)
        return powerset(num_modalities)

    def __call__(
        self,
        model: MultimodalVAE,
        batch: Batch | Sequence[Tensor],
        available: Tensor | None = None,
        step: int = 0,
        generator: torch.Generator | None = None,
        shard: Shard | None = None,
    ) -> LossOutput:
        """Evaluate the objective on a batch.

        ``generator`` drives subset sampling and the reparameterisation noise. ``shard = (rank, world)`` marks
        the batch as one equal slice of a global batch (data-parallel training): the random numbers of the
        global batch are drawn and sliced, so results match a single process with the global batch.
        """
        if isinstance(batch, Batch):
            x, available = batch.x, batch.available if available is None else available
        else:
            x = tuple(batch)
        if available is not None:
            _check_available(available, model.num_modalities, x[0].shape[0])
        c = self.config
        if model.prior_logits is not None and c.divergence != "prior":
            raise ValueError(f"divergence={c.divergence!r} ({c.name}) compares with the N(0, I) prior: train it "
                             "without learn_prior")
        beta = self.beta_at(step)
        num_modalities = model.num_modalities
        device = x[0].device
        experts, style = model.encode_all(x)  # shared by every term
        main = self.term(model, x, available, experts, self.subsets(num_modalities, generator).to(device), None,
                         beta, generator, shard, style)
        total = main.surrogate
        terms = {"joint" if c.subsets == "full" else c.subsets: main.bound.detach().mean()}
        extra: list[tuple[str, Tensor]] = []
        if c.unimodal_terms and c.estimator == "elbo":
            for name, term in zip(model.names, self.unimodal_elbos(model, x, available, experts, beta, generator,
                                                                   shard, style), strict=True):
                total = total + term.surrogate
                terms[f"unimodal/{name}"] = term.bound.detach().mean()
        elif c.unimodal_terms:
            unimodal = singletons(num_modalities)
            extra += [(f"unimodal/{model.names[m]}", unimodal[m:m + 1]) for m in range(num_modalities)]
        if c.random_subset_terms:
            picks = sample_subsets(num_modalities, c.random_subset_terms, generator)
            extra += [(f"random/{i}", picks[i:i + 1]) for i in range(c.random_subset_terms)]
        for label, subset in extra:
            members = torch.nonzero(subset[0]).flatten().tolist()
            term = self.term(model, x, available, experts, subset.to(device), members, beta, generator, shard,
                             style)
            total = total + term.surrogate
            terms[label] = term.bound.detach().mean()
        return LossOutput(
            loss=-total.mean(),
            elbo=main.bound.detach().mean(),
            recon=main.log_likelihood.detach().mean(dim=1),
            kl=main.kl.detach().mean(),
            beta=beta,
            per_row=main.bound.detach(),
            terms=terms,
        )

    def term(
        self,
        model: MultimodalVAE,
        x: Sequence[Tensor],
        available: Tensor | None,
        experts: tuple[Tensor, Tensor],
        subsets: Tensor,
        reconstruct: list[int] | None,
        beta: float,
        generator: torch.Generator | None,
        shard: Shard | None = None,
        style: StyleParams | None = None,
    ) -> Term:
        """One bound over the mixture of ``subsets``, reconstructing ``reconstruct`` (all when ``None``).

        ``style``: the style posteriors from :meth:`MultimodalVAE.encode_all` (models with modality-specific
        latents).
        """
        style = style if style is not None else [None] * model.num_modalities
        mixture = model.posterior(x, subsets, available, experts)
        if self.config.divergence == "jsd":
            mixture = with_prior_component(mixture)
        # rows for which no subset has an available modality (e.g. an MVAE unimodal term for a missing
        # modality) contribute nothing to this term
        mask = None if available is None else available.to(experts[0].dtype) * (mixture.weights.sum(0) > 0)
        if self.config.estimator == "elbo" and self.config.cross_style == "auxiliary":
            return self._borrowed_style_sample(model, x, mixture, reconstruct, mask, beta, generator, shard, style)
        if self.config.estimator == "elbo":
            z, _ = mixture.sample(generator, self.config.sampling, shard)
            ws = model.draw_style(style, reconstruct, (), generator, shard)
            ll = model.log_likelihoods(model.decode(z, reconstruct, ws), x, mask)  # (M, B)
            if mask is not None:
                ll = ll * mask
            style_kl = _style_kl(style, ws, mask)
            recon = ll.sum(dim=0)
            if self.config.divergence == "jsd":
                divergence = jsd_dynamic_prior(mixture)
            elif self.config.divergence == "tc":
                recon, divergence = total_correlation_terms(mixture, experts, available, recon, self.config.tc_ratio)
            else:
                divergence = mixture.kl_upper_bound(model.prior_logvar())
            kl = divergence + style_kl
            trained = kl if not self.config.free_bits else self._free_bits(mixture, mask, model) + style_kl
            return Term(recon - kl, recon - beta * trained, ll, kl)
        return self._importance_weighted(model, x, mixture, reconstruct, mask, beta, generator, shard, style)

    def _free_bits(self, mixture: SubsetMixture, mask: Tensor | None, model: MultimodalVAE) -> Tensor:
        """The KL as the *surrogate* sees it under free bits (Kingma et al. 2016): a latent dimension whose KL,
        averaged over the batch, is below ``free_bits`` nats costs nothing more (no gradient pushes it lower).
        Values differ from the KL by a constant per step; the reported bound always uses the full KL."""
        per_dim = mixture.kl_upper_bound_per_dim(model.prior_logvar())  # (B, D)
        rows = per_dim if mask is None else per_dim[mask.amax(dim=0) > 0]
        kept = (rows.mean(dim=0) >= self.config.free_bits).to(per_dim.dtype).detach() if rows.numel() else 1.0
        return (per_dim * kept).sum(dim=-1)

    def unimodal_elbos(
        self,
        model: MultimodalVAE,
        x: Sequence[Tensor],
        available: Tensor | None,
        experts: tuple[Tensor, Tensor],
        beta: float,
        generator: torch.Generator | None,
        shard: Shard | None = None,
        style: StyleParams | None = None,
    ) -> list[Term]:
        """MVAE's M unimodal ELBO terms, ELBO(x_m) with z ~ q(z | x_m), computed together.

        The same terms as M calls of :meth:`term` with the subset {m} reconstructing m, but all M posteriors
        are sampled at once and decoded in one pass (:meth:`MultimodalVAE.decode_each`).
        """
        style = style if style is not None else [None] * model.num_modalities
        posterior = model.posterior(x, singletons(model.num_modalities).to(experts[0].device), available, experts)
        z = reparameterize(posterior.mu, posterior.logvar, generator, shard)  # (M, B, D): z[m] ~ q(z | x_m)
        ws = model.draw_style(style, None, (), generator, shard)
        ll = model.log_likelihoods(model.decode_each(z, ws, generator), x, available)  # (M, B): log p(x_m | z[m])
        kl = posterior.kl_per_subset(model.prior_logvar())  # (M, B)
        if available is not None:
            mask = available.to(ll.dtype)
            ll, kl = ll * mask, kl * mask
        terms = []
        for m in range(model.num_modalities):
            kl_m = kl[m] + _style_kl(style, [w if i == m else None for i, w in enumerate(ws)], available)
            only_m = (torch.arange(model.num_modalities, device=ll.device) == m)[:, None]
            terms.append(Term(ll[m] - kl_m, ll[m] - beta * kl_m, ll * only_m, kl_m))
        return terms

    def _borrowed_style_sample(self, model, x, mixture, reconstruct, mask, beta, generator, shard, style) -> Term:
        """MMVAE+ with one z per row from one component (stratified): the importance weight of that sample,
        log p(X | z, w) + log p(z) - log q(z | X) plus the encoded styles' log p(w) - log q(w | x)."""
        z, chosen = mixture.sample(generator, self.config.sampling, shard)  # (B, D), (B,)
        encoded = mixture.subsets[chosen].T.to(z.dtype)  # (M, B): the chosen component's modalities
        ws = _mix_styles(model.draw_style(style, reconstruct, (), generator, shard),
                         model.draw_auxiliary_style(z, reconstruct, (), generator, shard), encoded[..., None])
        ll = model.log_likelihoods(model.decode(z, reconstruct, ws), x, mask)  # (M, B)
        ratio = model.style_log_ratio(ws, style)
        weight = encoded if mask is None else encoded * mask
        log_prior_ratio = model.prior_log_prob(z) - mixture.log_prob(z)
        if ratio is not None:
            log_prior_ratio = log_prior_ratio + (ratio * weight).sum(dim=0)
        if mask is not None:
            ll = ll * mask
        recon = ll.sum(dim=0)
        return Term(recon + log_prior_ratio, recon + beta * log_prior_ratio, ll, -log_prior_ratio)

    def _importance_weighted(self, model, x, mixture, reconstruct, mask, beta, generator, shard, style) -> Term:
        num = self.config.num_samples
        dreg = self.config.estimator == "dreg"
        zs = mixture.rsample_per_component(num, generator, shard)  # (S, C, B, D)
        drawn = model.draw_style(style, reconstruct, (num, mixture.num_components), generator, shard)
        ws, encoded = drawn, None
        if self.config.cross_style == "auxiliary":
            ws, encoded = _borrowed_styles(model, drawn, mixture, reconstruct, num, generator, shard)
        ll = model.log_likelihoods(model.decode(zs, reconstruct, ws), x, mask)  # (M, S, C, B)
        style_ratio = model.style_log_ratio(ws, style, detach_params=dreg)  # (M, S, C, B) or None
        if style_ratio is not None and encoded is not None:
            style_ratio = style_ratio * encoded  # only encoded styles are importance-weighted
        if mask is not None:
            ll = ll * mask[:, None, None, :]
            style_ratio = None if style_ratio is None else style_ratio * mask[:, None, None, :]
        log_q = mixture.log_prob(zs, detach_params=dreg)  # (S, C, B)
        log_prior_ratio = model.prior_log_prob(zs) - log_q
        if style_ratio is not None:
            log_prior_ratio = log_prior_ratio + style_ratio.sum(dim=0)
        log_w = ll.sum(dim=0) + beta * log_prior_ratio
        valid = mixture.weights > 0

        def average(per_component: Tensor) -> Tensor:  # (C, B) -> (B,), over each row's components
            return (torch.where(valid, per_component, 0.0) * mixture.weights).sum(dim=0)

        tight = self.config.iw_bound == "tight"
        # tight: one logsumexp over samples and components, each component's samples weighed by its weight
        log_pi = torch.where(valid, mixture.weights, 1.0).log().where(valid, -math.inf)

        def iw_bound(weights: Tensor) -> Tensor:
            if tight:
                return torch.logsumexp((weights + log_pi).flatten(0, 1), dim=0) - math.log(num)
            return average(torch.logsumexp(weights, dim=0) - math.log(num))

        objective = iw_bound(log_w)
        bound = objective if beta == 1.0 else iw_bound((ll.sum(dim=0) + log_prior_ratio).detach())
        if dreg:
            with torch.no_grad():
                if tight:
                    w_tilde = torch.softmax((log_w + log_pi).flatten(0, 1), dim=0).view_as(log_w)
                else:
                    w_tilde = torch.softmax(log_w, dim=0)
            for sample in (zs, *(w for w in drawn if w is not None)):
                if sample.requires_grad:
                    sample.register_hook(lambda grad: w_tilde.unsqueeze(-1) * grad)
            per_component = torch.where(valid, (w_tilde * log_w).sum(dim=0), 0.0)
            surrogate = per_component.sum(dim=0) if tight else average(per_component)
        else:
            surrogate = objective
        per_modality = (ll.mean(dim=1) * mixture.weights).sum(dim=1)  # (M, B), averaged over samples
        kl = mixture.kl_upper_bound(model.prior_logvar()) + _style_kl(style, ws, mask)
        return Term(bound, surrogate, per_modality, kl)


def _borrowed_styles(model: MultimodalVAE, drawn: list[Tensor | None], mixture: SubsetMixture,
                     reconstruct: list[int] | None, num: int, generator: torch.Generator | None,
                     shard: Shard | None) -> tuple[list[Tensor | None], Tensor]:
    """MMVAE+'s styles ``(S, C, B, S_m)``: the encoded ones for a component's own modalities, draws from the
    auxiliary prior for the others; and ``(M, 1, C, 1)``, 1 where the style is encoded."""
    encoded = mixture.subsets.T.to(mixture.mu.dtype)[:, None, :, None]  # (M, 1, C, 1)
    borrowed = model.draw_auxiliary_style(mixture.mu[0], reconstruct, (num, mixture.num_components), generator,
                                          shard)
    return _mix_styles(drawn, borrowed, encoded[..., None]), encoded


def _mix_styles(drawn: list[Tensor | None], borrowed: list[Tensor | None], encoded: Tensor) -> list[Tensor | None]:
    """Per modality m, the encoded style where ``encoded[m]`` (broadcast to the styles' shape) is 1, else the
    auxiliary draw."""
    return [w if w is None or r is None else torch.where(encoded[m] > 0, w, r)
            for m, (w, r) in enumerate(zip(drawn, borrowed, strict=True))]


def with_prior_component(mixture: SubsetMixture) -> SubsetMixture:
    """The mixture with the prior N(0, I) as one more component (an empty subset), every valid component of a
    row weighing the same (mmJSD)."""
    _, batch, dim = mixture.mu.shape
    zeros = mixture.mu.new_zeros(1, batch, dim)
    valid = torch.cat([(mixture.weights > 0).to(mixture.weights.dtype), mixture.weights.new_ones(1, batch)])
    empty = torch.zeros(1, mixture.subsets.shape[1], dtype=torch.bool, device=mixture.subsets.device)
    return SubsetMixture(torch.cat([mixture.mu, zeros]), torch.cat([mixture.logvar, zeros]),
                         torch.cat([mixture.subsets, empty]), valid / valid.sum(dim=0, keepdim=True))


def dynamic_prior(mixture: SubsetMixture) -> tuple[Tensor, Tensor]:
    """mmJSD's dynamic prior: the normalised weighted geometric mean :math:`f \\propto \\prod_k q_k^{w_k}` of the
    mixture's Gaussian components, itself a Gaussian ``(B, D)``: precisions add with the weights."""
    precision = (mixture.weights[:, :, None] * torch.exp(-mixture.logvar)).sum(dim=0)
    mean = (mixture.weights[:, :, None] * mixture.mu * torch.exp(-mixture.logvar)).sum(dim=0) / precision
    return mean, -torch.log(precision)


def jsd_dynamic_prior(mixture: SubsetMixture) -> Tensor:
    """``(B,)``: :math:`\\sum_k w_k \\mathrm{KL}(q_k \\| f)` with f the :func:`dynamic_prior` (mmJSD's
    regulariser; an upper bound of the components' Jensen-Shannon divergence)."""
    mean, logvar = dynamic_prior(mixture)
    return (mixture.weights * gaussian_kl(mixture.mu, mixture.logvar, mean, logvar)).sum(dim=0)


def gaussian_kl(mu: Tensor, logvar: Tensor, mu_2: Tensor, logvar_2: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) || N(mu_2, e^logvar_2)) of diagonal Gaussians, summed over the last dimension."""
    return 0.5 * (logvar_2 - logvar + (torch.exp(logvar) + (mu - mu_2).pow(2)) * torch.exp(-logvar_2)
                  - 1.0).sum(dim=-1)


def total_correlation_terms(mixture: SubsetMixture, experts: tuple[Tensor, Tensor], available: Tensor | None,
                            recon: Tensor, tc_ratio: float) -> tuple[Tensor, Tensor]:
    """MVTCAE's weighted reconstruction and regulariser ``(B,)`` each, for the joint posterior q (the mixture's
    one component): ``(M - a)/M * recon`` and ``(1 - a) KL(q || N(0, I)) + a/M sum_m KL(q || q_m)``, with M the
    number of modalities each row has."""
    mu, logvar = experts  # (M, B, D)
    per_view = gaussian_kl(mixture.mu[0][None], mixture.logvar[0][None], mu, logvar)  # (M, B)
    present = torch.ones_like(per_view) if available is None else available.to(per_view.dtype)
    count = present.sum(dim=0)
    views = (per_view * present).sum(dim=0)
    return (count - tc_ratio) / count * recon, (1 - tc_ratio) * mixture.kl_upper_bound() + tc_ratio / count * views


def _check_available(available: Tensor, num_modalities: int, batch: int) -> None:
    """An availability mask must be bool ``(M, B)`` and leave every row at least one modality."""
    if available.dtype != torch.bool or tuple(available.shape) != (num_modalities, batch):
        raise ValueError(f"available must be a bool tensor of shape (M, B) = ({num_modalities}, {batch}), got "
                         f"{available.dtype} {tuple(available.shape)}")
    if available.device.type == "cpu" and not bool(available.any(dim=0).all()):
        empty = torch.nonzero(~available.any(dim=0)).flatten().tolist()
        raise ValueError(f"rows {empty[:10]} have no available modality: drop them from the batch (the bound of "
                         "a row with nothing observed is 0 and would only dilute the loss)")


def _style_kl(style: StyleParams, drawn: Sequence[Tensor | None], mask: Tensor | None) -> Tensor | float:
    """Sum over the modalities with a drawn style of KL(q(w_m | x_m) || N(0, I)), ``(B,)`` (masked rows: 0)."""
    total: Tensor | float = 0.0
    for m, (params, w) in enumerate(zip(style, drawn, strict=True)):
        if params is not None and w is not None:
            kl = kl_to_standard_normal(*params)
            total = total + (kl if mask is None else kl * mask[m])
    return total
