"""Where and how a run computes: device, CPU threads, data parallelism and precision, decided once per run."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..config import ExperimentConfig, resolve_precision
from ..settings import keep_freed_memory


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (``torchrun``); one process: rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, world_size)`` for :meth:`~mopoe_lib.data.MultimodalDataset.batches`, ``None`` alone."""
        return (self.rank, self.world_size) if self.enabled else None

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when started by torchrun (``WORLD_SIZE > 1``): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str) -> torch.device:
    """``auto`` -> the GPU when there is one, else the CPU.

    Raises:
        ValueError: a CUDA device is asked for and none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: this machine has no CUDA GPU (torch {torch.__version__}); use auto or cpu")
    return device


@dataclass(frozen=True)
class Runtime:
    """Device, data-parallel position and precision of a run.

    ``sync_every``: the trainer reads logged values from the device every this many steps (each read makes the
    host wait for a GPU): 1 on a CPU, 50 on a GPU unless set.
    """

    device: torch.device
    dist: Distributed
    precision: str
    sync_every: int

    @classmethod
    def create(cls, config: ExperimentConfig, sync_every: int = 0) -> Runtime:
        """Set the process up for ``config`` (threads, allocator, cuDNN, process group) and describe it."""
        device = pick_device(config.device)
        if device.type == "cuda" and config.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        if device.type == "cpu":
            keep_freed_memory()  # large tensors are otherwise re-mapped and zero-filled by the kernel every step
            if config.threads:
                torch.set_num_threads(config.threads)  # 0 keeps torch's default (all cores, or $OMP_NUM_THREADS)
        dist = setup_distributed(device)
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        if config.batch_size % dist.world_size:
            raise ValueError(f"batch_size {config.batch_size} is not divisible by the {dist.world_size} processes")
        return cls(device, dist, resolve_precision(config.precision, device.type),
                   sync_every or (1 if device.type == "cpu" else 50))

    def autocast(self) -> AbstractContextManager:
        """Mixed precision for bf16/fp16 runs, nothing for fp32."""
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        return torch.autocast(self.device.type, dtype=low) if low is not None else nullcontext()

    def scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 (the other precisions need none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` inside DistributedDataParallel when the run is data-parallel."""
        if not self.dist.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
