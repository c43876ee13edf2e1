"""How the cost of the subset posteriors and their KL grows with the number of modalities M.

    python benchmarks/fusion_scaling.py [--max-m 20] [--exact-up-to 10] [--batch 256] [--latent 512]

For each M, with random experts (M, B, D): build the mixture of subset posteriors (products of experts, one
batched matrix product) over the MoPoE objective's subsets, take its KL upper bound and a stratified sample,
and run backward. ``exact``: all 2**M - 1 subsets (while affordable); ``sampled``: what the objective uses, at
most 64 subsets drawn uniformly per step. Each (M, mode) runs in a fresh process, so the peak resident memory
it reports (ru_maxrss minus the same process's footprint before the measurement) belongs to that case alone.
Prints one line per case and the ratio of time and memory at the largest M to M = 5; writes
``benchmarks/results/fusion_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_case(m: int, mode: str, batch: int, latent: int, repeats: int) -> dict:
    import torch

    from mopoe_lib.fusion import SubsetMixture, powerset
    from mopoe_lib.objectives import make_objective
    from mopoe_lib.settings import keep_freed_memory

    keep_freed_memory()  # as the trainer does on CPU (32 MiB tensors are otherwise re-mapped every step)

    torch.manual_seed(0)
    mu = torch.randn(m, batch, latent, requires_grad=True)
    logvar = (0.1 * torch.randn(m, batch, latent)).requires_grad_()
    objective = make_objective("mopoe")
    generator = torch.Generator().manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subsets = powerset(m) if mode == "exact" else objective.subsets(m, generator)
        flags = subsets.sum(dim=1) < 0  # no prior expert: the fusion's own cost
        mixture = SubsetMixture.from_experts(mu, logvar, subsets, flags)
        z, _ = mixture.sample(generator)
        loss = mixture.kl_upper_bound().mean() + z.square().mean()
        loss.backward()
        times.append(time.perf_counter() - start)
        mu.grad = logvar.grad = None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"M": m, "mode": mode, "subsets": int(subsets.shape[0]), "ms": 1000 * sorted(times)[len(times) // 2],
            "peak_extra_mib": peak_kib / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-m", type=int, default=20)
    parser.add_argument("--exact-up-to", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", nargs=2, metavar=("M", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(int(args.case[0]), args.case[1], args.batch, args.latent, args.repeats)))
        return
    rows = []
    for m in range(2, args.max_m + 1):
        for mode in ("exact", "sampled"):
            if mode == "exact" and m > args.exact_up_to:
                continue
            out = subprocess.run([sys.executable, __file__, "--case", str(m), mode, "--batch", str(args.batch),
                                  "--latent", str(args.latent), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"M={m:2d} {mode:7s} subsets={row['subsets']:5d} {row['ms']:9.2f} ms  "
                  f"peak +{row['peak_extra_mib']:8.1f} MiB", flush=True)
    sampled = {r["M"]: r for r in rows if r["mode"] == "sampled"}
    if 5 in sampled and args.max_m in sampled:
        top, ref = sampled[args.max_m], sampled[5]
        print(f"sampled M={args.max_m} vs M=5: time x{top['ms'] / ref['ms']:.2f}, "
              f"memory x{top['peak_extra_mib'] / max(ref['peak_extra_mib'], 1e-9):.2f}")
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fusion_scaling.json").write_text(json.dumps({
        "benchmark": "fusion_scaling", "args": vars(args), "rows": rows, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_average": os.getloadavg(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
