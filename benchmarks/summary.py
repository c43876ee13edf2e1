"""The benchmark results as one Markdown page, with every target of issue #9 marked met or missed.

    python benchmarks/summary.py            # after `make bench` wrote benchmarks/results/*.json

Reads the JSON files of ``train_throughput.py`` (fp32, channels_last, torch.compile, bf16, with data),
``multivae_mopoe.py``, ``fusion_scaling.py`` and ``polymnist_generation.py`` and writes
``benchmarks/results/summary.md`` (quoted in the README). A missing result is named with the command that makes
it. Ratios compare numbers measured by one ``make bench`` run, minutes apart on the same machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 256
#: file -> the command that writes it
SOURCES = {
    "fp32": ("train_throughput-all-paper-fp32-b256.json",
             "python benchmarks/train_throughput.py --model all --precision fp32"),
    "channels_last": ("train_throughput-all-paper-fp32-b256-cl.json",
                      "python benchmarks/train_throughput.py --model all --precision fp32 --channels-last"),
    "compile": ("train_throughput-mopoe-paper-fp32-b256-compile.json",
                "python benchmarks/train_throughput.py --model mopoe --precision fp32 --compile"),
    "bf16": ("train_throughput-networks-only-paper-bf16-b256.json",
             "python benchmarks/train_throughput.py --model networks-only --precision bf16 --steps 2 --warmup 1"),
    "data": ("train_throughput-mopoe-paper-fp32-b256-data.json",
             "python benchmarks/train_throughput.py --model mopoe --precision fp32 --data"),
    "multivae": ("multivae_mopoe_b256.json", ".venv-bench/bin/python benchmarks/multivae_mopoe.py --batch 256"),
    "fusion": ("fusion_scaling.json", "python benchmarks/fusion_scaling.py"),
    "generation": ("polymnist_generation.json", "python benchmarks/polymnist_generation.py"),
}


def load(key: str) -> dict:
    name, command = SOURCES[key]
    path = RESULTS / name
    if not path.is_file():
        sys.exit(f"missing {path}: run `{command}` (or `make bench`, which runs every benchmark)")
    return json.loads(path.read_text())


def rows_by_model(blob: dict) -> dict[str, dict]:
    return {row["model"]: row for row in blob["rows"]}


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def summary() -> str:
    fp32, multivae = load("fp32"), load("multivae")
    ours = rows_by_model(fp32)
    settings = {"fp32": ours, "fp32 + channels_last": rows_by_model(load("channels_last")),
                "fp32 + torch.compile (networks)": rows_by_model(load("compile"))}
    bf16 = rows_by_model(load("bf16"))["networks-only"]
    base, reference = ours["networks-only"], multivae["samples_per_s"]
    peak = fp32["matmul_peak_gflops"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {fp32['machine']['processor'] or fp32['machine']['platform']} "
        f"({fp32['machine']['cpu_count']} cores, {fp32['threads']} torch threads, torch {fp32['torch']}), "
        f"{fp32['date']} (load average before: {', '.join(f'{v:.2f}' for v in fp32['load_average'])}). "
        f"Workload: PolyMNIST-shaped batches of {BATCH} (5 modalities 3x28x28), the paper's conv networks, "
        f"latent 512, Laplace 0.75, beta 2.5, Adam; median of timed steps after warm-up. Matmul peak "
        f"measured in the same run: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s.",
        "",
        "## Training step (fp32)",
        "",
        "| model | ms/step | samples/s | x networks-only (time) | x networks-only (FLOPs) | GFLOP/s "
        "| % of fp32 peak | x multivae MoPoE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in ours.items():
        lines.append(f"| {name} | {row['ms_per_step']:.0f} | {row['samples_per_s']:.0f} | "
                     f"{row['ms_per_step'] / base['ms_per_step']:.2f} | "
                     f"{row['gflop_per_step'] / base['gflop_per_step']:.2f} | {row['gflop_per_s']:.0f} | "
                     f"{100 * row['fraction_of_peak']:.0f} | {row['samples_per_s'] / reference:.2f} |")
    lines.append(f"| multivae 1.0.3 MoPoE | {multivae['ms_per_step']:.0f} | {reference:.0f} | "
                 f"{multivae['ms_per_step'] / base['ms_per_step']:.2f} | | | | 1.00 |")
    outside = multivae["ms_per_step"] - base["ms_per_step"]
    lines += ["", f"multivae runs the same encoder and decoder modules; its step takes {outside:.0f} ms "
              f"({100 * outside / multivae['ms_per_step']:.0f}% of it) more than the networks alone: its subset "
              f"bookkeeping. No MoPoE trainer with these networks can beat networks-only, "
              f"{base['samples_per_s'] / reference:.2f} x multivae on this machine."]
    lines += ["", "## Other settings (MoPoE step)", "", "| setting | ms/step | samples/s | x multivae MoPoE |",
              "|---|---|---|---|"]
    best_name, best = None, None
    for setting, rows in settings.items():
        row = rows["mopoe"]
        lines.append(f"| {setting} | {row['ms_per_step']:.0f} | {row['samples_per_s']:.0f} | "
                     f"{row['samples_per_s'] / reference:.2f} |")
        if best is None or row["samples_per_s"] > best["samples_per_s"]:
            best_name, best = setting, row
    lines.append(f"| bf16 autocast, networks-only | {bf16['ms_per_step']:.0f} | {bf16['samples_per_s']:.1f} | "
                 f"{bf16['samples_per_s'] / reference:.2f} |")
    data = rows_by_model(load("data"))["mopoe"]
    lines += ["", f"Data handling: a MoPoE step drawing its batch from the FAST data set (uint8 -> float per batch) "
              f"takes {data['ms_per_step']:.0f} ms, {data['ms_per_step'] / ours['mopoe']['ms_per_step']:.2f} x the "
              f"step on a fixed batch."]
    generation = load("generation")
    lines += ["", "PolyMNIST generation (in memory): " + ", ".join(
        f"{r['variant']} {r['tuples']} tuples in {r['seconds']:.1f} s ({r['tuples_per_s']:.0f}/s)"
        for r in generation["rows"]) + "."]
    fusion = load("fusion")
    sampled = {r["M"]: r for r in fusion["rows"] if r["mode"] == "sampled"}
    exact = {r["M"]: r for r in fusion["rows"] if r["mode"] == "exact"}
    top = max(sampled)
    lines += ["", "## Fusion (subset posteriors, KL, a sample and backward; batch 256, latent 512)", "",
              "| M | subsets (exact) | ms (exact) | peak MiB (exact) | subsets (sampled) | ms (sampled) "
              "| peak MiB (sampled) |", "|---|---|---|---|---|---|---|"]
    for m in sorted(sampled):
        e = exact.get(m)
        cells = (f"{e['subsets']} | {e['ms']:.1f} | {e['peak_extra_mib']:.0f}" if e else "- | - | -")
        s = sampled[m]
        lines.append(f"| {m} | {cells} | {s['subsets']} | {s['ms']:.1f} | {s['peak_extra_mib']:.0f} |")
    time_ratio = sampled[top]["ms"] / sampled[5]["ms"]
    # memory independent of 2^M: flat over every M that uses the same number of sampled subsets as M = top
    fixed = [r["peak_extra_mib"] for r in sampled.values() if r["subsets"] == sampled[top]["subsets"]]
    memory_spread = max(fixed) / min(fixed)
    fixed_ms = [r["ms"] for r in sampled.values() if r["subsets"] == sampled[top]["subsets"]]
    fixed_from = min(m for m, r in sampled.items() if r["subsets"] == sampled[top]["subsets"])

    fp32_ratios = {n: ours[n]["ms_per_step"] / base["ms_per_step"] for n in ("mopoe", "mvae", "mmvae")}
    vs_multivae = {n: ours[n]["samples_per_s"] / reference for n in ("mopoe", "mvae", "mmvae")}
    lines += ["", "## Targets (issue #9)", "", "| target | measured | verdict |", "|---|---|---|"]
    for n, ratio in fp32_ratios.items():
        flops = ours[n]["gflop_per_step"] / base["gflop_per_step"]
        lines.append(f"| CPU fp32: {n} step within 10% of networks-only | {ratio:.2f} x (FLOPs {flops:.2f} x) | "
                     f"{verdict(ratio <= 1.10)} |")
    for n, ratio in vs_multivae.items():
        lines.append(f"| CPU fp32: {n} at least 2 x multivae MoPoE | {ratio:.2f} x | {verdict(ratio >= 2.0)} |")
    best_ratio = best["samples_per_s"] / reference
    lines.append(f"| CPU best setting at least 3 x multivae MoPoE | {best_ratio:.2f} x ({best_name}) | "
                 f"{verdict(best_ratio >= 3.0)} |")
    lines.append(f"| Fusion M = {top}: time within 2 x of M = 5 | {time_ratio:.2f} x ({sampled[top]['subsets']} "
                 f"sampled subsets vs {sampled[5]['subsets']}; M = {fixed_from}..{top}: {min(fixed_ms):.0f}-"
                 f"{max(fixed_ms):.0f} ms) | {verdict(time_ratio <= 2.0)} |")
    lines.append(f"| Fusion M = {top}: memory independent of 2^M | peak {min(fixed):.0f}-{max(fixed):.0f} MiB for "
                 f"M = {fixed_from}..{top} (max/min {memory_spread:.2f}; {sampled[5]['peak_extra_mib']:.0f} MiB at "
                 f"M = 5) | {verdict(memory_spread <= 1.5)} |")
    lines.append(f"| Upper bound on this machine: networks-only vs multivae MoPoE | "
                 f"{base['samples_per_s'] / reference:.2f} x | (limit) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    text = summary()
    (RESULTS / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
