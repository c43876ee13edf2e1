"""Results files: evaluate a run into tidy tables, and collect every evaluated run with its provenance.

An *evaluated run* is a folder ``<model folder>/evaluation/`` written by :func:`~.suite.write_tables`
(``evaluation.json`` + CSVs), next to the model's ``config.json`` (config, seed, versions, hardware). The
paper chapter (``07_paper_figures``) never types a number in: it calls :func:`collect_results`, which looks in

- ``data/pretrained/*/evaluation``: the shipped compact models (committed);
- ``data/results/*/evaluation``: results committed from other machines (e.g. FULL runs on a GPU);
- ``runs/*/evaluation``: this machine's runs (e.g. the FAST models of the book's chapters).
"""

from __future__ import annotations

import datetime
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..config import EXPERIMENTS, ExperimentConfig, load_dataset
from ..integrity import read_json
from ..runs import CheckpointError
from ..settings import repo_root
from .classifiers import JUDGE_MIN_ACCURACY, classifier_dir, load_classifiers
from .suite import SuiteOptions, evaluate_model, read_tables, write_tables


def load_source(source: str | Path):
    """``(model, config, progress, default output folder)`` of a run folder or a shipped model's name.

    Raises:
        CheckpointError: neither a run folder nor a shipped model, or a damaged one.
    """
    path = Path(source)
    folder = path if (path / runs.CONFIG).is_file() else runs.find_pretrained(str(source))
    if folder is None:
        raise CheckpointError(f"{str(source)!r} is neither a run folder nor a shipped model; shipped: "
                              f"{', '.join(runs.shipped_models()) or 'none'}")
    model, config = runs.rebuild_model(folder)
    return model, config, runs.run_progress(folder), folder / "evaluation"


def provenance(config: ExperimentConfig, progress: dict | None, source: str, **extra: Any) -> dict[str, Any]:
    """What every results file records about where its numbers come from."""
    return {"source": source, "config": config.to_dict(), "progress": progress, "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), **extra}


def judges_for(config: ExperimentConfig) -> tuple[Any, dict[str, Any]]:
    """The shipped digit classifiers of the config's data set and their recorded test accuracies.

    Raises:
        CheckpointError: the data set has no digit classifiers (CelebA); the message says so.
    """
    if config.dataset == "polymnist":
        return load_classifiers(), {"classifier_test_accuracy": read_json(classifier_dir() / "classifiers.json")[
            "test_accuracy"]}
    if config.dataset == "mnist-svhn-text":
        from .mst import load_mst_classifiers

        judges, meta = load_mst_classifiers(config.data_source or "street")
        return judges, {"classifier_test_accuracy": meta["test_accuracy"]}
    raise CheckpointError(f"the metric suite needs digit classifiers; {config.dataset} has none (its labels are "
                          "attributes, not one shared class)")


SECOND_JUDGE = "polymnist-judge2"


def second_judges(config: ExperimentConfig) -> dict[str, Any]:
    """The second PolyMNIST judge set (another architecture and seed, trained on blurred images) when it is
    shipped and every classifier in it reached :data:`~.classifiers.JUDGE_MIN_ACCURACY` on real test images
    (otherwise a warning names the weak ones and the set is left out); none for other data sets."""
    folder = classifier_dir(SECOND_JUDGE)
    if config.dataset != "polymnist" or not (folder / "classifiers.json").is_file():
        return {}
    meta = read_json(folder / "classifiers.json")
    weak = {name: acc for name, acc in zip(meta.get("modalities", []), meta.get("test_accuracy", []), strict=False)
            if acc < JUDGE_MIN_ACCURACY}
    if weak or len(meta.get("test_accuracy", [])) != meta.get("num_modalities", 5):
        warnings.warn(f"{folder} is not used as a judge: test accuracy below {JUDGE_MIN_ACCURACY} for {weak} "
                      f"(retrain those with python -m mopoe_lib.evaluation.classifiers train --out {folder} "
                      "--modalities ...)", stacklevel=2)
        return {}
    return {"judge2": load_classifiers(folder)}


def evaluate_run(source: str | Path, options: SuiteOptions | None = None, out: Path | None = None,
                 progress: bool = True) -> Path:
    """Run the metric suite on a run folder or shipped model and write its tables; returns the folder.

    Raises:
        CheckpointError: no such run or shipped model, or a data set without shipped classifiers.
    """
    options = options or SuiteOptions()
    model, config, trained, default_out = load_source(source)
    judges, judge_meta = judges_for(config)
    others = second_judges(config)
    start = time.perf_counter()
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    joint = config.make_objective().subsets(model.num_modalities, torch.Generator().manual_seed(options.seed))
    tables = evaluate_model(model, joint, judges, train, test, options, progress=progress, other_judges=others)
    meta = provenance(config, trained, str(source), **judge_meta, seconds=round(time.perf_counter() - start, 1))
    return write_tables(tables, out or default_out, meta, options)


def evaluated(run_folder: Path, options: SuiteOptions | None = None, progress: bool = True) -> Path:
    """A run folder's (or shipped model's) evaluation folder: the tables already written there when it has an
    ``evaluation.json``, else those :func:`evaluate_run` writes now with ``options``."""
    folder = Path(run_folder) / "evaluation"
    if (folder / "evaluation.json").is_file():
        return folder
    return evaluate_run(run_folder, options, progress=progress)


def result_folders(roots: Iterable[Path] | None = None) -> list[Path]:
    """Every ``*/evaluation`` folder with an ``evaluation.json`` under the result roots (see module docstring)."""
    if roots is None:
        base = repo_root() or Path.cwd()
        roots = [base / "data" / "pretrained", base / "data" / "results", base / "runs"]
    return sorted(p.parent for root in roots if Path(root).is_dir()
                  for p in Path(root).glob("*/evaluation/evaluation.json"))


def experiment_label(config: dict[str, Any], default: str = "?") -> str:
    """The experiment's name, plus how its training tuples were incomplete when they were (``missing``,
    ``drop_incomplete``), whether it learned its prior (``learn_prior``, where the named experiment does not)
    and its modality-specific latents where their size differs from the named experiment's (``style_dim``):
    such a run of a named experiment is another experiment, never a seed of the named one."""
    name = config.get("name", default)
    named = EXPERIMENTS.get(name)
    if bool(config.get("learn_prior")) and named is not None and not named.learn_prior:
        name = f"{name} [learned prior]"
    style, chosen = int(config.get("style_dim") or 0), config.get("style_modalities") or ""
    if named is not None and (style, chosen) != (int(named.style_dim or 0), named.style_modalities):
        name = f"{name} [style {style}{': ' + chosen if chosen and style else ''}]"
    missing = config.get("missing") or "none"
    if missing == "none":
        return name
    return f"{name} [{missing}{', complete tuples only' if config.get('drop_incomplete') else ''}]"


def _origin(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Provenance columns of one evaluated model: where it was trained and how far."""
    trained = folder.parent / runs.CONFIG  # only its environment record is read (the config is in the results)
    blob = read_json(trained) if trained.is_file() else {}
    env = blob.get("environment", {})
    where = env.get("cuda") or f"{env.get('cpu_count', '?')} cores, threads={env.get('threads', '?')}"
    hardware = f"{blob.get('device', '?')} ({where}), {blob.get('precision', '?')}"
    config = meta.get("config", {})
    progress = meta.get("progress") or {}
    missing, drop = config.get("missing") or "none", bool(config.get("drop_incomplete"))
    return {"experiment": experiment_label(config, folder.parent.name), "dataset": config.get("dataset", "?"),
            "model": config.get("objective", "?"), "seed": config.get("seed", 0),
            "missing": missing, "drop_incomplete": drop,
            "epochs": progress.get("epoch"), "planned_epochs": config.get("epochs"), "hardware": hardware,
            "shipped": "pretrained" in folder.parts, "date": meta.get("date", "not recorded"),
            "folder": str(folder)}


def collect_results(folders: Iterable[Path] | None = None, table: str = "summary") -> list[dict[str, Any]]:
    """Tidy rows: the provenance columns followed by the rows of ``table`` of every evaluated run (for
    ``summary``: ``metric, num_inputs, value``; any other table of :data:`~.suite.TABLES` as written).

    When several folders hold the same experiment and seed (a run re-trained after a config change leaves the
    old one as ``<name>-old-<time>``), only the most recently evaluated one counts.
    """
    latest: dict[tuple, tuple[str, dict, dict]] = {}
    for folder in result_folders() if folders is None else folders:
        meta, tables = read_tables(folder)
        origin = _origin(Path(folder), meta)
        key = (origin["experiment"], origin["dataset"], origin["seed"])
        date = "" if origin["date"] == "not recorded" else origin["date"]
        if key not in latest or date > latest[key][0]:
            latest[key] = (date, origin, tables)
    rows = []
    for _, origin, tables in sorted(latest.values(), key=lambda item: item[1]["folder"]):
        if table == "summary":
            rows += [{**origin, "metric": r["metric"], "num_inputs": int(r["num_inputs"]),
                      "value": float(r["value"])} for r in tables.get("summary", [])]
        else:
            rows += [{**origin, **r} for r in tables.get(table, [])]
    return rows


def seed_summary(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean, sample standard deviation and number of seeds per (experiment, metric, num_inputs)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["experiment"], row["dataset"], row["model"], row["metric"], row["num_inputs"])].append(row)
    out = []
    for (experiment, dataset, model, metric, inputs), members in sorted(groups.items()):
        values = torch.tensor([m["value"] for m in members], dtype=torch.float64)
        out.append({"experiment": experiment, "dataset": dataset, "model": model, "metric": metric,
                    "num_inputs": inputs, "mean": float(values.mean()),
                    "sd": float(values.std()) if len(values) > 1 else float("nan"), "seeds": len(values),
                    "seed_list": sorted({m["seed"] for m in members})})
    return out
