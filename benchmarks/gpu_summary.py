"""The results of a GPU session (``benchmarks/gpu_session.sh``) as one Markdown page, with learning curves.

    python benchmarks/gpu_summary.py [benchmarks/results/h100]

Reads the folder's ``train_throughput-*-cuda.json``, ``step-profile-cuda.json`` and ``runs/*/metrics.jsonl`` (the
FULL runs, stopped by their time limit) and writes ``summary.md`` and ``runs/<run>/learning_curves.png`` there.
Every number on the page comes from those files.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from mopoe_lib.runs import read_metrics
from mopoe_lib.viz import learning_curves

FOLDER = Path(__file__).resolve().parent / "results" / "h100"


def throughput_rows(folder: Path) -> list[str]:
    lines = ["| measured (UTC) | workload | model | ms / step | samples / s | x networks-only |",
             "|---|---|---|---|---|---|"]
    results = [json.loads(path.read_text()) for path in folder.glob("train_throughput-*-cuda.json")]
    for result in sorted(results, key=lambda r: r["date"]):
        args = result["args"]
        setting = [args["precision"], f"batch {args['batch']}"]
        setting += [label for flag, label in (("channels_last", "channels_last"), ("cudnn_benchmark", "cuDNN autotune"),
                                             ("data", "batches from the data set")) if args.get(flag)]
        if args.get("compile_mode"):
            setting.append(f"compile {args['compile_mode']}")
        base = next((r for r in result["rows"] if r["model"] == "networks-only"), None)
        for row in result["rows"]:
            ratio = f"{row['ms_per_step'] / base['ms_per_step']:.2f}" if base and row is not base else ""
            lines.append(f"| {result['date'][11:16]} | {', '.join(setting)} | {row['model']} | "
                         f"{row['ms_per_step']:.1f} | {row['samples_per_s']:.0f} | {ratio} |")
    return lines


def profile_rows(folder: Path) -> list[str]:
    path = folder / "step-profile-cuda.json"
    if not path.is_file():
        return []
    profile = json.loads(path.read_text())
    lines = ["| model | wall ms / step (profiled) | GPU kernel ms / step | host syncs / step |", "|---|---|---|---|"]
    for name, row in profile.items():
        if isinstance(row, dict):
            lines.append(f"| {name} | {row['wall_ms_per_step_profiled']:.1f} | {row['gpu_kernel_ms_per_step']:.1f} | "
                         f"{row['host_syncs_per_step']} |")
    return lines


def utilisation(path: Path) -> float | None:
    """Mean GPU utilisation (%) over the samples taken while the GPU had memory in use (the run, not start-up)."""
    if not path.is_file():
        return None
    values = [line.split(", ") for line in path.read_text().splitlines() if line.strip()]
    busy = [float(v[1].rstrip(" %")) for v in values if float(v[3].split()[0]) > 0]
    return statistics.mean(busy) if busy else None


def run_rows(folder: Path) -> list[str]:
    lines = ["| run | settings | epochs in the time limit | train samples / s (median epoch) | wall s / epoch | "
             "mean GPU utilisation | coherence 1/2/3/4 (last evaluated epoch) | 300 epochs at this pace |",
             "|---|---|---|---|---|---|---|---|"]
    for run in sorted(p for p in (folder / "runs").iterdir() if (p / "metrics.jsonl").is_file()):
        rows = read_metrics(run)
        config = json.loads((run / "config.json").read_text())["config"]
        epochs = [r for r in rows if float(r["epoch"]).is_integer()]
        if not epochs:
            continue
        wall = epochs[-1]["wall_seconds"] / len(epochs)
        speed = statistics.median(r["samples_per_s"] for r in epochs)
        evaluated = [r for r in epochs if "test/coherence/1" in r]
        coherence = "/".join(f"{evaluated[-1][f'test/coherence/{k}']:.2f}" for k in range(1, 5)) if evaluated else ""
        at = f" (epoch {evaluated[-1]['epoch']:.0f})" if evaluated else ""
        settings = [f"eval and checkpoint every {config.get('eval_every_epochs', 1)} epoch(s)"]
        settings += [name for name in ("channels_last", "cudnn_benchmark") if config.get(name)]
        util = utilisation(run / "gpu_utilisation.csv")
        lines.append(f"| {run.name} | {', '.join(settings)} | {len(epochs)} in {epochs[-1]['wall_seconds']:.0f} s | "
                     f"{speed:.0f} | {wall:.2f} | {'' if util is None else f'{util:.0f}%'} | {coherence}{at} | "
                     f"{300 * wall / 60:.1f} min |")
        fig = learning_curves(rows, f"{run.name}: the paper's FULL configuration on one H100, stopped after "
                                    f"{epochs[-1]['wall_seconds']:.0f} s")
        fig.savefig(run / "learning_curves.png", dpi=90)
    return lines


def main(argv: list[str] | None = None) -> None:
    folder = Path((argv or sys.argv[1:] or [FOLDER])[0])
    page = [f"# GPU results ({folder.name})", "",
            "Written by `python benchmarks/gpu_summary.py` from the files in this folder, which "
            "`benchmarks/gpu_session.sh` (phases `measure`, `train`, `tuned-mopoe`) wrote on a lent machine; "
            "`log-*.txt` hold each phase's output. Timings from different calls may come from different "
            "machines of the same kind: compare rows measured within a minute of each other (one call) only.", "",
            "## Training steps (`benchmarks/train_throughput.py --device cuda`, paper networks, latent 512)", "",
            *throughput_rows(folder), "",
            "## Where a step's time goes (torch.profiler over 5 steps, fp32, batch 256)", "",
            *profile_rows(folder), "",
            "## FULL runs (`python -m mopoe_lib.train polymnist-full-<model> --set device=cuda "
            "--set time_limit_minutes=...`)", "",
            *run_rows(folder), ""]
    (folder / "summary.md").write_text("\n".join(page))
    print("\n".join(page))


if __name__ == "__main__":
    main()
