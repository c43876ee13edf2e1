"""Shared by the benchmarks: per-operator self CPU time from torch.profiler, and the networks' share of it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from torch.profiler import ProfilerActivity, profile

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
