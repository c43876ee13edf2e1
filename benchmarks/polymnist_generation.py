"""Time PolyMNIST generation (in memory, no disk) for the FAST and FULL sizes.

    python benchmarks/polymnist_generation.py

Prints one line per variant, the last as ``polymnist-full seconds=<float> tuples_per_s=<float>``.
"""

from __future__ import annotations

import time

import torch

from mopoe_lib.data import load_mnist
from mopoe_lib.data.backgrounds import default_backgrounds
from mopoe_lib.data.polymnist import VARIANTS, generate_polymnist


def main() -> None:
    mnist = load_mnist()
    backgrounds = default_backgrounds()
    print(f"torch threads {torch.get_num_threads()}")
    for name in ("fast", "full"):
        spec = VARIANTS[name]
        start = time.perf_counter()
        generate_polymnist(mnist, spec.num_train, spec.num_test, seed=0, backgrounds=backgrounds)
        seconds = time.perf_counter() - start
        total = spec.num_train + spec.num_test
        print(f"polymnist-{name} seconds={seconds:.2f} tuples_per_s={total / seconds:.0f}")


if __name__ == "__main__":
    main()
