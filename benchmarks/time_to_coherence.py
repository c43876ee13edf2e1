"""Time to coherence: what a training recipe buys per minute of CPU time.

    python benchmarks/time_to_coherence.py run polymnist-fast-mopoe --label baseline --budget 5 --every 1
    python benchmarks/time_to_coherence.py run polymnist-compact-mopoe --label recipe --budget 60 --every 5 \\
        --set lr=2e-3 --set batch_size=64 --threads 1
    python benchmarks/time_to_coherence.py plot benchmarks/results/time_to_coherence/*.json --out curves.png
    python benchmarks/time_to_coherence.py table benchmarks/results/time_to_coherence/*.json

``run`` trains a named experiment (with ``--set`` overrides) for ``--budget`` minutes of training wall-clock
time and stops every ``--every`` minutes to measure, on fixed test tuples and with fixed noise:

- conditional coherence by number of inputs (the paper's protocol: one sampled latent per row from the model's
  posterior given each subset, every modality generated, the shipped classifiers as judges; targets outside the
  input subset only), and the same generations judged by every other classifier set given with ``--judge``;
- the linear latent probe by number of inputs (logistic regression on posterior means of 500 training tuples);
- the test bound, KL and active units.

Measurement time is not counted: the clock runs only inside the trainer (its own evaluations are switched off).
Training is resumable: the run folder and the results file are updated at every point, and ``run`` with the
same arguments continues where it stopped. Every point also keeps the model's weights
(``runs/time_to_coherence/<results stem>/snapshots/``, not committed), so a new judge can score the same
models later (``rejudge``).

The results file records the machine (CPU model, ISA flags, threads, load average at every point), torch and
the git commit. Times are wall-clock minutes of training on *this* machine: compare labels run on one machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mopoe_lib.config import build_model, get_config, parse_overrides
from mopoe_lib.evaluation.bound import evaluate_bound
from mopoe_lib.evaluation.classifiers import load_classifiers
from mopoe_lib.evaluation.coherence import coherence_by_num_inputs
from mopoe_lib.evaluation.latent import latent_probe
from mopoe_lib.evaluation.results import judges_for
from mopoe_lib.integrity import read_json, write_json
from mopoe_lib.runs import latest_checkpoint
from mopoe_lib.train import load_training_data, train

RESULTS = Path(__file__).resolve().parent / "results" / "time_to_coherence"
ROOT = Path(__file__).resolve().parent.parent


def work_dir(results_path: Path) -> Path:
    """Where a results file's run folder and snapshots live: ``runs/time_to_coherence/<stem>/`` (not committed:
    8 MB per compact snapshot)."""
    return ROOT / "runs" / "time_to_coherence" / results_path.stem


def machine() -> dict[str, Any]:
    """CPU model and the ISA features that decide CPU speed (AVX2, AVX-512, AMX), torch and the commit."""
    model, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model.strip():
                model = line.split(":", 1)[1].strip()
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {"cpu": model, "cpu_count": os.cpu_count(),
            "isa": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit, "dirty": dirty,
            "isa_cap": os.environ.get("ONEDNN_MAX_CPU_ISA", "")}


# ----------------------------------------------------------------------------------------------------- run


def measure(model, config, train_data, test_data, judges: dict[str, Any], seed: int) -> dict[str, Any]:
    """Coherence (every judge), probe and test bound of ``model`` on fixed tuples with fixed noise."""
    from mopoe_lib.evaluation.coherence import conditional_coherence_by_judge

    start = time.perf_counter()
    model.eval()
    by_judge = conditional_coherence_by_judge(model, judges, test_data, seed=seed, progress=False)
    out: dict[str, Any] = {f"coherence/{name}": _keyed(coherence_by_num_inputs(rows))
                           for name, rows in by_judge.items()}
    probe = latent_probe(model, train_data, test_data, seed=seed)
    groups: dict[int, list[float]] = {}
    for row in probe:
        groups.setdefault(row["num_inputs"], []).append(row["accuracy"])
    out["probe"] = _keyed({k: sum(v) / len(v) for k, v in sorted(groups.items())})
    objective = config.make_objective()
    bound = evaluate_bound(model, objective, test_data, 250, seed, lambda: torch.autocast("cpu", enabled=False))
    out.update({k.removeprefix("test/"): v for k, v in bound.items() if k in
                ("test/elbo", "test/kl", "test/recon", "test/active_units")})
    out["measure_seconds"] = round(time.perf_counter() - start, 2)
    return out


def _keyed(by_num_inputs: dict[int, float]) -> dict[str, float]:
    """JSON keys: ``{"1": ..., "2": ...}`` (number of inputs as a string), values rounded to 4 digits."""
    return {str(k): round(v, 4) for k, v in sorted(by_num_inputs.items())}


def load_judges(config, folders: list[Path]) -> dict[str, Any]:
    """The data set's shipped judges (``shipped``) and any other PolyMNIST classifier folders, by folder name."""
    judges = {"shipped": judges_for(config)[0]}
    for folder in folders:
        judges[folder.name] = load_classifiers(folder)
    return judges


def run(args: argparse.Namespace) -> Path:
    overrides = parse_overrides(args.overrides)
    # the trainer's own evaluations are off: measurement happens here, outside the clock
    overrides.update(eval_samples=0, eval_coherence=0, threads=args.threads, seed=args.seed,
                     checkpoint_every_epochs=10**6, keep_checkpoints=1)
    config = get_config(args.experiment, **overrides)
    stem = f"{args.label}-{args.experiment}-s{args.seed}"
    results_path = Path(args.out) if args.out else RESULTS / f"{stem}.json"
    out = work_dir(results_path)
    run_dir = out / "run"
    torch.set_num_threads(args.threads)
    train_data, test_data = load_training_data(config)
    test = test_data.subset(torch.arange(min(args.test_samples, len(test_data))))
    judges = load_judges(config, [Path(j) for j in args.judge])
    if results_path.is_file() and latest_checkpoint(run_dir) is not None:
        results = read_json(results_path)
        if results["config"] != config.to_dict():
            raise SystemExit(f"{results_path} holds a run of another config; pass another --label or --out")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        results = {"label": args.label, "experiment": args.experiment, "seed": args.seed, "overrides": args.overrides,
                   "config": config.to_dict(), "threads": args.threads, "test_samples": len(test),
                   "budget_minutes": args.budget, "every_minutes": args.every, "machine": machine(),
                   "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "points": []}
    snapshots = out / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    trained = results["points"][-1]["train_seconds"] if results["points"] else 0.0
    while trained < args.budget * 60 - 1:
        chunk = min(args.every * 60, args.budget * 60 - trained)
        start = time.perf_counter()
        result = train(replace(config, time_limit_minutes=chunk / 60), run_dir,
                       resume=latest_checkpoint(run_dir) is not None, progress=False, data=(train_data, test_data))
        trained += time.perf_counter() - start
        checkpoint = latest_checkpoint(run_dir)
        state = read_json(checkpoint / "state.json")["progress"]
        minute = round(trained / 60, 2)
        shutil.copyfile(checkpoint / "model.safetensors", snapshots / f"minute-{minute:07.2f}.safetensors")
        point = {"minutes": minute, "train_seconds": round(trained, 1), "global_step": state["global_step"],
                 "epoch": state["epoch"] + state["step_in_epoch"] / max(train_data.num_batches(
                     config.batch_size, drop_last=True), 1),
                 "loadavg": os.getloadavg()[0], "snapshot": f"snapshots/minute-{minute:07.2f}.safetensors"}
        point.update(measure(result.model, config, train_data, test, judges, args.seed))
        results["points"].append(point)
        write_json(results_path, results)
        coherence = point["coherence/shipped"]
        print(f"{args.label} {args.experiment} {minute:6.2f} min  step {point['global_step']:6d}  "
              f"coherence {' '.join(f'{v:.2f}' for v in coherence.values())}  "
              f"probe {point['probe']['1']:.2f}  elbo {point['elbo']:.0f} kl {point['kl']:.1f}", flush=True)
        if result.stopped_early == "" and not config.max_steps:
            break  # the experiment's epochs are done before the budget
    return results_path


def rejudge(args: argparse.Namespace) -> None:
    """Score the saved snapshots of finished runs with more judges (adds ``coherence/<judge>`` entries)."""
    from mopoe_lib.evaluation.coherence import conditional_coherence_by_judge

    for path in map(Path, args.results):
        results = read_json(path)
        config = get_config(results["experiment"]).__class__.from_dict(results["config"])
        judges = {k: v for k, v in load_judges(config, [Path(j) for j in args.judge]).items() if k != "shipped"}
        _, test_data = load_training_data(config)
        test = test_data.subset(torch.arange(results["test_samples"]))
        model = build_model(config, test.num_modalities, test.names)
        for point in results["points"]:
            missing = {n: j for n, j in judges.items() if f"coherence/{n}" not in point}
            if not missing:
                continue
            model.load_state_dict(load_file(str(work_dir(path) / point["snapshot"])))
            for name, rows in conditional_coherence_by_judge(model, missing, test, seed=results["seed"],
                                                             progress=False).items():
                point[f"coherence/{name}"] = _keyed(coherence_by_num_inputs(rows))
        write_json(path, results)
        print(f"{path}: judged by {', '.join(judges) or 'no new judge'}")


# ----------------------------------------------------------------------------------------- table and plot


def _rows(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_json(p) for p in sorted(paths)]


def _at(points: list[dict[str, Any]], minutes: float | None) -> dict[str, Any] | None:
    """The last point at or before ``minutes`` (the last point of all when ``None``)."""
    if minutes is None:
        return points[-1] if points else None
    before = [p for p in points if p["minutes"] <= minutes + 0.05]
    return before[-1] if before else None


def _at_samples(results: dict[str, Any], samples: float) -> dict[str, Any] | None:
    """The last point at or before ``samples`` training examples (steps x batch size: compares batch sizes)."""
    batch = results["config"]["batch_size"]
    before = [p for p in results["points"] if p["global_step"] * batch <= samples]
    return before[-1] if before else None


def _selected(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.at_samples is not None:
        point = _at_samples(results, args.at_samples)
    elif args.at is not None or args.last:
        point = _at(results["points"], args.at)
    else:
        return results["points"]
    return [point] if point is not None else []


def table(args: argparse.Namespace) -> None:
    """Markdown: every point of each results file, or one row per file at a training-time (``--at``) or a
    training-examples (``--at-samples``) budget."""
    lines = ["| label | experiment | seed | minutes | step | steps/min | load | coherence 1/2/3/4 | second judge | "
             "probe 1/5 | test bound | KL |", "|---|---|---|--:|--:|--:|--:|---|---|---|--:|--:|"]
    for results in _rows(list(map(Path, args.results))):
        for point in _selected(results, args):
            c, p = point["coherence/shipped"], point["probe"]
            judge = next((v for k, v in point.items() if k.startswith("coherence/") and k != "coherence/shipped"),
                         None)
            second = " / ".join(f"{v:.2f}" for v in judge.values()) if judge else ""
            load = sum(q["loadavg"] for q in results["points"] if q["minutes"] <= point["minutes"]) / \
                len([q for q in results["points"] if q["minutes"] <= point["minutes"]])
            lines.append(f"| {results['label']} | {results['experiment']} | {results['seed']} | "
                         f"{point['minutes']:.1f} | {point['global_step']} | "
                         f"{point['global_step'] / max(point['minutes'], 1e-9):.0f} | {load:.1f} | "
                         f"{' / '.join(f'{v:.2f}' for v in c.values())} | {second} | "
                         f"{p['1']:.2f} / {p[max(p, key=int)]:.2f} | {point['elbo']:.0f} | {point['kl']:.1f} |")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text, end="")


def plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _rows(list(map(Path, args.results)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for i, results in enumerate(runs):
        minutes = [p["minutes"] for p in results["points"]]
        label = f"{results['label']} {results['experiment'].split('-')[-1]} s{results['seed']}"
        line, = axes[0].plot(minutes, [p["coherence/shipped"]["1"] for p in results["points"]],
                             marker="o", ms=3, label=label, color=f"C{i % 10}")
        last = max(results["points"][0]["coherence/shipped"], key=int)
        axes[0].plot(minutes, [p["coherence/shipped"][last] for p in results["points"]], "--",
                     color=line.get_color())
        axes[1].plot(minutes, [p["elbo"] for p in results["points"]], marker="o", ms=3, color=line.get_color())
    axes[0].axhline(0.1, color="0.5", ls=":")
    axes[0].set_ylim(0, 1)
    axes[0].set_ylabel("coherence (solid: 1 input, dashed: 4)")
    axes[1].set_ylabel("test bound (nats)")
    for ax in axes:
        ax.set_xlabel("training wall-clock minutes (this machine)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(args.out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train for a budget and measure at fixed wall-clock points")
    r.add_argument("experiment")
    r.add_argument("--label", required=True, help="name of the recipe (baseline, recipe, ...)")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--budget", type=float, default=5.0, help="minutes of training")
    r.add_argument("--every", type=float, default=1.0, help="minutes between measurements")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--test-samples", type=int, default=500)
    r.add_argument("--judge", action="append", default=[], help="another classifier folder (repeatable)")
    r.add_argument("--out", default=None, help="results file (default results/time_to_coherence/<label>-...json)")
    j = sub.add_parser("rejudge", help="score saved snapshots with more judges")
    j.add_argument("results", nargs="+")
    j.add_argument("--judge", action="append", required=True)
    t = sub.add_parser("table", help="markdown table of results files")
    t.add_argument("results", nargs="+")
    t.add_argument("--last", action="store_true", help="only the last point of each run")
    t.add_argument("--at", type=float, default=None, help="one row per run: the point at this many minutes")
    t.add_argument("--at-samples", type=float, default=None,
                   help="one row per run: the last point within this many training examples (steps x batch)")
    t.add_argument("--out", default=None, help="also write the table to this markdown file")
    p = sub.add_parser("plot", help="coherence and test bound against training minutes")
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default=str(RESULTS / "curves.png"))
    args = parser.parse_args(argv)
    {"run": run, "rejudge": rejudge, "table": table, "plot": plot}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
