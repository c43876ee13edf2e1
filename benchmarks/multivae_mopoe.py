"""Time MoPoE training steps in the reference library ``multivae`` 1.0.3, on the workload of train_throughput.py.

Runs in its own environment, never the book's (``make bench-env`` creates ``.venv-bench`` with multivae and the
same torch pin, through a constraints file so that pip keeps the CPU build):

    .venv-bench/bin/python benchmarks/multivae_mopoe.py --batch 256 --steps 20

Same workload as ``train_throughput.py --model mopoe --arch paper``: 5 modalities 3x28x28, the paper's conv
networks (the book's own ``PolyMNISTEncoder``/``PolyMNISTDecoder`` modules, wrapped in multivae's interfaces),
latent 512, Laplace 0.75, beta 2.5, Adam 5e-4, one fixed random batch. The last line printed is
``multivae-mopoe samples_per_s=<float> ms_per_step=<float>``; the result goes to ``benchmarks/results/``.

torchvision from PyPI is built against the CUDA torch and fails to import next to the CPU build
(``RuntimeError: operator torchvision::nms does not exist``). multivae only uses it for data sets and image
grids, so a stub module stands in for it here; the timed code (encoders, fusion, decoders, loss) never calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def _stub_torchvision() -> None:
    class Placeholder:  # stands in for torchvision objects multivae touches only in data sets and plots
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __call__(self, *args, **kwargs):
            return args[0] if args else None

    def attribute(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return Placeholder

    root = types.ModuleType("torchvision")
    root.__version__ = "stub"
    for sub in ("transforms", "datasets", "utils", "models", "datasets.utils"):
        module = types.ModuleType(f"torchvision.{sub}")
        module.__getattr__ = attribute  # type: ignore[method-assign]
        sys.modules[f"torchvision.{sub}"] = module
        if "." not in sub:
            setattr(root, sub, module)
    sys.modules["torchvision"] = root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    _stub_torchvision()
    sys.path.insert(0, str(ROOT))
    import multivae
    import torch
    from multivae.models import MoPoE, MoPoEConfig
    from pythae.data.datasets import DatasetOutput
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder, BaseEncoder

    from mopoe_lib.networks.polymnist import PolyMNISTDecoder, PolyMNISTEncoder
    from mopoe_lib.settings import keep_freed_memory

    keep_freed_memory()  # the allocator setting of the book's benchmarks, so the comparison is like for like
    if args.threads:
        torch.set_num_threads(args.threads)

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = PolyMNISTEncoder(512)

        def forward(self, x):
            mu, logvar = self.net(x)
            return ModelOutput(embedding=mu, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = PolyMNISTDecoder(512)

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z))

    names = [f"m{m}" for m in range(5)]
    config = MoPoEConfig(n_modalities=5, latent_dim=512, input_dims={n: (3, 28, 28) for n in names},
                         decoders_dist={n: "laplace" for n in names},
                         decoder_dist_params={n: {"scale": 0.75} for n in names}, beta=2.5)
    torch.manual_seed(0)
    model = MoPoE(config, encoders={n: Encoder() for n in names}, decoders={n: Decoder() for n in names})
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    batch = DatasetOutput(data={n: torch.rand(args.batch, 3, 28, 28) for n in names})

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(times)
    result = {"model": "multivae-mopoe", "library": f"multivae {getattr(multivae, '__version__', '1.0.3')}",
              "batch": args.batch, "steps": args.steps, "ms_per_step": ms, "samples_per_s": args.batch / (ms / 1000),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"multivae_mopoe_b{args.batch}.json").write_text(json.dumps(result, indent=2) + "\n")
    ours = RESULTS / f"train_throughput-all-paper-fp32-b{args.batch}.json"
    if ours.is_file():  # written just before by `make bench`: the ratios of the book's trainer to multivae
        blob = json.loads(ours.read_text())
        print(f"book trainer vs multivae (fp32, batch {args.batch}; ours measured at {blob['date']}):")
        for row in blob["rows"]:
            print(f"  {row['model']:14s} {row['samples_per_s'] / result['samples_per_s']:.2f} x multivae-mopoe")
    print(f"multivae-mopoe samples_per_s={result['samples_per_s']:.1f} ms_per_step={ms:.1f}")


if __name__ == "__main__":
    main()
