"""Training: a trainer that a reader can follow, checkpoints that never execute code, resume, DDP under torchrun.

Command line (the same function the notebooks call)::

    python -m mopoe_lib.train polymnist-fast-mopoe                     # a named experiment
    python -m mopoe_lib.train polymnist-fast-mopoe --set epochs=2 --set lr=1e-3
    python -m mopoe_lib.train polymnist-fast-mopoe --resume            # continue an interrupted run
    torchrun --nproc_per_node 4 -m mopoe_lib.train polymnist-full-mopoe  # data parallel (DDP)
    python -m mopoe_lib.train --list

- :mod:`.runtime`: device, CPU threads, data parallelism and precision, decided once per run;
- :mod:`.trainer`: :class:`Trainer` (a step, an end-of-epoch routine, typed :class:`Position`) and :func:`train`;
- the run folder it writes (config, metrics, checkpoints and their protocol) is :mod:`mopoe_lib.runs`.
"""

from ..runs import CheckpointError, NonFiniteError
from .runtime import Distributed, Runtime, pick_device
from .trainer import RESUMABLE, Position, Trainer, TrainResult, load_training_data, train

__all__ = ["RESUMABLE", "CheckpointError", "Distributed", "NonFiniteError", "Position", "Runtime", "TrainResult",
           "Trainer", "load_training_data", "pick_device", "train"]
