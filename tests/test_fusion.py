"""Fusion checked against closed forms, an independent slow reference, and Monte-Carlo estimates."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.fusion import (
    SubsetMixture,
    check_subsets,
    full_set,
    kl_to_standard_normal,
    powerset,
    product_of_experts,
    sample_subsets,
    singletons,
    stratified_assignment,
    subset_mask,
)


def slow_poe(mu, logvar, subsets, prior, available=None):
    """Reference: a Python loop over subsets and rows, softmax over log-precisions (no shift, no matmul)."""
    num_subsets, (num_modalities, batch, dim) = subsets.shape[0], mu.shape
    out_mu = torch.zeros(num_subsets, batch, dim, dtype=torch.float64)
    out_lv = torch.zeros(num_subsets, batch, dim, dtype=torch.float64)
    for k in range(num_subsets):
        for b in range(batch):
            members = [m for m in range(num_modalities)
                       if subsets[k, m] and (available is None or available[m, b])]
            lp = [-logvar[m, b].double() for m in members]
            means = [mu[m, b].double() for m in members]
            if prior[k]:
                lp.append(torch.zeros(dim, dtype=torch.float64))
                means.append(torch.zeros(dim, dtype=torch.float64))
            if not lp:
                continue  # no posterior: N(0, I) by convention
            lp = torch.stack(lp)
            out_lv[k, b] = -torch.logsumexp(lp, 0)
            out_mu[k, b] = (torch.softmax(lp, 0) * torch.stack(means)).sum(0)
    return out_mu, out_lv


@pytest.mark.parametrize("num_modalities", range(1, 9))
def test_powerset_lists_every_nonempty_subset_once(num_modalities):
    subsets = powerset(num_modalities)
    assert subsets.shape == (2**num_modalities - 1, num_modalities) and subsets.dtype == torch.bool
    codes = (subsets.long() * 2 ** torch.arange(num_modalities)).sum(1)
    assert sorted(codes.tolist()) == list(range(1, 2**num_modalities))
    sizes = subsets.sum(1)
    assert (sizes[1:] >= sizes[:-1]).all() and torch.equal(subsets[:num_modalities], singletons(num_modalities))
    assert torch.equal(subsets[-1:], full_set(num_modalities))


def test_powerset_refuses_sizes_it_cannot_hold():
    with pytest.raises(ValueError, match="sample_subsets"):
        powerset(21)
    with pytest.raises(ValueError):
        powerset(0)


@settings(max_examples=60, deadline=None)
@given(
    num_modalities=st.integers(1, 5), batch=st.integers(1, 4), dim=st.integers(1, 3),
    scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 10_000), with_prior=st.booleans(),
    with_mask=st.booleans(),
)
def test_poe_matches_slow_reference(num_modalities, batch, dim, scale, seed, with_prior, with_mask):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(num_modalities, batch, dim, generator=gen, dtype=torch.float64) * 3
    logvar = torch.randn(num_modalities, batch, dim, generator=gen, dtype=torch.float64) * scale
    subsets = powerset(num_modalities)
    prior = torch.rand(subsets.shape[0], generator=gen) < (0.5 if with_prior else 0.0)
    available = torch.rand(num_modalities, batch, generator=gen) < 0.7 if with_mask else None
    got_mu, got_lv = product_of_experts(mu, logvar, subsets, prior, available)
    ref_mu, ref_lv = slow_poe(mu, logvar, subsets, prior, available)
    torch.testing.assert_close(got_mu, ref_mu, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got_lv, ref_lv, rtol=1e-9, atol=1e-9)


def test_two_gaussians_closed_form():
    mu = torch.tensor([[[1.0]], [[-2.0]]], dtype=torch.float64)
    var = torch.tensor([[[0.5]], [[2.0]]], dtype=torch.float64)
    fused_mu, fused_lv = product_of_experts(mu, var.log(), full_set(2), prior_expert=False)
    expected_var = 1 / (1 / 0.5 + 1 / 2.0)
    assert math.isclose(fused_lv.exp().item(), expected_var, rel_tol=1e-12)
    assert math.isclose(fused_mu.item(), expected_var * (1 / 0.5 - 2 / 2.0), rel_tol=1e-12)
    with_prior_mu, with_prior_lv = product_of_experts(mu, var.log(), full_set(2), prior_expert=True)
    assert math.isclose(with_prior_lv.exp().item(), 1 / (1 / 0.5 + 1 / 2.0 + 1), rel_tol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), spread=st.sampled_from([10.0, 25.0, 60.0, 80.0]))
def test_fp32_is_stable_for_extreme_variances(seed, spread):
    """float32 log-variances from -spread to +spread (variances 1e-35 .. 1e35) fuse to finite, exact values
    (up to a spread of FP32_HEADROOM in float32, beyond it in float64)."""
    gen = torch.Generator().manual_seed(seed)
    logvar = (torch.rand(4, 3, 5, generator=gen) * 2 - 1) * spread
    mu = torch.randn(4, 3, 5, generator=gen)
    subsets = powerset(4)
    prior = torch.zeros(subsets.shape[0], dtype=torch.bool)
    got_mu, got_lv = product_of_experts(mu, logvar, subsets, prior)
    assert got_mu.dtype == torch.float32 and torch.isfinite(got_mu).all() and torch.isfinite(got_lv).all()
    ref_mu, ref_lv = slow_poe(mu, logvar, subsets, prior)
    torch.testing.assert_close(got_lv.double(), ref_lv, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_mu.double(), ref_mu, rtol=1e-5, atol=1e-5)


def test_gradients_are_finite_for_extreme_variances():
    logvar = torch.tensor([[[-80.0, 70.0]], [[75.0, -60.0]]], requires_grad=True)
    mu = torch.randn(2, 1, 2, requires_grad=True)
    fused_mu, fused_lv = product_of_experts(mu, logvar, powerset(2), prior_expert=False)
    (fused_mu.sum() + fused_lv.sum()).backward()
    assert torch.isfinite(logvar.grad).all() and torch.isfinite(mu.grad).all()


def test_missing_experts_contribute_nothing():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, 2, generator=gen), torch.randn(3, 4, 2, generator=gen)
    available = torch.ones(3, 4, dtype=torch.bool)
    available[1, 2] = False
    masked_mu, masked_lv = product_of_experts(mu, logvar, full_set(3), True, available)
    reduced_mu, reduced_lv = product_of_experts(mu[[0, 2]][:, 2:3], logvar[[0, 2]][:, 2:3], full_set(2), True)
    torch.testing.assert_close(masked_mu[0, 2], reduced_mu[0, 0])
    torch.testing.assert_close(masked_lv[0, 2], reduced_lv[0, 0])


def test_mixture_components_with_missing_modalities_are_distinct_subsets_of_the_available():
    mu, logvar = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    available = torch.tensor([[True, True], [True, False], [True, True]])
    mix = SubsetMixture.from_experts(mu, logvar, powerset(3), available=available)
    assert (mix.weights > 0).sum(0).tolist() == [7, 3]  # row 1: powerset of {0, 2}
    torch.testing.assert_close(mix.weights.sum(0), torch.ones(2))
    mvae = SubsetMixture.from_experts(mu, logvar, full_set(3), prior_expert=True, available=available)
    assert mvae.weights.tolist() == [[1.0, 1.0]]  # the PoE of what is available


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_to_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))


def test_mixture_log_prob_matches_torch_mixture():
    gen = torch.Generator().manual_seed(1)
    mu = torch.randn(3, 1, 2, generator=gen, dtype=torch.float64)
    logvar = torch.randn(3, 1, 2, generator=gen, dtype=torch.float64)
    mix = SubsetMixture.from_experts(mu, logvar, powerset(3))
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=torch.full((7,), 1 / 7, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(mix.mu[:, 0], (0.5 * mix.logvar[:, 0]).exp()), 1),
    )
    z = torch.randn(50, 1, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(mix.log_prob(z)[:, 0], reference.log_prob(z[:, 0]))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_monte_carlo_mixture_kl_lies_below_the_reported_upper_bound(seed):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64) * 2
    logvar = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    mix = SubsetMixture.from_experts(mu, logvar, powerset(3))
    samples = 20_000
    component = torch.randint(7, (samples, 2), generator=gen)
    chosen_mu = mix.mu[component, torch.arange(2)]
    chosen_lv = mix.logvar[component, torch.arange(2)]
    z = chosen_mu + (0.5 * chosen_lv).exp() * torch.randn(samples, 2, 3, generator=gen, dtype=torch.float64)
    log_ratio = mix.log_prob(z) + 0.5 * (math.log(2 * math.pi) + z.pow(2)).sum(-1)
    kl_mc, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(samples)
    assert (kl_mc - 4 * stderr <= mix.kl_upper_bound()).all()
    assert (kl_mc > 0).all()


@pytest.mark.parametrize("batch,components", [(256, 31), (10, 3), (7, 7), (5, 8)])
def test_stratified_assignment_is_balanced_and_marginally_uniform(batch, components):
    weights = torch.full((components, batch), 1 / components)
    draws = torch.stack([stratified_assignment(weights, torch.Generator().manual_seed(s)) for s in range(3000)])
    counts = torch.nn.functional.one_hot(draws, components).sum(1)  # (draws, K): rows per component
    assert (counts.max(1).values - counts.min(1).values <= 1).all()  # strata differ by at most one row
    frequency = torch.nn.functional.one_hot(draws, components).double().mean(0)  # (B, K)
    tolerance = 5 * math.sqrt((1 / components) * (1 - 1 / components) / 3000)
    assert (frequency - 1 / components).abs().max() < tolerance


def test_stratified_estimator_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(31, 256, generator=gen, dtype=torch.float64)  # f(k, b)
    weights = torch.full((31, 256), 1 / 31, dtype=torch.float64)
    exact = values.mean(0).mean()
    estimates = torch.stack([
        values[stratified_assignment(weights, torch.Generator().manual_seed(s)), torch.arange(256)].mean()
        for s in range(4000)])
    stderr = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - exact) < 4 * stderr
    # variance reduction against independent draws
    random = torch.stack([
        values[stratified_assignment(weights, torch.Generator().manual_seed(s), "random"), torch.arange(256)].mean()
        for s in range(4000)])
    assert estimates.var() < random.var()


def test_paper_chunks_give_the_remainder_to_the_last_subset():
    chosen = stratified_assignment(torch.full((31, 256), 1 / 31), strategy="paper")
    counts = torch.bincount(chosen, minlength=31)
    assert counts[:30].tolist() == [8] * 30 and counts[30] == 16


def test_sampled_subsets_are_uniform_and_give_unbiased_kl_averages():
    gen = torch.Generator().manual_seed(0)
    draws = sample_subsets(3, 70_000, gen)
    assert draws.any(1).all()
    codes = (draws.long() * torch.tensor([1, 2, 4])).sum(1)
    frequency = torch.bincount(codes, minlength=8)[1:].double() / len(codes)
    assert (frequency - 1 / 7).abs().max() < 0.006
    mu, logvar = torch.randn(5, 4, 3, generator=gen), torch.randn(5, 4, 3, generator=gen)
    exact = SubsetMixture.from_experts(mu, logvar, powerset(5)).kl_upper_bound()
    estimates = torch.stack([SubsetMixture.from_experts(mu, logvar, sample_subsets(5, 8, gen)).kl_upper_bound()
                             for _ in range(3000)])
    stderr = estimates.std(0) / math.sqrt(3000)
    assert ((estimates.mean(0) - exact).abs() < 4 * stderr + 1e-6).all()


def test_twenty_modalities_cost_what_the_sample_costs():
    mu, logvar = torch.randn(20, 8, 4), torch.randn(20, 8, 4)
    mix = SubsetMixture.from_experts(mu, logvar, sample_subsets(20, 32, torch.Generator().manual_seed(0)))
    assert mix.mu.shape == (32, 8, 4) and mix.kl_upper_bound().shape == (8,)


def test_bad_subsets_raise_clear_errors():
    with pytest.raises(ValueError, match="empty"):
        check_subsets(torch.tensor([[True, False], [False, False]]), 2)
    with pytest.raises(ValueError, match="shape"):
        check_subsets(torch.ones(2, 3, dtype=torch.bool), 2)
    with pytest.raises(ValueError, match="bool"):
        check_subsets(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="out of range"):
        subset_mask([0, 5], 5)
    with pytest.raises(ValueError, match=r"shape \(M, B, D\)"):
        product_of_experts(torch.zeros(2, 3), torch.zeros(2, 3), full_set(2))
