"""Likelihoods against torch.distributions, with leading sample dimensions."""

from __future__ import annotations

import pytest
import torch

from mopoe_lib.likelihoods import Bernoulli, Categorical, Gaussian, Laplace, get_likelihood

D = torch.distributions


def _data():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 2, 5, generator=gen, dtype=torch.float64), torch.rand(3, 2, 5, generator=gen,
                                                                                    dtype=torch.float64)


def test_laplace_and_gaussian():
    params, x = _data()
    expected = D.Laplace(params, 0.75).log_prob(x).sum((-1, -2))
    torch.testing.assert_close(Laplace(0.75).log_prob(params, x), expected)
    expected = D.Normal(params, 0.3).log_prob(x).sum((-1, -2))
    torch.testing.assert_close(Gaussian(0.3).log_prob(params, x), expected)


def test_bernoulli():
    params, x = _data()
    binary = (x > 0.5).double()
    torch.testing.assert_close(Bernoulli().log_prob(params, binary),
                               D.Bernoulli(logits=params).log_prob(binary).sum((-1, -2)))
    torch.testing.assert_close(Bernoulli().mean(params), torch.sigmoid(params))


def test_categorical_uses_logits_and_accepts_indices_or_one_hot():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, 8, 71, generator=gen, dtype=torch.float64)  # samples, batch, positions, classes
    index = torch.randint(71, (4, 8), generator=gen)
    one_hot = torch.nn.functional.one_hot(index, 71).double()
    expected = D.Categorical(logits=logits).log_prob(index).sum(-1)
    torch.testing.assert_close(Categorical().log_prob(logits, index), expected)
    torch.testing.assert_close(Categorical().log_prob(logits, one_hot), expected)
    assert (Categorical().log_prob(logits, index) < 0).all()  # a proper log-probability, unlike defect 3
    torch.testing.assert_close(Categorical().mean(logits).sum(-1), torch.ones(6, 4, 8, dtype=torch.float64))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="does not end with"):
        Laplace().log_prob(torch.zeros(2, 3, 4), torch.zeros(2, 5))


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="laplace, gaussian, bernoulli, categorical"):
        get_likelihood("poisson")
    assert get_likelihood("Laplace", scale=0.5) == Laplace(0.5)


@pytest.mark.parametrize("cls", [Laplace, Gaussian])
def test_a_learned_scale_gives_the_fixed_scale_density_and_converges_to_its_maximum_likelihood(cls):
    """log_prob with ``log_scale`` equals the fixed-scale density at that scale; fitted by gradient ascent on
    fixed residuals it reaches the closed-form MLE: mean |e| (Laplace), root mean square e (Gaussian), which is
    what ``optimal_log_scale`` returns."""
    import math

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 4, 4, generator=generator)
    params = x + 0.2 * torch.randn(x.shape, generator=generator)
    for scale in (0.05, 0.3, 0.75):
        torch.testing.assert_close(cls(0.75).log_prob(params, x, torch.tensor(math.log(scale))),
                                   cls(scale).log_prob(params, x), rtol=1e-5, atol=1e-3)
    log_scale = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([log_scale], lr=0.05)
    for _ in range(600):
        optimizer.zero_grad()
        (-cls().log_prob(params, x, log_scale).mean()).backward()
        optimizer.step()
    residual = (x - params).abs()
    expected = residual.mean() if cls is Laplace else residual.pow(2).mean().sqrt()
    assert float(log_scale.detach().exp()) == pytest.approx(float(expected), rel=1e-3)
    assert float(cls().optimal_log_scale(params, x).exp()) == pytest.approx(float(expected), rel=1e-5)
    assert float(cls().optimal_log_scale(params, x)) == pytest.approx(float(log_scale.detach()), abs=1e-3)
