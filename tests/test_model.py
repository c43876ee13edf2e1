"""MultimodalVAE with the PolyMNIST networks: shapes, inference from any subset, generation, errors."""

from __future__ import annotations

import math

import pytest
import torch

from mopoe_lib.config import build_model, get_config
from mopoe_lib.fusion import powerset, reparameterize
from mopoe_lib.likelihoods import Laplace
from mopoe_lib.model import MultimodalVAE
from mopoe_lib.networks import PolyMNISTDecoder, PolyMNISTEncoder


def _model(latent: int = 16, prior_expert: str = "full_set", subset_posterior: str = "product") -> MultimodalVAE:
    torch.manual_seed(0)
    return MultimodalVAE([PolyMNISTEncoder(latent, 64) for _ in range(5)], [PolyMNISTDecoder(latent) for _ in range(5)],
                         [Laplace(0.75)] * 5, latent, names=[f"m{i}" for i in range(5)], prior_expert=prior_expert,
                         subset_posterior=subset_posterior)  # type: ignore[arg-type]


def _x(batch: int = 3):
    return [torch.rand(batch, 3, 28, 28) for _ in range(5)]


def test_paper_network_shapes():
    enc, dec = PolyMNISTEncoder(), PolyMNISTDecoder()
    mu, logvar = enc(torch.rand(2, 3, 28, 28))
    assert mu.shape == logvar.shape == (2, 512)
    assert dec(mu).shape == (2, 3, 28, 28)
    assert sum(p.numel() for p in enc.parameters()) == (
        3 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 64 * 128 * 9 + 128 + 2048 * 512 + 512 + 2 * (512 * 512 + 512))


def test_encode_infer_generate_sample():
    model = _model()
    x = _x()
    mu, logvar = model.encode(x)
    assert mu.shape == (5, 3, 16)
    sub_mu, sub_lv = model.infer(x, ["m0", "m3"])
    same_mu, _ = model.infer(x, [0, 3])
    torch.testing.assert_close(sub_mu, same_mu)
    # inference from a subset ignores the other modalities entirely
    other = [t if i in (0, 3) else torch.zeros_like(t) for i, t in enumerate(x)]
    torch.testing.assert_close(model.infer(other, [0, 3])[0], sub_mu)
    generated = model.generate(x, [1], generator=torch.Generator().manual_seed(0))
    assert len(generated) == 5 and all(g.shape == (3, 3, 28, 28) for g in generated)
    samples = model.sample_prior(4, torch.Generator().manual_seed(0))
    assert all(s.shape == (4, 3, 28, 28) for s in samples)


def test_decode_keeps_leading_sample_dimensions():
    model = _model()
    out = model.decode(torch.randn(7, 2, 3, 16), modalities=[2])
    assert out[2].shape == (7, 2, 3, 3, 28, 28) and out[0] is None


def test_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="expected 5 modalities"):
        model.encode(_x()[:4])
    with pytest.raises(ValueError, match="same batch size"):
        model.encode(_x()[:4] + [torch.rand(2, 3, 28, 28)])
    with pytest.raises(ValueError, match="out of range"):
        model.infer(_x(), [7])
    with pytest.raises(ValueError, match="at least one"):
        model.infer(_x(), [])
    with pytest.raises(ValueError, match="always, full_set, never"):
        _model(prior_expert="sometimes")
    with pytest.raises(ValueError, match="one encoder, decoder and likelihood"):
        MultimodalVAE([PolyMNISTEncoder(4)], [], [], 4)


def test_grouped_networks_equal_the_separate_paper_networks():
    """One grouped network per direction computes exactly what five separate paper networks compute."""
    from mopoe_lib.networks import GroupedConvDecoder, GroupedConvEncoder

    torch.manual_seed(1)
    latent, m = 8, 3
    separate_enc = [PolyMNISTEncoder(latent, 32) for _ in range(m)]
    separate_dec = [PolyMNISTDecoder(latent) for _ in range(m)]
    enc, dec = GroupedConvEncoder(m, latent, hidden_dim=32), GroupedConvDecoder(m, latent)
    with torch.no_grad():
        convs = [i for i, layer in enumerate(enc.conv) if isinstance(layer, torch.nn.Conv2d)]
        for j, i in enumerate(convs):
            enc.conv[i].weight.copy_(torch.cat([e.features[2 * j].weight for e in separate_enc]))
            enc.conv[i].bias.copy_(torch.cat([e.features[2 * j].bias for e in separate_enc]))
        for name, index in (("hidden", 7), ("mu", None), ("logvar", None)):
            layers = [e.features[index] if index else getattr(e, name) for e in separate_enc]
            getattr(enc, name).weight.copy_(torch.stack([layer.weight.T for layer in layers]))
            getattr(enc, name).bias.copy_(torch.stack([layer.bias[None] for layer in layers]))
        dec.fc.weight.copy_(torch.cat([d.net[0].weight for d in separate_dec]))
        dec.fc.bias.copy_(torch.cat([d.net[0].bias for d in separate_dec]))
        for j, i in enumerate((3, 5, 7)):
            dec.deconvs[j].weight.copy_(torch.cat([d.net[i].weight for d in separate_dec]))
            dec.deconvs[j].bias.copy_(torch.cat([d.net[i].bias for d in separate_dec]))
    xs = [torch.rand(4, 3, 28, 28) for _ in range(m)]
    mu, logvar = enc(xs)
    for k in range(m):
        ref_mu, ref_lv = separate_enc[k](xs[k])
        torch.testing.assert_close(mu[k], ref_mu, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logvar[k], ref_lv, rtol=1e-5, atol=1e-5)
    z = torch.randn(4, latent)
    outputs = dec(z)
    partial = dec(z, modalities=[2, 0])
    for k in range(m):
        torch.testing.assert_close(outputs[k], separate_dec[k](z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(partial[0], outputs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(partial[2], outputs[2], rtol=1e-5, atol=1e-5)
    assert partial[1] is None
    each_z = torch.randn(m, 4, latent)  # decoder k reads its own z, in one grouped pass
    each = dec.forward_each(each_z)
    for k in range(m):
        torch.testing.assert_close(each[k], separate_dec[k](each_z[k]), rtol=1e-5, atol=1e-5)
    model = MultimodalVAE(enc, dec, [Laplace(0.75)] * m, latent)
    separate = MultimodalVAE(separate_enc, separate_dec, [Laplace(0.75)] * m, latent)
    lead_z = torch.randn(m, 2, 4, latent)  # leading sample dimensions are kept, by both code paths
    for got, ref in zip(model.decode_each(lead_z), separate.decode_each(lead_z), strict=True):
        assert got.shape == (2, 4, 3, 28, 28)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="M = 3"):
        model.decode_each(torch.randn(2, 4, latent))


def _separated_experts(batch: int, latent: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert m has mean 10 m (+ the row index / 100) and standard deviation 0.1: a sample names its expert."""
    mu = (10.0 * torch.arange(5.0)).view(5, 1, 1) + torch.arange(batch).view(1, batch, 1) / 100 + torch.zeros(latent)
    return mu, torch.full_like(mu, math.log(0.01))


def test_mixture_posterior_given_a_subset_draws_its_experts_uniformly():
    """MMVAE's posterior given S is the uniform mixture of S's experts: every row's sample comes from a member
    of S (never a product, never a non-member), each member with probability 1/|S|."""
    model = _model(subset_posterior="mixture", prior_expert="never")
    batch = 4000
    experts = _separated_experts(batch)
    subsets = powerset(5)
    z = model.sample_given(experts, subsets, torch.Generator().manual_seed(0))  # (31, B, D)
    assert z.shape == (31, batch, 3)
    rows = torch.arange(batch) / 100
    expert = ((z[..., 0] - rows) / 10).round().long()  # (K, B)
    assert ((z[..., 0] - rows - 10 * expert).abs() < 0.6).all()  # within 6 standard deviations of that expert
    for k, subset in enumerate(subsets):
        members = subset.nonzero().flatten()
        counts = torch.bincount(expert[k], minlength=5).float()
        assert counts[~subset].sum() == 0
        share = 1 / len(members)
        tolerance = 5 * math.sqrt(share * (1 - share) / batch)
        assert ((counts[members] / batch - share).abs() <= tolerance).all(), (k, counts)


def test_mixture_moments_match_samples_and_closed_form():
    model = _model(subset_posterior="mixture", prior_expert="never")
    gen = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(5, 2, 3, generator=gen), torch.randn(5, 2, 3, generator=gen)
    subset = torch.tensor([[True, False, True, True, False]])
    mean, log_var = model.moments_given((mu, logvar), subset)
    members = [0, 2, 3]
    expected_mean = mu[members].mean(dim=0)
    expected_var = (logvar[members].exp() + mu[members] ** 2).mean(dim=0) - expected_mean ** 2
    torch.testing.assert_close(mean[0], expected_mean)
    torch.testing.assert_close(log_var[0].exp(), expected_var)
    draws = torch.stack([model.sample_given((mu.expand(5, 2, 3), logvar), subset, gen)[0] for _ in range(20000)])
    torch.testing.assert_close(draws.mean(dim=0), expected_mean, atol=0.06, rtol=0)
    torch.testing.assert_close(draws.var(dim=0), expected_var, atol=0.1, rtol=0.05)
    # infer() reports the same moments; one expert alone is the expert itself
    x = _x(2)
    inferred = model.infer(x, [0, 2, 3])
    moments = model.moments_given(model.encode(x), subset)
    torch.testing.assert_close(inferred[0], moments[0][0])
    single = model.moments_given((mu, logvar), torch.tensor([[False, True, False, False, False]]))
    torch.testing.assert_close(single[0][0], mu[1])
    torch.testing.assert_close(single[1][0], logvar[1], atol=1e-5, rtol=1e-5)


def test_product_posterior_given_a_subset_is_the_fused_gaussian():
    model = _model()
    experts = model.encode(_x(3))
    subsets = powerset(5)
    z = model.sample_given(experts, subsets, torch.Generator().manual_seed(2))
    expected = reparameterize(*model.fuse(experts, subsets), torch.Generator().manual_seed(2))
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(model.moments_given(experts, subsets)[0], model.fuse(experts, subsets)[0])


def test_configs_choose_the_subset_posterior_of_their_objective():
    for name, expected in [("mopoe", "product"), ("mvae", "product"), ("mmvae", "mixture")]:
        assert build_model(get_config(f"polymnist-fast-{name}")).subset_posterior == expected
    with pytest.raises(ValueError, match="product, mixture"):
        _model(subset_posterior="moe")


def test_optimal_scales_fit_each_batch_in_training_and_keep_a_running_average_for_evaluation():
    """With ``optimal_scales`` a training batch is scored at each modality's maximum-likelihood scale on that
    batch (only the rows that have the modality count), which no other scale beats; evaluation uses the stored
    running average, which the batch moved towards its fit."""
    model = build_model(get_config("polymnist-fast-mopoe", optimal_scale=True))
    assert not model.log_scales.requires_grad
    generator = torch.Generator().manual_seed(0)
    x = [torch.rand(6, 3, 28, 28, generator=generator) for _ in range(model.num_modalities)]
    params = [x_m + 0.1 * (m + 1) * torch.randn(x_m.shape, generator=generator) for m, x_m in enumerate(x)]
    params[1][:2] += 5.0  # rows 0 and 1 lack modality 1: their large errors must not enter its fit
    available = torch.ones(model.num_modalities, 6, dtype=torch.bool)
    available[1, :2] = False
    stored = model.log_scales.clone()
    model.train()
    fitted = model.log_likelihoods(params, x, available)
    for m in range(model.num_modalities):
        rows = available[m]
        rms = float((x[m][rows] - params[m][rows]).pow(2).mean().sqrt())
        assert rms == pytest.approx(0.1 * (m + 1), rel=0.05)
        at_fit = model.likelihoods[m].log_prob(params[m][rows], x[m][rows], torch.tensor(math.log(rms))).sum()
        torch.testing.assert_close(fitted[m][rows].sum(), at_fit, rtol=1e-5, atol=1e-2)
        for other in (0.8 * rms, 1.25 * rms):
            assert model.likelihoods[m].log_prob(params[m][rows], x[m][rows],
                                                 torch.tensor(math.log(other))).sum() < at_fit
        expected = 0.9 * float(stored[m]) + 0.1 * math.log(rms)  # the running average moved a tenth of the way
        assert float(model.log_scales[m]) == pytest.approx(expected, abs=1e-5)
    model.eval()
    evaluated = model.log_likelihoods(params, x)
    at_stored = model.likelihoods[0].log_prob(params[0], x[0], model.log_scales[0])
    torch.testing.assert_close(evaluated[0], at_stored)
    with pytest.raises(ValueError, match="set learn_scale=true"):
        get_config("polymnist-fast-mopoe", optimal_scale=True, learn_scale=False)
