"""Modality-specific ("style") latents, checked against the linear-Gaussian toy with private latents."""

from __future__ import annotations

import math

import pytest
import torch

from mopoe_lib.data.dataset import Batch
from mopoe_lib.evaluation.likelihood import log_likelihood
from mopoe_lib.fusion import full_set, kl_to_standard_normal, product_of_experts
from mopoe_lib.likelihoods import Gaussian
from mopoe_lib.model import MultimodalVAE, prior_expert_flags
from mopoe_lib.networks import GroupedConvDecoder, GroupedConvEncoder
from mopoe_lib.networks.linear import LinearDecoder, LinearEncoder
from mopoe_lib.objectives import make_objective
from mopoe_lib.toy import LinearGaussianToy

STYLE = 2


def _toy(scale: float = 0.6) -> LinearGaussianToy:
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=4, noise=0.5, seed=3,
                                    style_dim=STYLE, style_scale=scale)


def _set_style_posterior(model: MultimodalVAE, mu: float, logvar: float) -> None:
    """Make every q(w_m | x_m) the constant N(mu, exp(logvar)) (the shared part stays exact)."""
    d = model.latent_dim
    with torch.no_grad():
        for enc in model.encoders:
            enc.mu.weight[d:].zero_()
            enc.mu.bias[d:].fill_(mu)
            enc.logvar_bias[d:].fill_(logvar)


def _mc_mean(objective, model, xs, repeats=20_000, seed=2):
    """Monte-Carlo mean and standard error of the per-row bound for each data point."""
    out = objective(model, [x.repeat(repeats, 1) for x in xs], generator=torch.Generator().manual_seed(seed))
    rows = out.per_row.view(repeats, -1)
    return rows.mean(0), rows.std(0) / math.sqrt(repeats)


def test_without_style_loadings_the_style_path_keeps_the_zero_gap():
    """V = 0 and q(w) = p(w): the MVAE ELBO at the true posterior of z has no gap."""
    toy = _toy(scale=0.0)
    _, xs = toy.sample(4, torch.Generator().manual_seed(0))
    model = toy.model("always")
    assert model.style_dims == (STYLE,) * 3 and model.has_style
    mean, stderr = _mc_mean(make_objective("mvae", unimodal_terms=False), model, xs)
    assert ((mean - toy.log_marginal(xs)).abs() < 4 * stderr + 1e-3).all(), (mean, toy.log_marginal(xs))


def test_style_elbo_matches_its_closed_form():
    """E_q[log p(X | z, w)] - KL(q(z)) - sum_m KL(q(w_m)), in closed form for linear decoders."""
    toy = _toy()
    _, xs = toy.sample(3, torch.Generator().manual_seed(0))
    model = toy.model("always")
    mu_w, logvar_w = 0.3, -0.5
    _set_style_posterior(model, mu_w, logvar_w)
    experts = model.encode(xs)
    full = full_set(3)
    z_mu, z_logvar = (t[0] for t in product_of_experts(*experts, full, prior_expert_flags(full, "always")))
    expected = -kl_to_standard_normal(z_mu, z_logvar)
    w_mean = torch.full((3, STYLE), mu_w, dtype=torch.float64)
    w_var = math.exp(logvar_w)
    for m in range(3):
        w, v, b, s = toy.weights[m], toy.style_weights[m], toy.biases[m], toy.noise[m]
        mean = z_mu @ w.T + w_mean @ v.T + b
        gauss = torch.distributions.Normal(mean, s).log_prob(xs[m]).sum(-1)
        trace = (w * w * z_logvar.exp()[:, None, :]).sum((-1, -2)) + w_var * (v * v).sum()
        w_kl = kl_to_standard_normal(w_mean, torch.full_like(w_mean, logvar_w))
        expected = expected + gauss - 0.5 * trace / s**2 - w_kl
    mean, stderr = _mc_mean(make_objective("mvae", unimodal_terms=False), model, xs)
    assert ((mean - expected).abs() < 4 * stderr + 1e-6).all(), (mean, expected, stderr)
    # and it is a lower bound: the factorised q cannot match the coupled posterior
    assert (expected < toy.log_marginal(xs)).all()


def test_importance_sampling_with_style_latents_converges_to_the_exact_likelihood():
    toy = _toy(scale=0.3)
    _, xs = toy.sample(4, torch.Generator().manual_seed(5))
    model = toy.model("always")
    # a proposal broader than the posterior (low-variance weights); q(w) != p(w), so the style ratio matters
    _set_style_posterior(model, 0.1, math.log(1.5))
    with torch.no_grad():
        for enc in model.encoders:
            enc.logvar_bias[:model.latent_dim] += math.log(2.0)
    exact = toy.log_marginal(xs)
    estimate = log_likelihood(model, xs, num_samples=20_000, chunk=5_000, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(estimate, exact, rtol=0, atol=0.04)
    # the IWAE objective over the joint posterior: a bound, close to log p(X) for large K
    iwae = make_objective("mvae", unimodal_terms=False, estimator="iwae", num_samples=5_000)
    bound = iwae(model, xs, generator=torch.Generator().manual_seed(7)).per_row
    assert (bound <= exact + 0.05).all() and (bound > exact - 0.08).all(), (bound, exact)
    # a marginal: x_0 with its own style only
    marginal = log_likelihood(model, xs, num_samples=20_000, chunk=5_000, subsets=torch.tensor([[True, False, False]]),
                              modalities=[0], generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(marginal, toy.log_marginal(xs, [0]), rtol=0, atol=0.04)


def test_dreg_and_iwae_agree_in_value_and_train_the_style_encoders():
    toy = _toy()
    _, xs = toy.sample(8, torch.Generator().manual_seed(0))
    model = toy.model("never", exact_encoders=False)
    values = {}
    for estimator in ("iwae", "dreg"):
        model.zero_grad()
        out = make_objective("mmvae", estimator=estimator, num_samples=4)(model, xs,
                                                                         generator=torch.Generator().manual_seed(9))
        out.loss.backward()
        values[estimator] = out.per_row
        style_grad = model.encoders[0].mu.weight.grad[model.latent_dim:]
        assert torch.isfinite(style_grad).all() and style_grad.abs().sum() > 0
    torch.testing.assert_close(values["iwae"], values["dreg"])


def test_a_missing_modality_contributes_neither_likelihood_nor_style_kl():
    toy = _toy()
    _, xs = toy.sample(6, torch.Generator().manual_seed(0))
    model = toy.model("full_set", exact_encoders=False)
    available = torch.ones(3, 6, dtype=torch.bool)
    available[1, :3] = False
    changed = [x.clone() for x in xs]
    changed[1][:3] += 100.0  # garbage where the modality is missing
    objective = make_objective("mopoe")
    a = objective(model, Batch(tuple(xs), torch.zeros(6), available), generator=torch.Generator().manual_seed(1))
    b = objective(model, Batch(tuple(changed), torch.zeros(6), available), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.per_row, b.per_row)
    full = objective(model, xs, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(full.per_row[:3], a.per_row[:3])


def test_generation_draws_target_styles_from_the_prior():
    toy = _toy()
    _, xs = toy.sample(5, torch.Generator().manual_seed(0))
    model = toy.model("full_set")
    first = model.generate(xs, [0], generator=torch.Generator().manual_seed(1))
    again = model.generate(xs, [0], generator=torch.Generator().manual_seed(1))
    other = model.generate(xs, [0], generator=torch.Generator().manual_seed(2))
    assert [g.shape for g in first] == [x.shape for x in xs]
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first[1], other[1])
    mean = model.generate(xs, [0], sample=False)
    mu, _ = model.infer(xs, [0])
    torch.testing.assert_close(mean[2], mu @ toy.weights[2].T + toy.biases[2])  # prior mean of w is 0
    samples = model.sample_prior(7, torch.Generator().manual_seed(3))
    assert [s.shape for s in samples] == [(7, 4)] * 3


def test_style_needs_per_modality_networks_of_the_right_size():
    with pytest.raises(ValueError, match="one size for every modality"):
        MultimodalVAE(GroupedConvEncoder(2, 12), GroupedConvDecoder(2, 12), [Gaussian()] * 2, 8, style_dims=[4, 2])
    with pytest.raises(ValueError, match="both lists, or both stacked"):
        MultimodalVAE(GroupedConvEncoder(2, 12), [LinearDecoder(12, (3, 28, 28))] * 2, [Gaussian()] * 2, 8,
                      style_dims=[4, 4])
    with pytest.raises(ValueError, match="needs modality-specific latents"):
        MultimodalVAE(GroupedConvEncoder(2, 8), GroupedConvDecoder(2, 8), [Gaussian()] * 2, 8, auxiliary_style=True)
    with pytest.raises(ValueError, match="style_dims needs 2"):
        MultimodalVAE([LinearEncoder(3, 2)] * 2, [LinearDecoder(2, (3,))] * 2, [Gaussian()] * 2, 2, style_dims=[1])
    model = MultimodalVAE([LinearEncoder(3, 2), LinearEncoder(3, 2)], [LinearDecoder(3, (3,))] * 2,
                          [Gaussian()] * 2, 2, style_dims=[1, 1])
    with pytest.raises(ValueError, match=r"latent_dim \+ style = 2 \+ 1"):
        model.encode([torch.zeros(4, 3)] * 2)


def test_any_config_takes_style_latents():
    from mopoe_lib.config import build_model, get_config

    torch.manual_seed(0)
    model = build_model(get_config("mst-fast-mopoe", style_dim=4))
    assert model.style_dims == (4, 4, 4)
    batch = [torch.rand(5, 1, 28, 28), torch.rand(5, 3, 32, 32), torch.randint(0, 71, (5, 8))]
    out = make_objective("mopoe")(model, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.per_row).all()
    # and the grouped PolyMNIST networks too
    model = build_model(get_config("polymnist-fast-mopoe", style_dim=4))
    assert model.style_dims == (4,) * 5
    out = make_objective("mopoe")(model, [torch.rand(3, 3, 28, 28) for _ in range(5)],
                                  generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.per_row).all()


def test_style_latents_for_chosen_modalities_only():
    """``style_modalities``: the named modalities get a style latent, the others none; the bound and generation
    work with the mixed sizes, and bad names or a missing size are refused with the valid choices."""
    from mopoe_lib.config import build_model, get_config

    torch.manual_seed(0)
    model = build_model(get_config("mst-fast-mopoe", style_dim=4, style_modalities="svhn"))
    assert model.style_dims == (0, 4, 0)
    batch = [torch.rand(5, 1, 28, 28), torch.rand(5, 3, 32, 32), torch.randint(0, 71, (5, 8))]
    out = make_objective("mopoe")(model, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.per_row).all()
    generated = model.eval().generate(batch, [0], generator=torch.Generator().manual_seed(0))
    assert generated[1].shape == (5, 3, 32, 32) and torch.isfinite(generated[1]).all()
    # without sampling, the street digit's style sits at its prior mean: the generation is deterministic
    first, second = (model.generate(batch, [0], sample=False)[1] for _ in range(2))
    assert torch.equal(first, second)
    with pytest.raises(ValueError, match="choose from mnist, svhn, text"):
        get_config("mst-fast-mopoe", style_dim=4, style_modalities="svhn,colour")
    with pytest.raises(ValueError, match="style_dim > 0"):
        get_config("mst-fast-mopoe", style_modalities="svhn")
    with pytest.raises(ValueError, match="same style size"):
        build_model(get_config("polymnist-fast-mopoe", style_dim=4, style_modalities="astronaut"))
