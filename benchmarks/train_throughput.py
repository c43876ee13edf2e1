"""Time full training steps (forward, backward, Adam) of MoPoE, MVAE, MMVAE and the bare networks.

    python benchmarks/train_throughput.py --model mopoe --batch 256 [--precision fp32|bf16]
    python benchmarks/train_throughput.py --model all            # every model, ratios to networks-only
    python benchmarks/train_throughput.py --device cuda --precision bf16 --compile-mode reduce-overhead

Workload (the paper's PolyMNIST setup): PolyMNIST-shaped batches (5 modalities 3x28x28), the paper's conv networks
(``--arch paper``, latent 512) or the book's compact ones, Laplace 0.75, beta 2.5, Adam 5e-4. ``networks-only``
runs the same 5 encoders and 5 decoders with one z per row and a plain VAE loss: the practical limit of the
architecture. ``--data`` draws every batch from the FAST PolyMNIST set (uint8 -> float per batch) instead of
reusing one fixed batch, to show what data handling costs.

The models' steps are interleaved (one step of each model per round, ``--steps`` rounds after warm-up), so a
change of the machine's speed during the run affects all of them alike; the median step is reported.

The machine's matmul peak (fp32 and bf16, 2048x2048) is measured in the same run, and achieved GFLOP/s (FLOPs
of one step counted by ``torch.utils.flop_counter``) are reported against it. The last line printed is
``<model> samples_per_s=<float> ms_per_step=<float>``; results go to ``benchmarks/results/`` as JSON with the
machine, torch version and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from mopoe_lib.config import ARCHITECTURES, build_model, get_config
from mopoe_lib.data.dataset import MultimodalDataset
from mopoe_lib.fusion import kl_to_standard_normal, reparameterize
from mopoe_lib.settings import keep_freed_memory

MODELS = ("networks-only", "mopoe", "mvae", "mmvae")
RESULTS = Path(__file__).resolve().parent / "results"
CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously; host clocks must not stop before it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, max_size: int = 2048, repeats: int = 5, budget_s: float = 0.2,
                device: torch.device = CPU) -> float:
    """Best-of GFLOP/s of a square matmul in ``dtype``, at the largest size up to ``max_size`` whose single
    product takes under ``budget_s`` (bf16 without hardware support runs at < 1 GFLOP/s: a 2048 product would
    take a minute)."""
    size = 256
    while True:
        a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
        a @ b
        synchronize(device)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            synchronize(device)
            best = min(best, time.perf_counter() - start)
        if size >= max_size or best * 8 > budget_s:
            return 2 * size**3 / best / 1e9
        size *= 2


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed,
                               output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """FLOPs of a convolution's backward pass, grouped convolutions included.

    torch 2.13's formula counts the weight gradient of a grouped convolution ``groups`` times (it ignores
    groups; a 5-group layer is reported as 3x its true backward cost), which would inflate the achieved
    GFLOP/s of the grouped PolyMNIST networks. Here the weight-gradient part is divided by ``groups``.
    """
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups)
    raw = conv_backward_flop.__wrapped__  # the formula on shapes, without its registry wrapper
    grad_input = raw(*args, [output_mask[0], False, False], out_shape)
    grad_weight = raw(*args, [False, output_mask[1], False], out_shape)
    return grad_input + grad_weight // groups


def count_flops(step, x) -> int:
    """FLOPs of one call ``step(x)``, counted by ``torch.utils.flop_counter`` (grouped convolutions fixed)."""
    with FlopCounterMode(display=False,
                         custom_mapping={torch.ops.aten.convolution_backward: grouped_conv_backward_flop}) as counter:
        step(x)
    return counter.get_total_flops()


def make_step(name: str, arch: str, latent: int, lr: float, channels_last: bool, precision: str,
              compile_mode: str | None = None, device: torch.device = CPU):
    """A closure running one training step on a batch, and the model (for parameter counts).

    ``compile_mode``: torch.compile the encoders and decoders with this mode (``"default"``,
    ``"reduce-overhead"``: CUDA graphs on a GPU, ...); the fusion and the loss stay eager. The noise comes
    from a CPU generator, as in the trainer."""
    objective_name = "mopoe" if name == "networks-only" else name
    config = get_config(f"polymnist-full-{objective_name}", architecture=arch, latent_dim=latent, lr=lr)
    torch.manual_seed(0)
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile_mode:
        model.encoders.compile(mode=compile_mode)
        model.decoders.compile(mode=compile_mode)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    objective = config.make_objective()
    generator = torch.Generator().manual_seed(0)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext

    def networks_only_loss(x):
        mu, logvar = model.encode(x)  # (M, B, D)
        mu, logvar = mu.mean(0), logvar.mean(0)  # one z per row, no fusion: the networks' own cost
        z = reparameterize(mu, logvar, generator)
        recon = model.log_likelihoods(model.decode(z), x).sum(0)  # (B,)
        return (-(recon - config.beta * kl_to_standard_normal(mu, logvar))).mean()

    def step(x) -> None:
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier graph outputs may be reused
        with autocast():
            loss = networks_only_loss(x) if name == "networks-only" else objective(model, x, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, model


def batches(batch: int, use_data: bool, channels_last: bool, device: torch.device = CPU):
    """An endless iterator of 5-modality float batches (fixed, or drawn from the FAST data set, kept on the
    device as uint8 and converted per batch)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if not use_data:
        g = torch.Generator().manual_seed(0)
        fixed = [torch.rand(batch, 3, 28, 28, generator=g).to(device).contiguous(memory_format=fmt)
                 for _ in range(5)]
        while True:
            yield fixed
    from mopoe_lib.data import load_polymnist

    data: MultimodalDataset = load_polymnist("train", "fast").to(device)
    epoch = 0
    while True:
        for b in data.batches(batch, shuffle=True, generator=torch.Generator().manual_seed(epoch), drop_last=True):
            yield [x.contiguous(memory_format=fmt) for x in b.x]
        epoch += 1


def measure(names: tuple[str, ...], args: argparse.Namespace) -> list[dict]:
    """Time ``args.steps`` steps of every model, interleaved (one step of each model per round), so that a
    change in the machine's speed during the run (other tenants, clock) affects every model alike."""
    device = torch.device(args.device)
    mode = args.compile_mode or ("default" if args.compile else None)
    cases = {}
    for name in names:
        step, model = make_step(name, args.arch, args.latent, args.lr, args.channels_last, args.precision,
                                mode, device)
        source = batches(args.batch, args.data, args.channels_last, device)
        x = next(source)
        if mode:
            step(x)  # compile outside the flop counter
        flops = count_flops(step, x)
        for _ in range(args.warmup):
            step(next(source))
        cases[name] = (step, model, source, flops, [])
    for _ in range(args.steps):
        for step, _, source, _, times in cases.values():
            x = next(source)
            synchronize(device)
            start = time.perf_counter()
            step(x)
            synchronize(device)
            times.append(time.perf_counter() - start)
    rows = []
    for name, (_, model, _, flops, times) in cases.items():
        ms = 1000 * statistics.median(times)
        rows.append({
            "model": name, "ms_per_step": ms, "samples_per_s": args.batch / ms * 1000,
            "gflop_per_step": flops / 1e9, "gflop_per_s": flops / 1e9 / (ms / 1000),
            "ms_per_step_iqr": [1000 * q for q in statistics.quantiles(times, n=4)[::2]] if len(times) > 1 else None,
            "ms_per_step_min": 1000 * min(times), "parameters": sum(p.numel() for p in model.parameters())})
    return rows


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define the workload (shared with ``profile_step.py``)."""
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--arch", choices=tuple(ARCHITECTURES), default="paper")
    parser.add_argument("--latent", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--channels-last", action="store_true")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=(*MODELS, "all"), default="all")
    add_workload_arguments(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders and decoders")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                        default=None, help="torch.compile mode (implies --compile; reduce-overhead: CUDA graphs)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="GPU: cuDNN times its algorithms")
    parser.add_argument("--data", action="store_true", help="draw batches from the FAST data set")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if device.type == "cpu":
        keep_freed_memory()  # as the trainer does on CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    size = 8192 if device.type == "cuda" else 2048
    peaks = {"fp32": matmul_peak(torch.float32, size, device=device),
             "bf16": matmul_peak(torch.bfloat16, size, device=device)}
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, matmul peak fp32 {peaks['fp32']:.0f} "
          f"GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s")
    names = MODELS if args.model == "all" else (args.model,)
    rows = measure(names, args)
    for row in rows:
        name = row["model"]
        row["fraction_of_peak"] = row["gflop_per_s"] / peaks[args.precision]
        print(f"  {name:14s} {row['ms_per_step']:8.1f} ms/step {row['samples_per_s']:8.1f} samples/s "
              f"{row['gflop_per_s']:7.1f} GFLOP/s ({100 * row['fraction_of_peak']:.0f}% of {args.precision} peak)")
    base = next((r for r in rows if r["model"] == "networks-only"), None)
    if base is not None and len(rows) > 1:
        for row in rows[1:]:
            row["ratio_to_networks_only"] = row["ms_per_step"] / base["ms_per_step"]
            row["flop_ratio_to_networks_only"] = row["gflop_per_step"] / base["gflop_per_step"]
            print(f"  {row['model']:14s} step = {row['ratio_to_networks_only']:.2f} x networks-only "
                  f"(its FLOPs: {row['flop_ratio_to_networks_only']:.2f} x)")
    tag = f"{args.model}-{args.arch}-{args.precision}-b{args.batch}" + ("-cl" if args.channels_last else "") \
        + ("-compile" if args.compile and not args.compile_mode else "") \
        + (f"-compile-{args.compile_mode}" if args.compile_mode else "") + ("-data" if args.data else "") \
        + ("-cudnn-benchmark" if args.cudnn_benchmark else "") + ("-cuda" if device.type == "cuda" else "")
    out = args.out or RESULTS / f"train_throughput-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "train_throughput",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": rows, "matmul_peak_gflops": peaks, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average": os.getloadavg(),
    }, indent=2) + "\n")
    last = rows[-1]
    print(f"{last['model']} samples_per_s={last['samples_per_s']:.1f} ms_per_step={last['ms_per_step']:.1f}")


if __name__ == "__main__":
    main()
