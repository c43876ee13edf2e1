"""Frechet distances: closed forms, an independent scipy reference, and generators with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_evaluation import DIGITS, M, _one_hot_data, _one_hot_model
from torch import nn

from mopoe_lib.evaluation.frechet import (
    frechet_classifier_distance,
    frechet_distance,
    frechet_distance_from_features,
    gaussian_statistics,
    load_inception,
)


def _random_spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim + 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim


def _scipy_reference(m1, c1, m2, c2) -> float:
    root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1.numpy() + c2.numpy() - 2 * root))


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 12), seed=st.integers(0, 10_000), shift=st.floats(-3, 3))
def test_frechet_matches_scipy_and_is_symmetric(dim, seed, shift):
    c1, c2 = _random_spd(dim, seed), _random_spd(dim, seed + 1)
    m1 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    m2 = m1 + shift
    value = frechet_distance(m1, c1, m2, c2)
    assert value == pytest.approx(_scipy_reference(m1, c1, m2, c2), rel=1e-6, abs=1e-8)
    assert value == pytest.approx(frechet_distance(m2, c2, m1, c1), rel=1e-8, abs=1e-10)


def test_frechet_closed_forms():
    c = _random_spd(5, 0)
    m = torch.arange(5.0, dtype=torch.float64)
    assert frechet_distance(m, c, m, c) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(m, c, m + 2, c) == pytest.approx(4 * 5)  # a shift adds |delta|^2
    s1, s2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 0.25])  # diagonal: sum (sqrt s1 - sqrt s2)^2
    expected = float(((s1.sqrt() - s2.sqrt()) ** 2).sum())
    assert frechet_distance(torch.zeros(3), torch.diag(s1), torch.zeros(3), torch.diag(s2)) == pytest.approx(expected)


def test_frechet_between_samples_of_one_distribution_is_near_zero_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20_000, 4, generator=g), torch.randn(20_000, 4, generator=g)
    assert frechet_distance_from_features(a, b) < 0.01
    assert frechet_distance_from_features(a, b + 1.0) == pytest.approx(4.0, abs=0.05)
    mean, cov = gaussian_statistics(a)
    torch.testing.assert_close(cov, torch.eye(4, dtype=torch.float64), atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="shape"):
        gaussian_statistics(a[:1])


class OneHotFeatures(nn.Module):
    """'Classifier' whose features are the first 10 values of each input."""

    def embed(self, xs):
        return torch.stack([x.flatten(1)[:, :DIGITS] for x in xs])


def test_a_perfect_generator_is_far_closer_than_a_constant_one():
    data = _one_hot_data(per_digit=40)
    perfect = frechet_classifier_distance(_one_hot_model(), OneHotFeatures(), data, progress=False)
    constant = frechet_classifier_distance(_one_hot_model(constant_digit=3), OneHotFeatures(), data, progress=False)
    assert len(perfect) == (2**M - 1) * M + M  # every subset and target, plus the prior
    assert {r["source"] for r in perfect if r["num_inputs"] == 0} == {"prior"}
    conditional = [r["frechet"] for r in perfect if r["source"] != "prior"]
    assert max(conditional) < 0.01
    assert min(r["frechet"] for r in constant) > 0.5  # a point mass vs ten one-hot clusters: about 0.9 + 0.1


def test_samples_of_a_fitted_aggregate_posterior_are_closer_than_prior_samples():
    """The one-hot model's posterior means are 10 x one-hot, far out in the prior's tail: decoded prior samples
    are noise near 0, decoded samples of a mixture fitted to the posterior means are the ten digits again."""
    from mopoe_lib.sampler import AggregatePosterior

    data = _one_hot_data(per_digit=40)
    model = _one_hot_model()
    sampler = AggregatePosterior.fit(model, data, components=10, seed=0)
    rows = frechet_classifier_distance(model, OneHotFeatures(), data, progress=False, sampler=sampler)
    plain = frechet_classifier_distance(model, OneHotFeatures(), data, progress=False)
    assert len(rows) == len(plain) + M and rows[:len(plain)] == plain  # the other rows do not change
    by_source = {s: [r["frechet"] for r in rows if r["source"] == s] for s in ("prior", "aggregate posterior")}
    assert max(by_source["aggregate posterior"]) < 0.1 < 0.5 < min(by_source["prior"])


def test_fid_needs_user_supplied_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="inception.safetensors"):
        load_inception(tmp_path / "inception.safetensors")
