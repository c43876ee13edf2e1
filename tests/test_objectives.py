"""Objectives on the exact linear-Gaussian toy, and the one-code-path property of the three models."""

from __future__ import annotations

import math

import pytest
import torch

from mopoe_lib.fusion import full_set, kl_to_standard_normal, powerset, product_of_experts
from mopoe_lib.likelihoods import Laplace
from mopoe_lib.model import MultimodalVAE
from mopoe_lib.networks import LinearDecoder, LinearEncoder
from mopoe_lib.objectives import OBJECTIVES, make_objective
from mopoe_lib.toy import LinearGaussianToy

POINTS, REPEATS = 4, 20_000


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=3, noise=0.5, seed=1)


@pytest.fixture(scope="module")
def data(toy):
    _, xs = toy.sample(POINTS, torch.Generator().manual_seed(0))
    return xs, toy.log_marginal(xs)


def _estimate(objective, model, xs, repeats=REPEATS, seed=0):
    """Monte-Carlo mean and standard error of the per-row bound for each data point."""
    tiled = [x.repeat_interleave(repeats, 0) for x in xs]
    with torch.no_grad():
        out = objective(model, tiled, generator=torch.Generator().manual_seed(seed))
    rows = out.per_row.view(len(xs[0]), repeats)
    return rows.mean(1), rows.std(1) / math.sqrt(repeats)


@pytest.mark.parametrize("name", ["mvae", "mmvae", "mopoe"])
@pytest.mark.parametrize("exact_encoders", [True, False])
def test_every_objective_is_a_lower_bound(toy, data, name, exact_encoders):
    xs, log_px = data
    torch.manual_seed(3)
    model = toy.model(OBJECTIVES[name].prior_expert, exact_encoders=exact_encoders)
    mean, stderr = _estimate(make_objective(name, beta=1.0), model, xs)
    assert (mean <= log_px + 4 * stderr).all(), (mean, log_px)


def test_gap_closes_for_the_poe_at_the_true_posterior(toy, data):
    xs, log_px = data
    mean, stderr = _estimate(make_objective("mvae"), toy.model("always"), xs)
    assert ((mean - log_px).abs() < 4 * stderr + 1e-3).all(), (mean, log_px)
    # and every subset's PoE is that subset's exact posterior
    mu, logvar = toy.experts(xs)
    for subset in ([0], [1, 2], [0, 1, 2]):
        mask = torch.zeros(1, 3, dtype=torch.bool)
        mask[0, subset] = True
        fused_mu, fused_lv = product_of_experts(mu, logvar, mask, prior_expert=True)
        true_mu, true_lv = toy.posterior(xs, subset)
        torch.testing.assert_close(fused_mu[0], true_mu)
        torch.testing.assert_close(fused_lv[0], true_lv)


def test_mixtures_leave_a_gap_even_with_exact_experts(toy, data):
    xs, log_px = data
    for name in ("mmvae", "mopoe"):
        mean, stderr = _estimate(make_objective(name), toy.model(OBJECTIVES[name].prior_expert), xs)
        assert (mean < log_px - 0.1).all()


def test_importance_weighted_bounds_tighten_with_k(toy, data):
    xs, log_px = data
    model = toy.model("never")
    elbo, _ = _estimate(make_objective("mmvae"), model, xs, repeats=4000)
    previous = elbo
    for k in (1, 5, 50):
        bound, stderr = _estimate(make_objective("mmvae_iw", num_samples=k, estimator="iwae"), model, xs, repeats=2000)
        assert (bound >= previous - 4 * stderr - 0.02).all()  # K=1 is the mixture's own ELBO, above the KL bound
        assert (bound <= log_px + 4 * stderr).all()
        previous = bound
    assert ((log_px - previous) < 0.15 * (log_px - elbo)).all()  # K=50 closes most of the gap


def test_the_tight_bound_averages_components_inside_the_log_and_is_at_least_the_looser_one(toy, data):
    """Shi et al.'s two bounds from the same samples: log mean over all M K weights against the mean over
    components of each one's log mean; Jensen orders them sample by sample, and both stay below log p(X)."""
    xs, log_px = data
    model = toy.model("never")
    tiled = [x.repeat_interleave(500, 0) for x in xs]
    out = {}
    with torch.no_grad():
        for kind in ("looser", "tight"):
            out[kind] = make_objective("mmvae_iw", num_samples=4, estimator="iwae", iw_bound=kind)(
                model, tiled, generator=torch.Generator().manual_seed(3)).per_row
        # the tight value from the looser estimator's own samples: redo the weights independently
        from mopoe_lib.fusion import singletons, standard_normal_log_prob

        g = torch.Generator().manual_seed(3)
        mixture = model.posterior(tiled, singletons(3), None, model.encode(tiled))
        zs = mixture.rsample_per_component(4, g)  # (K, M, B, D): the same draws as the objective's
        log_w = model.log_likelihoods(model.decode(zs), tiled).sum(0) + standard_normal_log_prob(zs) \
            - mixture.log_prob(zs)
        expected = torch.logsumexp(log_w.flatten(0, 1), dim=0) - math.log(12)
    torch.testing.assert_close(out["tight"], expected)
    assert (out["tight"] >= out["looser"] - 1e-9).all()
    rows = out["tight"].view(len(xs[0]), 500)
    assert (rows.mean(1) <= log_px + 4 * rows.std(1) / math.sqrt(500)).all()
    assert (rows.mean(1) > out["looser"].view(len(xs[0]), 500).mean(1)).all()
    with pytest.raises(ValueError, match="iw_bound"):
        make_objective("mmvae", iw_bound="tight")


@pytest.mark.parametrize("iw_bound", ["looser", "tight"])
def test_dreg_has_the_iwae_value_and_decoder_gradient_but_a_different_encoder_gradient(toy, data, iw_bound):
    xs, _ = data
    grads = {}
    for estimator in ("iwae", "dreg"):
        torch.manual_seed(0)
        model = toy.model("never", exact_encoders=False)
        out = make_objective("mmvae_iw", num_samples=8, estimator=estimator, iw_bound=iw_bound)(
            model, xs, generator=torch.Generator().manual_seed(5))
        out.loss.backward()
        grads[estimator] = (out.elbo, model.decoders[0].linear.weight.grad.clone(),
                            model.encoders[0].mu.weight.grad.clone())
    assert torch.equal(grads["iwae"][0], grads["dreg"][0])
    torch.testing.assert_close(grads["iwae"][1], grads["dreg"][1])
    assert not torch.allclose(grads["iwae"][2], grads["dreg"][2])


def test_mvae_and_mmvae_are_the_mopoe_code_path_with_other_subsets(toy, data):
    xs, _ = data
    model = toy.model("always", exact_encoders=False)

    def run(objective):
        return objective(model, xs, generator=torch.Generator().manual_seed(9))

    joint = run(make_objective("mvae"))
    as_mopoe = run(make_objective("mopoe", subsets="full"))
    assert torch.equal(joint.terms["joint"], as_mopoe.elbo) and torch.equal(joint.per_row, as_mopoe.per_row)
    assert torch.equal(run(make_objective("mmvae")).loss, run(make_objective("mopoe", subsets="singletons")).loss)
    # the KL reported for the single full-set "mixture" is the analytic KL of the PoE
    mu, logvar = model.encode(xs)
    fused_mu, fused_lv = product_of_experts(mu, logvar, full_set(3), prior_expert=True)
    torch.testing.assert_close(joint.kl, kl_to_standard_normal(fused_mu[0], fused_lv[0]).mean())


def test_missing_modalities_do_not_contribute(toy, data):
    xs, _ = data
    model = toy.model("full_set", exact_encoders=False)
    available = torch.ones(3, POINTS, dtype=torch.bool)
    available[1, :2] = False
    changed = [x.clone() for x in xs]
    changed[1][:2] += 100.0
    for name in ("mopoe", "mmvae", "mvae"):
        objective = make_objective(name)
        a = objective(model, xs, available, generator=torch.Generator().manual_seed(0))
        b = objective(model, changed, available, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a.loss, b.loss)


def test_many_modalities_use_sampled_subsets():
    latent, num_modalities = 3, 12
    model = MultimodalVAE([LinearEncoder(4, latent) for _ in range(num_modalities)],
                          [LinearDecoder(latent, (4,)) for _ in range(num_modalities)],
                          [Laplace(0.75)] * num_modalities, latent)
    objective = make_objective("mopoe", max_subsets=32)
    subsets = objective.subsets(num_modalities, torch.Generator().manual_seed(0))
    assert subsets.shape == (32, num_modalities)
    out = objective(model, [torch.rand(16, 4) for _ in range(num_modalities)], generator=torch.Generator())
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_kl_annealing_and_mvae_extra_terms():
    objective = make_objective("mvae", kl_anneal_steps=100, beta=2.0, random_subset_terms=2)
    assert objective.beta_at(0) == 0.0 and objective.beta_at(50) == 1.0 and objective.beta_at(500) == 2.0
    toy = LinearGaussianToy.random(seed=0)
    _, xs = toy.sample(8)
    out = objective(toy.model("always"), xs, step=50, generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {"joint", "unimodal/m0", "unimodal/m1", "unimodal/m2", "random/0", "random/1"}
    assert out.beta == 1.0


def test_configuration_errors_list_the_choices():
    with pytest.raises(ValueError, match=", ".join(OBJECTIVES)):
        make_objective("jmvae")
    with pytest.raises(ValueError, match="unknown objective options"):
        make_objective("mopoe", betta=2)
    with pytest.raises(ValueError, match="elbo, iwae, dreg"):
        make_objective("mopoe", estimator="vimco")
    with pytest.raises(ValueError, match="stratified, random, paper"):
        make_objective("mopoe", sampling="greedy")


def test_mvae_unimodal_terms_are_each_modalitys_elbo(toy, data):
    """Computed together, the M unimodal terms are still ELBO(x_m): at the true posterior, log p(x_m)."""
    xs, _ = data
    model = toy.model("always")
    tiled = [x.repeat_interleave(REPEATS, 0) for x in xs]
    with torch.no_grad():
        experts, _ = model.encode_all(tiled)
        terms = make_objective("mvae").unimodal_elbos(model, tiled, None, experts, 1.0,
                                                      torch.Generator().manual_seed(0))
    for m, term in enumerate(terms):
        rows = term.bound.view(POINTS, REPEATS)
        mean, stderr = rows.mean(1), rows.std(1) / math.sqrt(REPEATS)
        exact = toy.log_marginal(xs, [m])
        assert ((mean - exact).abs() < 4 * stderr + 1e-3).all(), (m, mean, exact)
        assert torch.equal(term.log_likelihood[torch.arange(3) != m], torch.zeros(2, POINTS * REPEATS))


def test_free_bits_stop_the_kl_gradient_of_dimensions_below_the_threshold_and_leave_the_bound_alone(toy, data):
    """With free bits the reported bound is the ELBO; the surrogate's KL gradient vanishes for the latent
    dimensions whose batch-mean KL is below the threshold, and is unchanged for the others."""
    xs, _ = data
    model = toy.model("full_set", exact_encoders=False)

    def run(free_bits: float):
        model.zero_grad()
        out = make_objective("mopoe", free_bits=free_bits, beta=1.0)(model, xs,
                                                                     generator=torch.Generator().manual_seed(3))
        out.loss.backward()
        return out, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = run(0.0)
    mixture = model.posterior(xs, powerset(3))
    per_dim = mixture.kl_upper_bound_per_dim().mean(dim=0).detach()
    threshold = float(per_dim.max()) + 1.0  # every dimension below: the KL drops out of the surrogate
    freed, freed_grads = run(threshold)
    assert torch.equal(plain.elbo, freed.elbo) and torch.equal(plain.kl, freed.kl)
    recon_only = make_objective("mopoe", beta=0.0)
    model.zero_grad()
    recon_only(model, xs, generator=torch.Generator().manual_seed(3)).loss.backward()
    for key, grad in freed_grads.items():
        torch.testing.assert_close(grad, model.get_parameter(key).grad, msg=key)  # no KL gradient left
    assert any(not torch.allclose(plain_grads[k], freed_grads[k]) for k in plain_grads)
    with pytest.raises(ValueError, match="free_bits"):
        make_objective("mopoe", free_bits=-1.0)


# ------------------------------------------------------------------------------------------------------- mmJSD


def _random_mixture(components: int, batch: int, dim: int, seed: int):
    from mopoe_lib.fusion import SubsetMixture

    g = torch.Generator().manual_seed(seed)
    weights = torch.rand(components, batch, generator=g, dtype=torch.float64) + 0.1
    return SubsetMixture(torch.randn(components, batch, dim, generator=g, dtype=torch.float64) * 1.5,
                         torch.randn(components, batch, dim, generator=g, dtype=torch.float64) * 0.7,
                         torch.ones(components, 1, dtype=torch.bool), weights / weights.sum(0))


def test_the_dynamic_prior_is_the_normalised_weighted_geometric_mean():
    from mopoe_lib.fusion import gaussian_log_prob
    from mopoe_lib.objectives import dynamic_prior

    mixture = _random_mixture(4, 3, 1, seed=0)
    grid = torch.linspace(-12, 12, 20_001, dtype=torch.float64)
    log_geo = (mixture.weights[:, None, :] * gaussian_log_prob(grid[None, :, None, None], mixture.mu[:, None],
                                                               mixture.logvar[:, None])).sum(0)  # (G, B)
    geo = log_geo.exp() / torch.trapezoid(log_geo.exp(), grid, dim=0)
    mean, logvar = dynamic_prior(mixture)
    f = gaussian_log_prob(grid[:, None, None], mean, logvar).exp()
    assert (geo - f).abs().max() < 1e-8


def test_the_mmjsd_regulariser_is_the_jensen_shannon_divergence_plus_kl_of_the_mixture_to_the_dynamic_prior():
    """sum_k w_k KL(q_k || f) = JS_w(q_1..q_K) + KL(sum_k w_k q_k || f) >= JS_w, by numerical integration."""
    from mopoe_lib.fusion import gaussian_log_prob
    from mopoe_lib.objectives import dynamic_prior, jsd_dynamic_prior

    mixture = _random_mixture(4, 3, 1, seed=1)
    grid = torch.linspace(-15, 15, 30_001, dtype=torch.float64)
    log_q = gaussian_log_prob(grid[None, :, None, None], mixture.mu[:, None], mixture.logvar[:, None])  # (K, G, B)
    w = mixture.weights[:, None, :]
    mix = (w * log_q.exp()).sum(0)  # (G, B)
    log_f = gaussian_log_prob(grid[:, None, None], *dynamic_prior(mixture))
    js = (w * torch.trapezoid(log_q.exp() * (log_q - mix.log()), grid, dim=1)[:, None]).sum(0)[0]
    kl_mix_f = torch.trapezoid(mix * (mix.log() - log_f), grid, dim=0)
    regulariser = jsd_dynamic_prior(mixture)
    torch.testing.assert_close(regulariser, js + kl_mix_f, atol=1e-6, rtol=1e-6)
    assert (kl_mix_f > 0).all() and (js <= math.log(4) + 1e-9).all()


def test_mmjsd_adds_the_prior_as_a_component_and_averages_every_components_reconstruction(toy, data):
    """The mmJSD value on the exact toy equals an independent estimate: the mean over the M unimodal posteriors
    and the prior of E[log p(X | z)], minus the regulariser; and it is not a bound of log p(X)."""
    from mopoe_lib.fusion import reparameterize, singletons
    from mopoe_lib.objectives import jsd_dynamic_prior, with_prior_component

    xs, log_px = data
    model = toy.model("never")
    mean, stderr = _estimate(make_objective("mmjsd"), model, xs)
    with torch.no_grad():
        mixture = with_prior_component(model.posterior(xs, singletons(3), None, model.encode(xs)))
        assert torch.allclose(mixture.weights, torch.full_like(mixture.weights, 0.25))
        g = torch.Generator().manual_seed(7)
        recon = torch.zeros(len(xs[0]), dtype=torch.float64)
        for k in range(4):
            z = reparameterize(mixture.mu[k].repeat_interleave(REPEATS, 0),
                               mixture.logvar[k].repeat_interleave(REPEATS, 0), g)
            tiled = [x.repeat_interleave(REPEATS, 0) for x in xs]
            ll = model.log_likelihoods(model.decode(z), tiled).sum(0).double()
            recon += 0.25 * ll.view(len(xs[0]), REPEATS).mean(1)
        expected = recon - jsd_dynamic_prior(mixture).double()
    assert ((mean.double() - expected).abs() < 5 * stderr.double() + 0.05).all(), (mean, expected)
    assert torch.isfinite(mean).all() and (mean < log_px).any()


@pytest.mark.parametrize("name,options", [("mmjsd", {}), ("mvtcae", {}), ("mmvae-plus", {}),
                                          ("mmvae-plus", {"estimator": "iwae", "num_samples": 1}),
                                          ("mmvae-plus", {"estimator": "dreg", "num_samples": 3})])
def test_relatives_gradients_are_finite_on_a_polymnist_shaped_batch(name, options):
    from mopoe_lib.config import build_model, get_config

    torch.manual_seed(0)
    config = get_config(f"polymnist-fast-{name}", **options)
    model = build_model(config)
    x = [torch.rand(4, 3, 28, 28) for _ in range(5)]
    out = config.make_objective()(model, x, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if config.objective_config.cross_style == "auxiliary":  # MMVAE+: the auxiliary priors learn too
        assert all(float(p.grad.abs().sum()) > 0 for p in model.auxiliary_style_logits)
    else:
        with pytest.raises(ValueError, match="elbo estimator"):
            make_objective(config.objective, estimator="dreg", num_samples=4)


# ------------------------------------------------------------------------------------------------------ MVTCAE


def test_mvtcae_is_the_poe_elbo_at_tc_ratio_zero_and_moves_linearly_with_it(toy, data):
    """At alpha = 0 MVTCAE is the ELBO of the product of the experts; for alpha > 0 (same z) its value changes by
    alpha * (KL(q || p) - l / M - mean_m KL(q || q_m)), the KLs computed here with torch.distributions."""
    from torch.distributions import Normal, kl_divergence

    from mopoe_lib.fusion import full_set

    xs, _ = data
    model = toy.model("never")
    elbo = make_objective("mvae", unimodal_terms=False)(model, xs, generator=torch.Generator().manual_seed(4))
    zero = make_objective("mvtcae", tc_ratio=0.0)(model, xs, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(zero.per_row, elbo.per_row)
    with torch.no_grad():
        mu, logvar = model.encode(xs)
        joint = model.posterior(xs, full_set(3), None, (mu, logvar))
        q = Normal(joint.mu[0], torch.exp(0.5 * joint.logvar[0]))
        kl_prior = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        kl_views = torch.stack([kl_divergence(q, Normal(mu[m], torch.exp(0.5 * logvar[m]))).sum(-1)
                                for m in range(3)])
    recon = zero.per_row + kl_prior  # the same z: l = ELBO + KL(q || p)
    for alpha in (0.3, 5 / 6, 1.0):
        value = make_objective("mvtcae", tc_ratio=alpha)(model, xs, generator=torch.Generator().manual_seed(4))
        expected = zero.per_row + alpha * (kl_prior - recon / 3 - kl_views.mean(0))
        torch.testing.assert_close(value.per_row, expected, rtol=1e-5, atol=1e-4)
