"""Where a training step spends its time: torch.profiler over a few steps, per operator, against networks-only.

    python benchmarks/profile_step.py --model mopoe [--precision fp32|bf16] [--channels-last]

Runs the step of ``train_throughput.py`` (same workload and options) for ``--model`` and for ``networks-only``
under ``torch.profiler`` and prints, per operator, the self CPU time per step of both and the difference, largest
difference first: the operators that make a model's step slower than the bare networks. The table goes to
``benchmarks/results/profile-<model>-....txt`` as well.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import MODELS, RESULTS, add_workload_arguments, batches, make_step

from mopoe_lib.settings import keep_freed_memory

#: the operators that do the networks' arithmetic (convolutions and matrix products, forward and backward)
NETWORK_OPS = ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution_backward", "aten::mm",
               "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_steps(step: Callable[[], None], steps: int) -> tuple[dict[str, float], dict[str, int]]:
    """Self CPU milliseconds per step by operator, and calls per step, over ``steps`` calls of ``step``."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    times: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in prof.key_averages():
        times[event.key] += event.self_cpu_time_total / 1000 / steps
        calls[event.key] += event.count // steps
    return dict(times), dict(calls)


def network_share(times: dict[str, float]) -> float:
    """The fraction of a step's self CPU time spent in :data:`NETWORK_OPS`."""
    total = sum(times.values())
    return sum(times.get(op, 0.0) for op in NETWORK_OPS) / total if total else 0.0


def self_times(name: str, args: argparse.Namespace) -> tuple[dict[str, float], dict[str, int], float]:
    """Self CPU milliseconds per step by operator, calls per step, and the step's total milliseconds."""
    step, _ = make_step(name, args.arch, args.latent, args.lr, args.channels_last, args.precision)
    source = batches(args.batch, False, args.channels_last)
    for _ in range(args.warmup):
        step(next(source))
    times, calls = profile_steps(lambda: step(next(source)), args.steps)
    return times, calls, sum(times.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS[1:], default="mopoe")
    add_workload_arguments(parser)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    keep_freed_memory()  # as the trainer does on CPU
    model_t, model_calls, model_total = self_times(args.model, args)
    base_t, base_calls, base_total = self_times("networks-only", args)
    lines = [f"{args.model} vs networks-only ({args.arch}, {args.precision}, batch {args.batch}, "
             f"{torch.get_num_threads()} threads): self CPU ms per step, profiled over {args.steps} steps",
             f"total: {args.model} {model_total:.1f} ms, networks-only {base_total:.1f} ms, "
             f"difference {model_total - base_total:+.1f} ms; share in the networks' convolutions and matrix "
             f"products: {args.model} {100 * network_share(model_t):.0f}%, networks-only "
             f"{100 * network_share(base_t):.0f}%",
             f"{'operator':42s} {args.model:>10s} {'calls':>6s} {'networks':>10s} {'calls':>6s} {'diff':>9s}"]
    ops = sorted(set(model_t) | set(base_t), key=lambda k: -(model_t.get(k, 0.0) - base_t.get(k, 0.0)))
    for op in ops[: args.top]:
        lines.append(f"{op[:42]:42s} {model_t.get(op, 0.0):10.1f} {model_calls.get(op, 0):6d} "
                     f"{base_t.get(op, 0.0):10.1f} {base_calls.get(op, 0):6d} "
                     f"{model_t.get(op, 0.0) - base_t.get(op, 0.0):+9.1f}")
    text = "\n".join(lines)
    print(text)
    tag = f"{args.model}-{args.arch}-{args.precision}-b{args.batch}" + ("-cl" if args.channels_last else "")
    out = RESULTS / f"profile-{tag}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
