"""MMVAE+ (Palumbo et al., ICLR 2023): shared and modality-specific latents, auxiliary style priors, and style
latents in the grouped PolyMNIST networks; checked against an independent estimate on the exact toy."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from mopoe_lib.config import build_model, get_config, parse_value
from mopoe_lib.objectives import make_objective
from mopoe_lib.toy import LinearGaussianToy

POINTS, REPEATS, STYLE = 3, 20_000, 2


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=4, noise=0.5, seed=5, style_dim=STYLE,
                                    style_scale=0.8)


def _model(toy, logits=None):
    """The toy's exact shared experts, q(w_m | x_m) = N(0.3, e^-0.5) for every m, and auxiliary priors."""
    model = toy.model("never", auxiliary_style=True)
    d = model.latent_dim
    with torch.no_grad():
        for enc in model.encoders:
            enc.mu.weight[d:].zero_()
            enc.mu.bias[d:].fill_(0.3)
            enc.logvar_bias[d:].fill_(-0.5)
        if logits is not None:
            for m, theta in enumerate(model.auxiliary_style_logits):
                theta.copy_(torch.as_tensor(logits[m], dtype=theta.dtype))
    return model


def _library(model, xs, **options):
    tiled = [x.repeat_interleave(REPEATS, 0) for x in xs]
    with torch.no_grad():
        out = make_objective("mmvae_plus", beta=1.0, **options)(model, tiled,
                                                                generator=torch.Generator().manual_seed(0))
    rows = out.per_row.view(len(xs[0]), REPEATS)
    return rows.mean(1), rows.std(1) / math.sqrt(REPEATS)


def _independent(toy, model, xs, seed=11):
    """Per-sample MMVAE+ value and the same with the auxiliary draws importance-corrected, ``(M, B, R)`` each,
    written from the paper's definition with torch.distributions and the toy's own loadings."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        (mu, logvar), style = model.encode_all(xs)
        stds = [model.auxiliary_style_std(m) for m in range(3)]
    experts = [Normal(mu[j][:, None], (0.5 * logvar[j]).exp()[:, None]) for j in range(3)]
    values, corrected = [], []
    for m in range(3):
        noise = torch.randn(len(xs[0]), REPEATS, 2, generator=g, dtype=torch.float64)
        z = experts[m].mean + experts[m].stddev * noise
        q_w = Normal(style[m][0][:, None], (0.5 * style[m][1]).exp()[:, None])
        w_own = q_w.mean + q_w.stddev * torch.randn(z.shape[0], REPEATS, STYLE, generator=g, dtype=torch.float64)
        value = Normal(0.0, 1.0).log_prob(z).sum(-1) + Normal(0.0, 1.0).log_prob(w_own).sum(-1) \
            - q_w.log_prob(w_own).sum(-1)
        value = value - torch.logsumexp(torch.stack([e.log_prob(z).sum(-1) for e in experts]), 0) + math.log(3)
        correction = torch.zeros_like(value)
        for d in range(3):
            if d == m:
                w = w_own
            else:
                w = stds[d] * torch.randn(z.shape[0], REPEATS, STYLE, generator=g, dtype=torch.float64)
                correction += (Normal(0.0, 1.0).log_prob(w) - Normal(0.0, stds[d]).log_prob(w)).sum(-1)
            mean = z @ toy.weights[d].T + w @ toy.style_weights[d].T + toy.biases[d]
            value = value + Normal(mean, toy.noise[d]).log_prob(xs[d][:, None]).sum(-1)
        values.append(value)
        corrected.append(value + correction)
    return torch.stack(values), torch.stack(corrected)


def test_mmvae_plus_matches_an_independent_estimate_and_is_a_bound_only_with_the_prior_as_auxiliary(toy):
    _, xs = toy.sample(POINTS, torch.Generator().manual_seed(2))
    log_px = toy.log_marginal(xs)
    # auxiliary priors at their start, r = p(w): a lower bound of log p(X)
    model = _model(toy)
    values, corrected = _independent(toy, model, xs)
    assert torch.allclose(values, corrected)
    expected = values.mean(dim=(0, 2))
    # one stratified component per row (the default) and one sample from every component (the authors' form,
    # iwae with K = 1) estimate the same objective
    for options in ({}, {"estimator": "iwae", "num_samples": 1}):
        mean, stderr = _library(model, xs, **options)
        assert ((mean - expected).abs() < 5 * stderr + 0.02).all(), (options, mean, expected)
        assert (mean <= log_px + 4 * stderr).all(), (mean, log_px)
    # learned auxiliary scales: the value matches the definition and exceeds the valid (corrected) bound by
    # (M - 1) / M * sum_d KL(r_d || p(w_d)) on average
    model = _model(toy, logits=[[1.5, -1.0], [0.0, 0.7], [-2.0, 0.3]])
    mean, stderr = _library(model, xs)
    values, corrected = _independent(toy, model, xs)
    expected = values.mean(dim=(0, 2))
    assert ((mean - expected).abs() < 5 * stderr + 0.02).all(), (mean, expected)
    with torch.no_grad():
        stds = [model.auxiliary_style_std(d) for d in range(3)]
    kl = sum(float((-torch.log(s) + 0.5 * (s**2 - 1)).sum()) for s in stds)
    assert kl > 1.0
    gap = (values - corrected).mean(dim=(0, 2))
    assert torch.allclose(gap, torch.full_like(gap, 2 / 3 * kl), atol=0.05), (gap, 2 / 3 * kl)
    bound = corrected.mean(dim=(0, 2))
    bound_err = corrected.mean(0).std(-1) / math.sqrt(REPEATS)
    assert (bound <= log_px + 4 * bound_err).all(), (bound, log_px)


def test_auxiliary_standard_deviations_start_at_one_and_keep_their_sum():
    model = build_model(get_config("polymnist-fast-mmvae-plus"))
    std = model.auxiliary_style_std(0)
    assert torch.allclose(std, torch.ones(32))
    with torch.no_grad():
        model.auxiliary_style_logits[0].copy_(torch.linspace(-2, 2, 32))
    std = model.auxiliary_style_std(0).detach()
    assert float(std.sum()) == pytest.approx(32.0, rel=1e-5) and float(std.min()) < 0.5 < 2 < float(std.max())


def test_grouped_networks_take_style_latents_and_each_decoder_reads_only_its_own():
    torch.manual_seed(0)
    model = build_model(get_config("polymnist-fast-mmvae-plus"))
    assert model.style_dims == (32,) * 5 and model.latent_dim == 32
    x = [torch.rand(4, 3, 28, 28) for _ in range(5)]
    (mu, logvar), style = model.encode_all(x)
    raw_mu, raw_logvar = model.encoders(x)
    assert torch.equal(mu, raw_mu[..., :32]) and torch.equal(logvar, raw_logvar[..., :32])
    assert all(torch.equal(style[m][0], raw_mu[m, :, 32:]) for m in range(5))
    z = torch.randn(4, 32)
    ws = [torch.randn(4, 32) for _ in range(5)]
    with torch.no_grad():
        every = model.decode(z, None, ws)
        direct = model.decoders.forward_each(torch.stack([torch.cat([z, w], dim=-1) for w in ws]))
        assert all(torch.allclose(every[m], direct[m], atol=1e-6) for m in range(5))
        assert torch.allclose(model.decode(z, [2], ws)[2], every[2], atol=1e-6)
        assert model.decode(z, [2], ws)[0] is None
        other = model.decode(z, None, [ws[0] + 1.0, *ws[1:]])
        assert not torch.allclose(other[0], every[0]) and all(torch.equal(other[m], every[m]) for m in range(1, 5))
        each = model.decode_each(torch.stack([z + m for m in range(5)]), ws)
        assert all(torch.allclose(each[m], model.decode(z + m, None, ws)[m], atol=1e-6) for m in range(5))
        # generation draws unknown styles from the prior (the auxiliary priors are for training only)
        assert all(torch.isfinite(g).all() for g in model.generate(x, [0, 1], torch.Generator().manual_seed(1)))


def test_mmvae_plus_configs_name_what_they_need():
    with pytest.raises(ValueError, match="style_dim > 0"):
        get_config("polymnist-fast-mmvae", objective="mmvae_plus")
    with pytest.raises(ValueError, match="without free bits"):
        make_objective("mmvae_plus", free_bits=0.1)
    with pytest.raises(ValueError, match="choose one of posterior, auxiliary"):
        get_config("polymnist-fast-mmvae-plus", cross_style="prior")
    config = get_config("polymnist-fast-mmvae-plus", cross_style=parse_value("cross_style", "posterior"))
    assert build_model(config).auxiliary_style_logits is None  # the MMVAE with style latents: no auxiliary priors
    assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="auxiliary_style=True"):
        build_model(config).auxiliary_style_std(0)
