"""Time PolyMNIST generation (in memory, no disk) for the FAST and FULL sizes.

    python benchmarks/polymnist_generation.py

Prints one line per variant, the last as ``polymnist-full seconds=<float> tuples_per_s=<float>``, and writes
``benchmarks/results/polymnist_generation.json``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mopoe_lib.data import load_mnist
from mopoe_lib.data.backgrounds import default_backgrounds
from mopoe_lib.data.polymnist import VARIANTS, generate_polymnist

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    mnist = load_mnist()
    backgrounds = default_backgrounds()
    print(f"torch threads {torch.get_num_threads()}")
    rows = []
    for name in ("fast", "full"):
        spec = VARIANTS[name]
        start = time.perf_counter()
        generate_polymnist(mnist, spec.num_train, spec.num_test, seed=0, backgrounds=backgrounds)
        seconds = time.perf_counter() - start
        total = spec.num_train + spec.num_test
        rows.append({"variant": name, "tuples": total, "seconds": seconds, "tuples_per_s": total / seconds})
        print(f"polymnist-{name} seconds={seconds:.2f} tuples_per_s={total / seconds:.0f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "polymnist_generation.json").write_text(json.dumps({
        "benchmark": "polymnist_generation", "rows": rows, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "load_average": os.getloadavg(),
    }, indent=2) + "\n")


if __name__ == "__main__":
    main()
