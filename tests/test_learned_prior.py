"""The MMVAE's learned prior (Shi et al. 2019): closed-form KLs, bounds against the exact toy, training and configs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.config import ExperimentConfig, get_config, parse_overrides
from mopoe_lib.evaluation.likelihood import log_likelihood
from mopoe_lib.fusion import kl_to_prior_per_dim, singletons
from mopoe_lib.objectives import make_objective
from mopoe_lib.runs import rebuild_model
from mopoe_lib.toy import LinearGaussianToy
from mopoe_lib.train import train

POINTS = 4
#: prior logits that move variance between the toy's two latent dimensions: standard deviations 1.64 and 0.36
LOGITS = torch.tensor([0.75, -0.75], dtype=torch.float64)


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=3, noise=0.5, seed=1)


def _learned(toy, logits=LOGITS):
    """The toy's MMVAE (exact experts of the N(0, I) model) with a learned prior set to ``logits``, and the
    exact toy with that prior."""
    model = toy.model("never", learn_prior=True)
    with torch.no_grad():
        model.prior_logits.copy_(logits)
    return model, toy.scaled(model.prior_std())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_kl_to_a_learned_prior_matches_torch_distributions(seed):
    g = torch.Generator().manual_seed(seed)
    mu, logvar = torch.randn(3, 5, 4, generator=g, dtype=torch.float64), torch.randn(3, 5, 4, generator=g,
                                                                                      dtype=torch.float64)
    prior_logvar = torch.randn(4, generator=g, dtype=torch.float64)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(4, dtype=torch.float64), torch.exp(0.5 * prior_logvar))
    torch.testing.assert_close(kl_to_prior_per_dim(mu, logvar, prior_logvar), torch.distributions.kl_divergence(q, p))
    torch.testing.assert_close(kl_to_prior_per_dim(mu, logvar), kl_to_prior_per_dim(mu, logvar, prior_logvar * 0))


def test_the_prior_starts_as_the_standard_normal_and_keeps_its_total_scale(toy):
    model = toy.model("never", learn_prior=True)
    torch.testing.assert_close(model.prior_std(), torch.ones(2, dtype=torch.float64))
    _, xs = toy.sample(64, torch.Generator().manual_seed(0))
    fixed = toy.model("never")
    for name in ("mmvae", "mmvae_iw"):  # at the start both objectives are those of the fixed prior
        a = make_objective(name)(model, xs, generator=torch.Generator().manual_seed(1)).per_row
        b = make_objective(name)(fixed, xs, generator=torch.Generator().manual_seed(1)).per_row
        torch.testing.assert_close(a, b)
    model.prior_logits.data.copy_(LOGITS)
    std = model.prior_std().detach()
    assert float(std.sum()) == pytest.approx(2.0)
    assert float(std[0]) == pytest.approx(2 * math.exp(0.75) / (math.exp(0.75) + math.exp(-0.75)))
    # the MMVAE's KL term is the mean over its experts of KL(q(z | x_m) || learned prior)
    mu, logvar = model.encode(xs)
    prior = torch.distributions.Normal(torch.zeros(2, dtype=torch.float64), std)
    expected = torch.distributions.kl_divergence(torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), prior)
    with torch.no_grad():
        kl = make_objective("mmvae")(model, xs, generator=torch.Generator().manual_seed(1)).kl
    torch.testing.assert_close(kl, expected.sum(-1).mean())
    draws = model.sample_prior_latent(200_000, torch.Generator().manual_seed(2))
    torch.testing.assert_close(draws.std(0), std, rtol=0.01, atol=0.0)


def test_bounds_with_a_learned_prior_stay_below_the_exact_likelihood_of_that_prior(toy):
    """With prior N(0, diag(s^2)) the model is the toy with loadings W diag(s): its exact log p(X) is the bounds'
    ceiling (the fixed-prior toy's log p(X) differs by more than the gap, so a bound that ignored the learned prior
    would cross it), the importance-weighted bound lies above the ELBO, and the evaluation's importance-sampled
    likelihood converges to it."""
    model, exact = _learned(toy)
    _, xs = exact.sample(POINTS, torch.Generator().manual_seed(0))
    log_px = exact.log_marginal(xs)
    means = {}
    for name, extra, repeats in (("mmvae", {}, 4000), ("mmvae_iw", {"estimator": "iwae", "num_samples": 20}, 1000)):
        tiled = [x.repeat_interleave(repeats, 0) for x in xs]
        with torch.no_grad():
            rows = make_objective(name, **extra)(model, tiled, generator=torch.Generator().manual_seed(3)).per_row
        rows = rows.view(POINTS, repeats)
        means[name], stderr = rows.mean(1), rows.std(1) / math.sqrt(repeats)
        assert (means[name] <= log_px + 4 * stderr).all(), (name, means[name], log_px)
    assert (means["mmvae_iw"] > means["mmvae"] + 0.1).all(), means
    estimate = log_likelihood(model, xs, subsets=singletons(3), num_samples=20_000,
                              generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(estimate, log_px, atol=0.02, rtol=0.0)
    assert ((toy.log_marginal(xs) - log_px).abs() > 0.1).all()  # the two priors are told apart


@pytest.mark.parametrize("estimator", ["elbo", "dreg"])
def test_training_moves_the_prior(toy, estimator):
    model = toy.model("never", exact_encoders=False, learn_prior=True)
    objective = make_objective("mmvae_iw", estimator="dreg", num_samples=4) if estimator == "dreg" else \
        make_objective("mmvae")
    _, xs = toy.scaled(torch.tensor([1.7, 0.3], dtype=torch.float64)).sample(256, torch.Generator().manual_seed(0))
    objective(model, xs, generator=torch.Generator().manual_seed(1)).loss.backward()
    grad = model.prior_logits.grad
    assert grad is not None and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) > 0


def test_learn_prior_is_a_choice_of_the_mixtures_only(toy):
    with pytest.raises(ValueError, match="prior_expert='never'"):
        toy.model("always", learn_prior=True)
    with pytest.raises(ValueError, match="choose one of mmvae, mmvae_iw, mmvae_plus"):
        get_config("polymnist-fast-mopoe", learn_prior=True)
    with pytest.raises(ValueError, match="choose one of"):
        get_config("polymnist-fast-mmjsd", learn_prior=True)
    model = toy.model("never", learn_prior=True)
    _, xs = toy.sample(8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="without learn_prior"):
        make_objective("mmjsd")(model, xs)


def test_the_shi_et_al_experiment_learns_its_prior_and_round_trips_through_set():
    assert get_config("polymnist-full-mmvae-iw").learn_prior
    assert not get_config("polymnist-full-mmvae").learn_prior
    config = get_config("polymnist-fast-mmvae", **parse_overrides(["objective=mmvae_iw", "learn_prior=true"]))
    assert config.learn_prior and config.objective_config.estimator == "dreg"
    assert ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_a_learned_prior_is_trained_saved_and_reloaded(tmp_path):
    config = get_config("polymnist-fast-mmvae", train_subset=128, batch_size=64, latent_dim=8, epochs=1,
                        eval_samples=0, eval_coherence=0, learn_prior=True)
    result = train(config, tmp_path / "run", progress=False)
    std = result.model.prior_std().detach()
    assert float((std - 1).abs().max()) > 1e-5 and float(std.sum()) == pytest.approx(8.0, rel=1e-5)
    model, _ = rebuild_model(tmp_path / "run")
    torch.testing.assert_close(model.prior_std().detach(), std)


def test_a_learned_prior_run_of_a_named_experiment_is_another_experiment_in_the_results():
    from mopoe_lib.evaluation.results import experiment_label

    named = get_config("polymnist-compact-mmvae").to_dict()
    assert experiment_label(named) == "polymnist-compact-mmvae"
    assert experiment_label({**named, "learn_prior": True}) == "polymnist-compact-mmvae [learned prior]"
    assert experiment_label(get_config("polymnist-full-mmvae-iw").to_dict()) == "polymnist-full-mmvae-iw"


def test_a_run_with_other_style_latents_than_its_named_experiment_is_another_experiment():
    from mopoe_lib.evaluation.results import experiment_label

    named = get_config("mst-compact-mopoe").to_dict()
    assert experiment_label(named) == "mst-compact-mopoe"
    assert experiment_label({**named, "style_dim": 8}) == "mst-compact-mopoe [style 8]"
    chosen = {**named, "style_dim": 4, "style_modalities": "svhn"}
    assert experiment_label(chosen) == "mst-compact-mopoe [style 4: svhn]"
    plus = get_config("polymnist-compact-mmvae-plus").to_dict()
    assert plus["style_dim"] > 0 and experiment_label(plus) == "polymnist-compact-mmvae-plus"
