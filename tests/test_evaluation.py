"""Metrics on cases with known answers: perfect and constant generators, separable latents, the exact toy."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from mopoe_lib.data import ChecksumError, MultimodalDataset, load_polymnist
from mopoe_lib.evaluation import (
    ModalityClassifiers,
    accuracy,
    coherence_by_num_inputs,
    conditional_coherence,
    conditional_log_likelihood,
    latent_probe,
    load_classifiers,
    log_likelihood,
    predict,
    random_coherence,
    train_classifiers,
)
from mopoe_lib.evaluation.classifiers import classifier_dir, replace_groups, save_classifiers, select_groups
from mopoe_lib.evaluation.classifiers import main as classifiers_main
from mopoe_lib.fusion import powerset
from mopoe_lib.likelihoods import Laplace
from mopoe_lib.model import MultimodalVAE
from mopoe_lib.networks import LinearDecoder, LinearEncoder
from mopoe_lib.toy import LinearGaussianToy

M, DIGITS = 3, 10


class ArgmaxClassifiers(nn.Module):
    """'Classifies' a 10-d vector by its argmax: logits (M, B, 10)."""

    def forward(self, xs):
        return torch.stack([x.flatten(1)[:, :DIGITS] for x in xs])


def _one_hot_data(per_digit: int = 20) -> MultimodalDataset:
    labels = torch.arange(DIGITS).repeat_interleave(per_digit)
    x = torch.nn.functional.one_hot(labels, DIGITS).float()
    return MultimodalDataset([x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(m))
                              for m in range(M)], labels)


def _one_hot_model(constant_digit: int | None = None) -> MultimodalVAE:
    """Encoders: mu = 10 x, tiny variance; decoders: x = z / 10 (or a constant one-hot)."""
    encoders, decoders = [], []
    for _ in range(M):
        enc, dec = LinearEncoder(DIGITS, DIGITS), LinearDecoder(DIGITS, (DIGITS,))
        with torch.no_grad():
            enc.mu.weight.copy_(10 * torch.eye(DIGITS))
            enc.mu.bias.zero_()
            enc.logvar_bias.fill_(-12.0)
            dec.linear.weight.copy_(torch.eye(DIGITS) / 10 if constant_digit is None else torch.zeros(DIGITS, DIGITS))
            dec.linear.bias.copy_(torch.zeros(DIGITS) if constant_digit is None
                                  else torch.nn.functional.one_hot(torch.tensor(constant_digit), DIGITS).float())
        encoders.append(enc)
        decoders.append(dec)
    return MultimodalVAE(encoders, decoders, [Laplace()] * M, DIGITS, prior_expert="never")


def test_a_perfect_generator_has_coherence_one():
    rows = conditional_coherence(_one_hot_model(), ArgmaxClassifiers(), _one_hot_data(), progress=False)
    assert len(rows) == (2**M - 1) * M
    assert all(row["coherence"] == 1.0 for row in rows)
    assert coherence_by_num_inputs(rows) == {1: 1.0, 2: 1.0}  # the full set has no target outside it


def test_a_constant_generator_is_at_chance():
    rows = conditional_coherence(_one_hot_model(constant_digit=3), ArgmaxClassifiers(), _one_hot_data(),
                                 progress=False)
    assert all(row["coherence"] == pytest.approx(1 / DIGITS) for row in rows)
    assert random_coherence(_one_hot_model(constant_digit=3), ArgmaxClassifiers(), num_samples=500) == 1.0


def test_probes_on_separable_latents_are_perfect():
    data = _one_hot_data(per_digit=60)
    rows = latent_probe(_one_hot_model(), data, _one_hot_data(per_digit=10), num_train=200)
    assert len(rows) == 2**M - 1 and all(row["accuracy"] == 1.0 for row in rows)


@pytest.fixture(scope="module")
def toy():
    return LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=3, noise=0.5, seed=2)


def test_likelihood_with_the_true_posterior_as_proposal_is_exact(toy):
    _, xs = toy.sample(6, torch.Generator().manual_seed(0))
    estimate = log_likelihood(toy.model("always"), xs, num_samples=8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(estimate, toy.log_marginal(xs), rtol=0, atol=1e-6)
    conditional = conditional_log_likelihood(toy.model("always"), xs, given=[0, 2], num_samples=8,
                                             generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(conditional, toy.log_marginal(xs) - toy.log_marginal(xs, [0, 2]), rtol=0, atol=1e-6)


def test_likelihood_with_a_mixture_proposal_converges(toy):
    _, xs = toy.sample(4, torch.Generator().manual_seed(3))
    model = toy.model("full_set")
    estimate = log_likelihood(model, xs, num_samples=4000, subsets=powerset(3),
                              generator=torch.Generator().manual_seed(0))
    assert (estimate - toy.log_marginal(xs)).abs().max() < 0.05


def test_likelihood_never_mixes_test_points(toy):
    _, xs = toy.sample(3, torch.Generator().manual_seed(4))
    changed = [x.clone() for x in xs]
    for x in changed:
        x[1:] += 5.0  # other rows change; row 0 must not
    model = toy.model("never", exact_encoders=False)
    a = log_likelihood(model, xs, 50, subsets=powerset(3), generator=torch.Generator().manual_seed(0))
    b = log_likelihood(model, changed, 50, subsets=powerset(3), generator=torch.Generator().manual_seed(0))
    assert a[0] == b[0] and not torch.equal(a[1:], b[1:])


def test_predict_uses_eval_mode_and_restores_the_mode():
    classifiers = ModalityClassifiers(2).train()
    xs = [torch.rand(16, 3, 28, 28) for _ in range(2)]
    first, second = predict(classifiers, xs), predict(classifiers, xs)
    assert torch.equal(first, second) and classifiers.training  # dropout off inside, mode restored after


def test_classifier_groups_can_be_selected_and_replaced():
    torch.manual_seed(0)
    a, b = ModalityClassifiers(5), ModalityClassifiers(5)
    xs = [torch.rand(8, 3, 28, 28) for _ in range(5)]
    with torch.no_grad():
        logits_a, logits_b = a.eval()(xs), b.eval()(xs)
        part = select_groups(b, [4, 1])
        torch.testing.assert_close(part.eval()([xs[4], xs[1]]), logits_b[[4, 1]])
        replace_groups(a, [4, 1], part)
        mixed = a(xs)
    torch.testing.assert_close(mixed[[1, 4]], logits_b[[1, 4]])
    torch.testing.assert_close(mixed[[0, 2, 3]], logits_a[[0, 2, 3]])


@pytest.mark.slow
def test_refining_some_classifiers_keeps_the_others_and_records_how(tmp_path):
    folder = tmp_path / "clf"
    shutil.copytree(classifier_dir(), folder)
    shipped = load_classifiers(folder)
    before = json.loads((folder / "classifiers.json").read_text())
    argv = ["train", "--variant", "fast", "--epochs", "1", "--lr", "1e-4", "--modalities", "motorcycle",
            "--fresh-crops", "--finetune", "--out", str(folder)]
    assert classifiers_main(argv) == 0
    refined = load_classifiers(folder)  # checksum of the new weights verified
    after = json.loads((folder / "classifiers.json").read_text())
    assert after["command"] == before["command"] and after["sha256"] != before["sha256"]
    step = after["refinements"][-1]
    assert step["modalities"] == ["motorcycle"] and step["fresh_crops"] and step["finetune"]
    assert step["command"] == "python -m mopoe_lib.evaluation.classifiers " + " ".join(argv)
    old, new = shipped.state_dict(), refined.state_dict()
    for key, value in old.items():
        groups_old, groups_new = value.reshape(5, -1), new[key].reshape(5, -1)
        assert torch.equal(groups_old[:4], groups_new[:4]), key  # the other four are untouched
    assert not torch.equal(old["out.weight"][4], new["out.weight"][4])


@pytest.mark.slow
def test_classifiers_learn_and_round_trip_with_checksums(tmp_path):
    train = load_polymnist("train", "fast")
    test = load_polymnist("test", "fast")
    model = train_classifiers(train, epochs=2, lr=3e-3, progress=False)
    acc = accuracy(model, test)
    assert acc.shape == (5,) and (acc > 0.4).all() and acc.mean() > 0.6, acc  # chance is 0.1
    folder = save_classifiers(model, acc, tmp_path / "clf", {"num_modalities": 5})
    loaded = load_classifiers(folder)
    assert not loaded.training and torch.equal(accuracy(loaded, test), acc)
    weights = folder / "classifiers.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(ChecksumError):
        load_classifiers(folder)


@pytest.mark.slow
def test_evaluation_cli_writes_tidy_tables(tmp_path, capsys, monkeypatch):
    import csv

    from mopoe_lib.config import get_config
    from mopoe_lib.evaluation.__main__ import main
    from mopoe_lib.evaluation.suite import TABLES, read_tables
    from mopoe_lib.sampler import AggregatePosterior
    from mopoe_lib.train import train

    config = get_config("polymnist-fast-mmvae", train_subset=256, batch_size=64, latent_dim=8, epochs=1,
                        eval_samples=64, eval_coherence=0)
    train(config, tmp_path / "run", progress=False)
    fitted_to, fit = [], AggregatePosterior.fit.__func__

    def spy(cls, model, data, *args, **kwargs):
        mixture = fit(cls, model, data, *args, **kwargs)
        fitted_to.append(kwargs["num_tuples"])
        return mixture

    monkeypatch.setattr(AggregatePosterior, "fit", classmethod(spy))
    out = tmp_path / "tables"
    assert main([str(tmp_path / "run"), "--test-samples", "40", "--probe-train", "60", "--likelihood-points", "6",
                 "--likelihood-samples", "8", "--density-tuples", "120", "--out", str(out), "--no-progress"]) == 0
    meta, tables = read_tables(out)
    assert meta["config"]["objective"] == "mmvae" and meta["options"]["likelihood_samples"] == 8
    assert meta["options"]["density_tuples"] == 120 and fitted_to == [120]
    assert meta["date"].endswith("UTC") and meta["progress"]["epoch"] == 1
    assert set(tables) == set(TABLES)
    assert len(tables["coherence"]) == 31 * 5 and len(tables["latent_probe"]) == 31
    assert len(tables["frechet"]) == 31 * 5 + 5 + 5 and len(tables["likelihood"]) == 1 + 5  # subsets, prior, GMM
    metrics = {row["metric"] for row in tables["summary"]}
    assert {"coherence", "latent_probe", "frechet", "frechet (aggregate posterior)", "random_coherence",
            "random_coherence (aggregate posterior)", "log p(X)"} <= metrics
    for name in TABLES:
        with open(out / f"{name}.csv") as handle:
            assert len(list(csv.DictReader(handle))) == len(tables[name])
    joint = tables["likelihood"][0]["mean"]
    assert joint < 0 and all(row["mean"] < 0 for row in tables["likelihood"])  # densities of 2352 pixels
    assert main([str(tmp_path / "nothing")]) == 1
    assert "neither a run folder" in capsys.readouterr().err


def test_evaluated_reuses_written_tables_and_evaluates_only_when_missing(tmp_path, monkeypatch):
    from mopoe_lib.evaluation import SuiteOptions, evaluated, results

    calls = []

    def fake_evaluate_run(source, options=None, out=None, progress=True):
        calls.append((source, options, progress))
        folder = source / "evaluation"
        folder.mkdir()
        (folder / "evaluation.json").write_text("{}")
        return folder

    monkeypatch.setattr(results, "evaluate_run", fake_evaluate_run)
    options = SuiteOptions(test_samples=10)
    assert evaluated(tmp_path, options, progress=False) == tmp_path / "evaluation"
    assert calls == [(tmp_path, options, False)]
    assert evaluated(tmp_path, options) == tmp_path / "evaluation"  # written: read, not evaluated again
    assert len(calls) == 1


def test_results_are_collected_with_provenance_and_summarised_over_seeds(tmp_path):
    from mopoe_lib.config import get_config
    from mopoe_lib.evaluation import collect_results, provenance, result_folders, seed_summary, write_tables
    from mopoe_lib.integrity import write_json

    values = {0: [0.5, 0.6], 1: [0.7, 0.8], 2: [0.6, 0.4]}
    for seed, (one, two) in values.items():
        config = get_config("polymnist-fast-mopoe", seed=seed)
        run = tmp_path / "runs" / f"polymnist-fast-mopoe-seed{seed}"
        summary = [{"metric": "coherence", "num_inputs": 1, "value": one},
                   {"metric": "coherence", "num_inputs": 2, "value": two}]
        probes = [{"subset": "m0", "num_inputs": 1, "accuracy": one}]
        write_tables({"summary": summary, "latent_probe": probes}, run / "evaluation",
                     provenance(config, {"epoch": 4}, str(run)))
        write_json(run / "config.json", {"device": "cpu", "precision": "fp32",
                                         "environment": {"cpu_count": 2, "threads": 1, "cuda": None}})
    (tmp_path / "runs" / "unevaluated").mkdir()
    stale = tmp_path / "runs" / "polymnist-fast-mopoe-seed0-old-123"  # superseded by the run above
    write_tables({"summary": [{"metric": "coherence", "num_inputs": 1, "value": 0.0}]}, stale / "evaluation",
                 {**provenance(get_config("polymnist-fast-mopoe", seed=0), {"epoch": 4}, str(stale)),
                  "date": "2020-01-01 00:00 UTC"})
    folders = result_folders([tmp_path / "runs", tmp_path / "missing"])
    assert len(folders) == 4 and stale / "evaluation" in folders
    rows = collect_results(folders)
    assert len(rows) == 6
    provenance_columns = {(r["seed"], r["epochs"], r["planned_epochs"], r["model"]) for r in rows}
    planned = get_config("polymnist-fast-mopoe").epochs  # from the config, the progress says 4 were run
    assert provenance_columns == {(k, 4, planned, "mopoe") for k in range(3)}
    assert all(r["hardware"] == "cpu (2 cores, threads=1), fp32" and r["date"].endswith("UTC") for r in rows)
    assert not any(r["shipped"] for r in rows)
    probes = collect_results(folders, table="latent_probe")
    assert [(r["seed"], r["subset"], r["accuracy"]) for r in probes] == [(k, "m0", values[k][0]) for k in range(3)]
    summary = {r["num_inputs"]: r for r in seed_summary(rows)}
    assert summary[1]["seeds"] == 3 and summary[1]["seed_list"] == [0, 1, 2]
    assert summary[1]["mean"] == pytest.approx(0.6) and summary[1]["sd"] == pytest.approx(0.1)
    assert summary[2]["mean"] == pytest.approx(0.6) and summary[2]["sd"] == pytest.approx(0.2)


def test_a_run_on_incomplete_data_is_its_own_experiment_not_a_newer_seed(tmp_path):
    """Same experiment name and seed, trained on incomplete tuples (and the drop-incomplete baseline): three
    experiments, none superseding another, each with its missingness in the provenance columns."""
    from mopoe_lib.config import get_config
    from mopoe_lib.evaluation import collect_results, provenance, result_folders, seed_summary, write_tables

    settings = {"complete": {}, "masked": {"missing": "complete:0.5"},
                "dropped": {"missing": "complete:0.5", "drop_incomplete": True}}
    for value, (folder, overrides) in enumerate(settings.items()):
        config = get_config("polymnist-fast-mopoe", seed=0, **overrides)
        write_tables({"summary": [{"metric": "coherence", "num_inputs": 1, "value": value / 10}]},
                     tmp_path / folder / "evaluation", provenance(config, {"epoch": 6}, folder))
    rows = {r["folder"].split("/")[-2]: r for r in collect_results(result_folders([tmp_path]))}
    assert len(rows) == 3 and [rows[k]["value"] for k in settings] == [0.0, 0.1, 0.2]
    assert rows["complete"]["experiment"] == "polymnist-fast-mopoe" and rows["complete"]["missing"] == "none"
    assert rows["masked"]["experiment"] == "polymnist-fast-mopoe [complete:0.5]"
    assert rows["dropped"]["experiment"] == "polymnist-fast-mopoe [complete:0.5, complete tuples only]"
    assert [rows[k]["drop_incomplete"] for k in settings] == [False, False, True]
    assert all(s["seeds"] == 1 for s in seed_summary(rows.values()))


def test_classifiers_show_prints_the_shipped_accuracies(capsys):
    assert classifiers_main(["show"]) == 0
    shown = capsys.readouterr().out
    assert "test_accuracy" in shown and "refinements" in shown


def test_shipped_classifiers_reach_98_percent():
    """The recorded test accuracies (full test set) are at least 0.98, and the weights agree: on the FAST test
    tuples (the first 1000 of the full test set) each classifier is still right at least 97% of the time."""
    recorded = json.loads((classifier_dir() / "classifiers.json").read_text())["test_accuracy"]
    assert min(recorded) >= 0.98, recorded
    measured = accuracy(load_classifiers(), load_polymnist("test", "fast"))
    assert (measured >= 0.97).all(), measured


def test_a_second_judge_has_its_own_architecture_and_reads_blurred_images(tmp_path):
    """The ``deep`` judges train on blurred, low-contrast images, save and load with their architecture."""
    from mopoe_lib.data import MultimodalDataset
    from mopoe_lib.evaluation.classifiers import (
        blur_and_contrast,
        load_classifiers,
        predict,
        save_classifiers,
        train_classifiers,
    )

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 10
    images = [torch.rand(40, 3, 28, 28, generator=generator) * 0.2 + (labels.view(-1, 1, 1, 1) / 10) * 0.8
              for _ in range(2)]  # the brightness tells the digit
    augmented = blur_and_contrast(images, torch.Generator().manual_seed(1))
    assert all(a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
               for a, x in zip(augmented, images, strict=True))
    assert float((augmented[0] - images[0]).abs().mean()) > 0.01  # it changed the images
    data = MultimodalDataset(images, labels)
    model = train_classifiers(data, epochs=30, batch_size=20, lr=3e-3, progress=False, arch="deep", augment=True)
    assert model.arch == "deep" and sum(p.numel() for p in model.parameters()) > 0
    save_classifiers(model, torch.ones(2), tmp_path / "judge2", {"num_modalities": 2, "arch": "deep"})
    loaded = load_classifiers(tmp_path / "judge2")
    assert loaded.arch == "deep" and torch.equal(predict(loaded, images), predict(model, images))
    with pytest.raises(ValueError, match="authors, deep"):
        train_classifiers(data, epochs=1, progress=False, arch="resnet")


def test_a_second_judge_set_with_a_classifier_at_chance_is_left_out(tmp_path, monkeypatch):
    from mopoe_lib.config import get_config
    from mopoe_lib.evaluation import results
    from mopoe_lib.evaluation.classifiers import ModalityClassifiers, save_classifiers

    config = get_config("polymnist-fast-mopoe")
    monkeypatch.setattr(results, "classifier_dir", lambda name="polymnist": tmp_path / name)
    assert results.second_judges(config) == {}  # not shipped: no second judge, no warning
    info = {"num_modalities": 5, "arch": "deep", "modalities": ["a", "b", "c", "d", "e"]}
    folder = tmp_path / results.SECOND_JUDGE
    save_classifiers(ModalityClassifiers(5, arch="deep"), torch.tensor([0.98, 0.11, 0.97, 0.99, 0.96]), folder, info)
    with pytest.warns(UserWarning, match=r"below 0.9 for \{'b': 0.11\}"):
        assert results.second_judges(config) == {}
    save_classifiers(ModalityClassifiers(5, arch="deep"), torch.tensor([0.98, 0.95, 0.97, 0.99, 0.96]), folder, info)
    judges = results.second_judges(config)
    assert list(judges) == ["judge2"] and judges["judge2"].arch == "deep"
    assert results.second_judges(get_config("mst-fast-mopoe")) == {}  # PolyMNIST only


def test_other_judges_score_the_same_generations_in_the_summary():
    from mopoe_lib.config import build_model, get_config
    from mopoe_lib.data import load_polymnist
    from mopoe_lib.evaluation import SuiteOptions, evaluate_model, load_classifiers
    from mopoe_lib.fusion import powerset

    torch.manual_seed(0)
    model = build_model(get_config("polymnist-fast-mopoe", latent_dim=8))
    train, test = load_polymnist("train", "fast").subset(torch.arange(60)), load_polymnist("test", "fast")
    judges = load_classifiers()
    options = SuiteOptions(test_samples=40, probe_train=60, likelihood_points=2, likelihood_samples=2)
    tables = evaluate_model(model, powerset(5), judges, train, test, options, progress=False,
                            other_judges={"again": judges})
    rows = {(r["metric"], r["num_inputs"]): r["value"] for r in tables["summary"]}
    for k in range(1, 5):  # the same judge on the same generations: the same numbers
        assert rows[("coherence (again)", k)] == rows[("coherence", k)]


def test_conditional_likelihoods_by_number_of_inputs_are_exact_on_the_toy():
    """With exact experts the posterior given S is the true one, so every log p(x_t | X_S) is exact."""
    from mopoe_lib.evaluation import conditional_by_num_inputs
    from mopoe_lib.toy import LinearGaussianToy

    toy = LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=2, seed=4)
    _, xs = toy.sample(50, torch.Generator().manual_seed(1))
    rows = conditional_by_num_inputs(toy.model("always"), xs, num_samples=20)
    assert len(rows) == 3 * 4 and {r["num_inputs"] for r in rows} == {0, 1, 2}
    names = toy.model("always").names
    for row in rows:
        t = names.index(row["target"])
        given = [names.index(n) for n in row["given"].split("+")] if row["given"] else []
        exact = toy.log_marginal(xs, given + [t]) - (toy.log_marginal(xs, given) if given else 0.0)
        assert row["value"] == pytest.approx(float(exact.mean()), abs=1e-6), row


def test_the_aggregate_posterior_sampler_reproduces_the_posterior_means_it_was_fitted_to():
    """Fitted to the joint posterior means of a toy whose means form two clusters, the sampler draws latents
    with the same mean and covariance (within sampling error), deterministically for a seed."""
    from mopoe_lib.data import MultimodalDataset
    from mopoe_lib.sampler import AggregatePosterior, sample_unconditional
    from mopoe_lib.toy import LinearGaussianToy

    toy = LinearGaussianToy.random(num_modalities=2, latent_dim=2, obs_dim=3, noise=0.3, seed=2)
    z, xs = toy.sample(4000, torch.Generator().manual_seed(0))
    model = toy.model("always")
    data = MultimodalDataset([x.float() for x in xs], torch.zeros(4000, dtype=torch.long))
    model = model.float()
    sampler = AggregatePosterior.fit(model, data, components=4, num_tuples=4000)
    means = model.infer([x.float() for x in xs], [0, 1])[0].detach().double()
    drawn = sampler.sample(20000, torch.Generator().manual_seed(1)).double()
    assert torch.allclose(drawn.mean(0), means.mean(0), atol=0.05)
    assert torch.allclose(torch.cov(drawn.T), torch.cov(means.T), atol=0.08)
    again = [sampler.sample(5, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*again)
    generated = sample_unconditional(model, 7, torch.Generator().manual_seed(0), sampler)
    assert [g.shape for g in generated] == [(7, 3), (7, 3)]
