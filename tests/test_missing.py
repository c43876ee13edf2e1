"""Learning from incomplete data: missingness masks, objectives on masked batches, training end to end.

The exact linear-Gaussian toy gives the reference: with missing modalities a tuple's bound is a bound on the
marginal likelihood of what is observed, log p(X_obs), and the MVAE's (its product posterior of the observed
experts and the prior is exact there) equals it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.config import get_config
from mopoe_lib.data.missing import availability, parse_missing, recorded_availability
from mopoe_lib.integrity import ChecksumError
from mopoe_lib.objectives import OBJECTIVES, make_objective
from mopoe_lib.toy import LinearGaussianToy

MODELS = ("mvae", "mmvae", "mopoe")
#: the masking tests hold for every objective, the relatives included
OBJECTIVE_NAMES = (*MODELS, "mmjsd", "mvtcae")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 6), rate=st.floats(0.0, 0.95), seed=st.integers(0, 10**6))
def test_mcar_masks_are_deterministic_and_leave_every_tuple_a_modality(n, m, rate, seed):
    mask = availability(f"mcar:{rate}", n, m, seed)
    assert mask.shape == (n, m) and mask.dtype == torch.bool and bool(mask.any(dim=1).all())
    assert torch.equal(mask, availability(f"mcar:{rate}", n, m, seed))


def test_mcar_rates_and_complete_fractions_are_what_was_asked():
    n = 40_000
    mask = availability("mcar:0.1,0.2,0.3,0.4,0.5", n, 5, seed=3)
    # conditioned on a non-empty row the rates shift slightly (P(empty) = 0.012 here): compare with that
    rates = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    empty = float(rates.prod())
    expected = (rates - empty) / (1 - empty)
    observed = 1 - mask.float().mean(dim=0)
    assert torch.allclose(observed, expected, atol=4 * math.sqrt(0.25 / n))
    mask = availability("complete:0.3", n, 5, seed=4)
    complete = mask.all(dim=1)
    assert abs(float(complete.float().mean()) - 0.3) < 4 * math.sqrt(0.21 / n)
    incomplete = mask[~complete]
    assert bool(incomplete.any(dim=1).all()) and not bool(incomplete.all(dim=1).any())
    counts = torch.bincount((incomplete.long() * 2 ** torch.arange(5)).sum(dim=1), minlength=32)[1:31]
    assert counts.min() > 0.7 * counts.float().mean()  # every proper subset, about equally often
    assert bool(availability("none", 10, 3).all()) and bool(availability("complete:1", 10, 3).all())


def test_bad_mechanisms_name_the_valid_forms():
    for spec in ("mcar", "mcar:1.0", "mcar:-0.1", "complete:1.5", "mnar:0.3", "mcar:abc", "complete:0.2,0.3"):
        with pytest.raises(ValueError, match="none, mcar"):
            parse_missing(spec)
    with pytest.raises(ValueError, match="one per modality"):
        parse_missing("mcar:0.1,0.2", num_modalities=5)
    with pytest.raises(ValueError, match="missing="):
        get_config("polymnist-fast-mopoe", missing="mcar:2")


def test_recorded_masks_are_kept_with_their_checksum_and_verified(tmp_path):
    first = recorded_availability("complete:0.5", 100, 5, 0, "toy", root=tmp_path)
    again = recorded_availability("complete:0.5", 100, 5, 0, "toy", root=tmp_path)
    assert torch.equal(first, again)
    stored = next((tmp_path / "masks" / "toy").glob("*.npy"))
    data = bytearray(stored.read_bytes())
    data[-1] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        recorded_availability("complete:0.5", 100, 5, 0, "toy", root=tmp_path)


# ------------------------------------------------------------------------------------------ the objectives


@pytest.fixture
def toy() -> LinearGaussianToy:
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=3, noise=0.6, seed=5)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_everything_available_gives_exactly_the_unmasked_objective(toy, name):
    _, xs = toy.sample(64, torch.Generator().manual_seed(0))
    model = toy.model(OBJECTIVES[name].prior_expert, exact_encoders=False)
    plain = make_objective(name)(model, xs, generator=torch.Generator().manual_seed(1))
    masked = make_objective(name)(model, xs, available=torch.ones(3, 64, dtype=torch.bool),
                                  generator=torch.Generator().manual_seed(1))
    assert torch.equal(plain.loss, masked.loss) and torch.equal(plain.per_row, masked.per_row)


def _grads(model, objective, xs, available, seed=1):
    model.zero_grad()
    out = objective(model, xs, available=available, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return out, {k: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                 for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_a_missing_modality_changes_neither_the_loss_nor_a_gradient(toy, name):
    _, xs = toy.sample(32, torch.Generator().manual_seed(0))
    model = toy.model(OBJECTIVES[name].prior_expert, exact_encoders=False)
    objective = make_objective(name)
    available = torch.ones(3, 32, dtype=torch.bool)
    available[1, ::2] = False  # modality 1 missing in every other row
    out, grads = _grads(model, objective, xs, available)
    changed = [x.clone() for x in xs]
    changed[1][::2] = 1e3 * torch.randn_like(changed[1][::2])  # what is missing may be anything
    out2, grads2 = _grads(model, objective, changed, available)
    assert torch.equal(out.loss, out2.loss)
    for key in grads:
        assert torch.equal(grads[key], grads2[key]), key
    # missing in every row of the batch: its encoder and decoder get no gradient at all
    available[1] = False
    _, grads = _grads(model, objective, xs, available)
    for key, grad in grads.items():
        if key.startswith(("encoders.1.", "decoders.1.")):
            assert bool((grad == 0).all()), key
    assert any(bool((g != 0).any()) for k, g in grads.items() if k.startswith("encoders.0."))


def test_with_missing_modalities_every_bound_is_below_the_marginal_of_what_is_observed(toy):
    """Per row, the bound is a bound on log p(X_obs); the MVAE's (exact posterior) equals it."""
    n = 6000
    _, xs = toy.sample(n, torch.Generator().manual_seed(0))
    available = availability("complete:0.25", n, 3, seed=1).T.contiguous()  # (M, N)
    exact = toy.log_marginal_observed(xs, available.T)
    for name in MODELS:
        model = toy.model(OBJECTIVES[name].prior_expert)  # exact experts
        out = make_objective(name, unimodal_terms=False)(model, xs, available=available,
                                                         generator=torch.Generator().manual_seed(2))
        gap = exact - out.per_row
        stderr = float(gap.std()) / math.sqrt(n)
        assert float(gap.mean()) > -4 * stderr, name
        if name == "mvae":
            assert abs(float(gap.mean())) < 4 * stderr
        else:
            assert float(gap.mean()) > 10 * stderr  # the mixtures pay a gap


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", MODELS)
def test_the_three_models_train_on_incomplete_polymnist(name, tmp_path):
    from mopoe_lib.train import load_training_data, train

    config = get_config(f"polymnist-fast-{name}", train_subset=256, batch_size=64, latent_dim=8, epochs=1,
                        eval_samples=64, eval_coherence=0, missing="complete:0.3", missing_seed=1)
    train_data, _ = load_training_data(config)
    assert train_data.available is not None and 0.15 < float(train_data.available.all(dim=1).float().mean()) < 0.45
    result = train(config, tmp_path / name, progress=False)
    assert math.isfinite(result.metrics[-1]["train/loss"]) and "test/elbo" in result.metrics[-1]
    baseline, _ = load_training_data(get_config(f"polymnist-fast-{name}", missing="complete:0.3", missing_seed=1,
                                                drop_incomplete=True))
    assert baseline.available is None and 0.25 < len(baseline) / 6000 < 0.35  # only the complete tuples


# ---------------------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("name", ["mopoe", "mmvae"])
def test_conditioning_on_a_subset_uses_only_the_modalities_a_row_has(toy, name):
    from mopoe_lib.fusion import subset_mask

    _, xs = toy.sample(200, torch.Generator().manual_seed(0))
    model = toy.model(OBJECTIVES[name].prior_expert, exact_encoders=False)
    model.subset_posterior = OBJECTIVES[name].subset_posterior
    experts = model.encode(xs)
    available = torch.ones(3, 200, dtype=torch.bool)
    available[1, 100:] = False
    both, first = subset_mask([0, 1], 3), subset_mask([0], 3)
    mean, logvar = model.moments_given(experts, both, available)
    mean0, logvar0 = model.moments_given(experts, first)
    torch.testing.assert_close(mean[0, 100:], mean0[0, 100:])  # rows without modality 1: given {0} only
    torch.testing.assert_close(logvar[0, 100:], logvar0[0, 100:])
    plain = model.moments_given(experts, both)
    torch.testing.assert_close(mean[0, :100], plain[0][0, :100])
    z = model.sample_given(experts, both, torch.Generator().manual_seed(3), available)
    if name == "mopoe":  # the same noise: the product of the observed experts
        z0 = model.sample_given(experts, first, torch.Generator().manual_seed(3))
        torch.testing.assert_close(z[0, 100:], z0[0, 100:])
    else:  # every draw comes from the one observed member, modality 0's expert
        distance = (z[0, 100:] - experts[0][0, 100:]).abs() / experts[1][0, 100:].mul(0.5).exp()
        assert float(distance.detach().max()) < 6
    assert torch.equal(model.sample_given(experts, both, torch.Generator().manual_seed(3),
                                          torch.ones(3, 200, dtype=torch.bool)),
                       model.sample_given(experts, both, torch.Generator().manual_seed(3)))


def test_coherence_on_incomplete_test_data_counts_only_the_rows_it_can_condition():
    from mopoe_lib.book import book_models
    from mopoe_lib.data import load_polymnist
    from mopoe_lib.evaluation import conditional_coherence, load_classifiers

    model = book_models("fast", models=("mopoe",), progress=False)["mopoe"].model
    test = load_polymnist("test", "fast").subset(torch.arange(100))
    judges = load_classifiers()
    rows = conditional_coherence(model, judges, test, seed=0, progress=False)
    full = conditional_coherence(model, judges, test.with_availability(torch.ones(100, 5, dtype=torch.bool)),
                                 seed=0, progress=False)
    assert rows == full
    mask = torch.ones(100, 5, dtype=torch.bool)
    mask[::2, 0] = False  # modality 0 missing in every other tuple
    partial = conditional_coherence(model, judges, test.with_availability(mask), seed=0, progress=False)
    counts = {r["subset"]: r["n"] for r in partial}
    assert counts["astronaut"] == 50 and counts["astronaut+chelsea"] == 100 and counts["chelsea"] == 100


def test_the_study_runs_train_for_the_same_number_of_steps_and_have_their_own_folders():
    """Chapter 8's study: every run about 7,500 optimiser steps of 64, whether on all 60k tuples or on the
    complete ones only (then more epochs of fewer tuples); masks drawn by fraction; one folder per run."""
    from mopoe_lib.config import STUDY_FRACTIONS, incomplete_study_config, study_tag

    tags = set()
    for model in MODELS:
        for fraction in STUDY_FRACTIONS:
            for drop in (False, True):
                config = incomplete_study_config(model, fraction, drop)
                assert config.objective == model and config.missing == f"complete:{fraction}"
                assert config.drop_incomplete is drop and config.batch_size == 64
                tuples = 60_000 * (fraction if drop else 1.0)
                assert config.epochs * tuples / config.batch_size == pytest.approx(7_500, rel=0.01)
                assert config.epochs / config.eval_every_epochs <= 5
                tags.add(study_tag(model, fraction, drop))
    assert len(tags) == 2 * len(MODELS) * len(STUDY_FRACTIONS)
    assert study_tag("mopoe", 0.2, True) == "mopoe-complete-0.2-drop"


def test_training_with_every_tuple_complete_is_training_without_a_mask(tmp_path):
    """``complete:1.0`` (a mask of all ones) trains exactly as ``none``: same losses, same weights. Chapter 8
    relies on it when it reads the complete-data curve of the study from a run trained without a mask."""
    from mopoe_lib.train import train

    results = {}
    for spec in ("none", "complete:1.0"):
        config = get_config("polymnist-fast-mopoe", train_subset=128, batch_size=32, latent_dim=8, epochs=2,
                            eval_samples=32, eval_coherence=0, missing=spec, seed=3)
        results[spec] = train(config, tmp_path / spec.replace(":", "-"), progress=False)
    plain, masked = results["none"], results["complete:1.0"]
    keys = ("train/loss", "train/elbo", "test/elbo")
    assert [[row.get(k) for k in keys] for row in plain.metrics] == [[row.get(k) for k in keys]
                                                                     for row in masked.metrics]
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), masked.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
