"""The trainer: one optimiser step at a time, an end-of-epoch routine, resumable at any checkpoint.

Reproducibility: the seed fixes the initialisation (``torch.manual_seed``), the data order of every epoch (a
generator seeded from ``(seed, epoch)``) and subset sampling / reparameterisation noise (a generator whose
state is checkpointed). On a CPU an interrupted and resumed run therefore ends with bit-identical parameters.
The run folder's format and the checkpoint protocol live in :mod:`mopoe_lib.runs`.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import runs
from ..config import ExperimentConfig, build_model, load_dataset
from ..data.dataset import Batch, MultimodalDataset
from ..model import MultimodalVAE
from ..objectives import LossOutput, Objective
from ..runs import CheckpointError, NonFiniteError
from .runtime import Runtime

#: Fields that may change between an interrupted run and its resumption (they change no training computation).
RESUMABLE = frozenset({"epochs", "max_steps", "time_limit_minutes", "device", "threads", "compile", "notes",
                       "checkpoint_every_steps", "keep_checkpoints", "eval_coherence", "eval_every_epochs",
                       "checkpoint_every_epochs", "cudnn_benchmark", "eval_samples"})


@dataclass
class Position:
    """Where training stands: completed epochs, steps into the current epoch, optimiser steps in all, and the
    running sums of the current epoch's logged values (so a resumed epoch reports the same averages)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Position:
        return cls(**values)

    def next_epoch(self) -> None:
        self.epoch, self.step_in_epoch, self.sums, self.counted = self.epoch + 1, 0, {}, 0


@dataclass
class TrainResult:
    model: MultimodalVAE
    config: ExperimentConfig
    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str = ""


class _Loss(nn.Module):
    """The objective on the model as one module, so DistributedDataParallel can wrap a training step."""

    def __init__(self, model: MultimodalVAE, objective: Objective) -> None:
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Batch, **kwargs: Any) -> LossOutput:
        return self.objective(self.model, batch, **kwargs)


def lr_at(config: ExperimentConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): a linear warm-up over ``lr_warmup_steps``, then
    constant or a cosine decay to ``lr * lr_final`` at ``total_steps``. A function of the step alone, so a resumed
    run continues the same schedule (changing ``epochs`` when resuming changes a cosine schedule's length)."""
    c, warmup = config, config.lr_warmup_steps
    if step < warmup:
        return c.lr * (step + 1) / warmup
    if c.lr_schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return c.lr * (c.lr_final + (1.0 - c.lr_final) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return c.lr


def load_training_data(config: ExperimentConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
    """``(train, test)`` of the config's data set: the training tuples with the config's missingness (a recorded
    mask, :mod:`mopoe_lib.data.missing`; only the complete ones with ``drop_incomplete``), the first
    ``train_subset`` of them; the test tuples complete."""
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    if config.missing != "none":
        from ..data.missing import recorded_availability

        name = f"{config.dataset}-{config.data_variant}-{config.data_source or 'default'}-seed{config.data_seed}"
        mask = recorded_availability(config.missing, len(train), train.num_modalities, config.missing_seed, name)
        train = train.subset(torch.nonzero(mask.all(dim=1)).flatten()) if config.drop_incomplete else \
            train.with_availability(mask)
    if config.train_subset:
        train = train.subset(torch.arange(min(config.train_subset, len(train))))
    return train, test


class Trainer:
    """Trains the model of ``config`` into ``run_dir``; :meth:`run` trains until the config's epochs, step limit
    or time limit, and may be called again to continue in memory (as ``resume`` does from disk).

    Args:
        run_dir: where config, metrics and checkpoints go (default ``runs/<config.name>``).
        resume: continue from the newest checkpoint in ``run_dir`` (an error if the config differs).
        progress: tqdm bars for epochs and steps.
        data: ``(train, test)`` datasets; loaded from the config when omitted.
        sync_every: read logged values from the device every this many steps (0: 1 on a CPU, 50 on a GPU). The
            loss is checked for NaN/inf at each read and always before a checkpoint.
    """

    def __init__(self, config: ExperimentConfig, run_dir: Path | str | None = None, resume: bool = False,
                 progress: bool = True, data: tuple[MultimodalDataset, MultimodalDataset] | None = None,
                 sync_every: int = 0) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else runs.default_run_dir(config)
        self.rt = Runtime.create(config, sync_every)
        self.show = progress and self.rt.dist.is_main
        train, test = data if data is not None else load_training_data(config)
        self.train_data = train.to(self.rt.device)
        self.steps_per_epoch = self.train_data.num_batches(config.batch_size, drop_last=True)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train)} training tuples make no full batch of batch_size={config.batch_size}: "
                             "no optimiser step can run; use a smaller batch_size or more data (train_subset)")
        self.test_data = test.subset(torch.arange(min(config.eval_samples, len(test)))).to(self.rt.device)
        self.judges = self._judges(test)
        torch.manual_seed(config.seed)
        self.model = build_model(config, train.names).to(self.rt.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          betas=(config.adam_beta1, config.adam_beta2))
        self.objective = config.make_objective()
        self.noise = torch.Generator().manual_seed(config.seed + 1)
        self.position = Position()
        self.history: list[dict[str, Any]] = []
        self.last_checkpoint: Path | None = None
        self._saved: dict[str, Any] | None = None
        if resume and (checkpoint := runs.latest_checkpoint(self.run_dir)) is not None:
            self._restore(checkpoint)
        elif self.rt.dist.is_main:
            self._start()
        if config.compile:
            self.model.encoders = torch.compile(self.model.encoders)  # type: ignore[assignment]
            self.model.decoders = torch.compile(self.model.decoders)  # type: ignore[assignment]
        self.step_fn = self.rt.wrap(_Loss(self.model, self.objective))
        self.scaler = self.rt.scaler()
        self._pending: list[tuple[Tensor, float, str]] = []
        self._keys: tuple[str, ...] = ()

    # ------------------------------------------------------------------------------------------- set-up

    def _judges(self, test: MultimodalDataset):
        """The data set's shipped digit classifiers and the test tuples for per-epoch coherence, if asked for."""
        if not self.config.eval_coherence:
            return None
        from ..evaluation.results import judges_for

        tuples = test.subset(torch.arange(min(self.config.eval_coherence, len(test))))
        return judges_for(self.config)[0].to(self.rt.device), tuples.to(self.rt.device)

    def _start(self) -> None:
        if runs.latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already holds a run; pass resume=True (--resume) or another folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        runs.write_run_config(self.run_dir, self.config, self.train_data.names, world_size=self.rt.dist.world_size,
                              device=str(self.rt.device), precision=self.rt.precision)
        runs.write_metrics(self.run_dir, [])

    def _restore(self, checkpoint: Path) -> None:
        saved, _ = runs.read_run_config(self.run_dir)
        changed = sorted(k for k, v in saved.to_dict().items() if self.config.to_dict()[k] != v and k not in RESUMABLE)
        if changed:
            raise ValueError(f"cannot resume {self.run_dir}: the config differs in {changed}")
        weights, state = runs.read_checkpoint(checkpoint, self.run_dir, self.rt.device)
        self.model.load_state_dict(weights)
        tensors = runs.read_optimizer(checkpoint)
        self.noise.set_state(tensors.pop("rng.noise"))
        runs.load_optimizer_state(self.optimizer, tensors, state["optimizer"], self.rt.device)
        self.position = Position.from_dict(state["progress"])
        self._check_position(checkpoint, tensors)
        self.history = runs.read_metrics(self.run_dir, self.position.epoch)
        self.last_checkpoint, self._saved = checkpoint, self.position.to_dict()
        if self.show:
            print(f"resuming {self.run_dir} at epoch {self.position.epoch}, step {self.position.global_step}")

    def _check_position(self, checkpoint: Path, tensors: dict[str, Tensor]) -> None:
        """The recorded position must agree with the epoch length and with the optimizer's own step counter
        (which lives in the checksummed optimizer file)."""
        p = self.position
        steps = {int(v) for k, v in tensors.items() if k.endswith(".step")}
        expected = p.epoch * self.steps_per_epoch + p.step_in_epoch
        if p.global_step != expected or not 0 <= p.step_in_epoch <= self.steps_per_epoch or steps - {p.global_step}:
            raise CheckpointError(f"{checkpoint / runs.STATE} records epoch {p.epoch}, step {p.step_in_epoch} of "
                                  f"{self.steps_per_epoch}, global step {p.global_step}, the optimizer {sorted(steps)} "
                                  "steps: they disagree (the file was edited or damaged); it was not used")

    # -------------------------------------------------------------------------------------------- loop

    def run(self, time_limit_s: float | None = None) -> TrainResult:
        """Train until the config's epochs are done or a limit stops it (``time_limit_s`` overrides the config's
        ``time_limit_minutes``); returns the model and the per-epoch metrics."""
        limit = 60 * self.config.time_limit_minutes if time_limit_s is None else time_limit_s
        self.history = [r for r in self.history if r["epoch"] <= self.position.epoch]  # drop a stopped epoch's row
        stopped = ""
        with runs.run_lock(self.run_dir) if self.rt.dist.is_main else nullcontext():
            start = self._run_start = time.perf_counter()
            epochs = tqdm(range(self.position.epoch, self.config.epochs), desc=self.config.name, disable=not self.show,
                          initial=self.position.epoch, total=self.config.epochs)
            self.model.train()
            for epoch in epochs:
                stopped = self.train_epoch(epoch, start, limit)
                row = self.end_epoch(epoch, stopped)
                if row is not None and self.show:
                    epochs.set_postfix(loss=f"{row.get('train/loss', math.nan):.1f}",
                                       samples_s=f"{row['samples_per_s']:.0f}")
                if stopped:
                    break
        self.rt.dist.barrier()
        return TrainResult(self.model, self.config, self.run_dir, self.history, stopped)

    def train_epoch(self, epoch: int, start: float, limit: float) -> str:
        """The rest of epoch ``epoch``; returns why it stopped early ("" when it ran to its end)."""
        c, p = self.config, self.position
        generator = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
        batches = self.train_data.batches(c.batch_size, shuffle=True, generator=generator, drop_last=True,
                                          shard=self.rt.dist.shard, start=p.step_in_epoch)
        self._epoch_start, self._timed = time.perf_counter(), 0
        self._bar = tqdm(batches, total=self.steps_per_epoch, initial=p.step_in_epoch, desc=f"epoch {epoch + 1}",
                         leave=False, disable=not self.show)
        for batch in self._bar:
            self.step(batch, epoch)
            if self._step_checkpoint_due() and p.step_in_epoch < self.steps_per_epoch:
                self.checkpoint()  # at an epoch's last step, end_epoch writes it (with the closed epoch)
            if c.max_steps and p.global_step >= c.max_steps:
                return f"max_steps={c.max_steps} reached"
            if limit and time.perf_counter() - start > limit:
                return f"time limit of {limit / 60:.4g} min reached"
        return ""

    def step(self, batch: Batch, epoch: int) -> None:
        """One optimiser step on ``batch``; the logged values wait on the device until the next read."""
        c, p = self.config, self.position
        if c.channels_last:
            batch = Batch(tuple(x.contiguous(memory_format=torch.channels_last) for x in batch.x), batch.label,
                          batch.available)
        with self.rt.autocast():
            out = self.step_fn(batch, step=p.global_step, generator=self.noise, shard=self.rt.dist.shard)
        self._keys, values = out.logged(self.model.names)
        where = f"step {p.global_step + 1} (epoch {epoch + 1}, batch {p.step_in_epoch + 1})"
        self._pending.append((values, out.beta, where))
        if len(self._pending) >= self.rt.sync_every:
            self.flush()  # raises on a non-finite loss before the optimiser takes the step (sync_every = 1)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(out.loss).backward()
            self._set_lr()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out.loss.backward()
            self._set_lr()
            self.optimizer.step()
        p.global_step += 1
        p.step_in_epoch += 1
        self._timed += 1

    def _set_lr(self) -> None:
        c = self.config
        if c.lr_warmup_steps or c.lr_schedule != "constant":
            total = c.max_steps or c.epochs * self.steps_per_epoch
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(c, self.position.global_step, total)

    def flush(self) -> None:
        """Read the pending logged values, check the losses and add them to the epoch's sums."""
        if not self._pending:
            return
        rows = torch.stack([values for values, _, _ in self._pending]).tolist()
        p = self.position
        for (_, beta, where), row in zip(self._pending, rows, strict=True):
            if not math.isfinite(row[0]):
                kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else \
                    "no checkpoint yet"
                raise NonFiniteError(f"non-finite loss ({row[0]}) at {where}; stopped, {kept}")
            for key, value in (*zip(self._keys, row, strict=True), ("beta", beta)):
                p.sums[key] = p.sums.get(key, 0.0) + value
            p.counted += 1
        self._pending.clear()
        if self.show:
            self._bar.set_postfix(loss=f"{rows[-1][0]:.1f}")

    # --------------------------------------------------------------------------------- end of an epoch

    def end_epoch(self, epoch: int, stopped: str) -> dict[str, Any] | None:
        """Close an epoch (or a stop within one): the metrics row, the evaluations and the checkpoint it is due."""
        self.flush()
        c, p = self.config, self.position
        seconds, sums, counted = time.perf_counter() - self._epoch_start, p.sums, p.counted
        epoch_done = p.step_in_epoch >= self.steps_per_epoch
        if epoch_done:
            p.next_epoch()
        finished = epoch + 1 == c.epochs
        if not self.rt.dist.is_main or not (epoch_done or stopped):
            return None
        row: dict[str, Any] = {
            "epoch": epoch + 1 if epoch_done else epoch + p.step_in_epoch / self.steps_per_epoch,
            "global_step": p.global_step, "seconds": seconds, "wall_seconds": time.perf_counter() - self._run_start,
            "samples_per_s": self._timed * c.batch_size / max(seconds, 1e-9),
            **{f"train/{k}": v / max(counted, 1) for k, v in sums.items()}}
        if epoch_done and ((epoch + 1) % c.eval_every_epochs == 0 or finished or stopped):
            row.update(self.evaluate())
        self.history.append(row)
        runs.write_metrics(self.run_dir, self.history)
        if stopped or finished or (epoch_done and (epoch + 1) % c.checkpoint_every_epochs == 0) \
                or self._step_checkpoint_due():
            self.checkpoint()
        return row

    def _step_checkpoint_due(self) -> bool:
        every = self.config.checkpoint_every_steps
        return bool(every) and self.position.global_step % every == 0

    def evaluate(self) -> dict[str, Any]:
        """The test bound (``eval_samples`` tuples) and coherence (``eval_coherence`` tuples), fixed noise."""
        from ..evaluation.bound import evaluate_bound
        from ..evaluation.coherence import coherence_by_num_inputs, conditional_coherence

        out: dict[str, Any] = {}
        if self.config.eval_samples:
            out.update(evaluate_bound(self.model, self.objective, self.test_data, self.config.batch_size,
                                      self.config.seed + 2, self.rt.autocast))
        if self.judges is not None:
            rows = conditional_coherence(self.model, *self.judges, seed=self.config.seed + 3, progress=False)
            self.model.train()
            out.update({f"test/coherence/{k}": v for k, v in coherence_by_num_inputs(rows).items()})
        return out

    def checkpoint(self) -> None:
        """Save a checkpoint (main process; never twice for the same position) after checking the losses."""
        if not self.rt.dist.is_main:
            return
        self.flush()
        state = self.position.to_dict()
        if state == self._saved:
            return
        weights = {k.replace("._orig_mod", ""): v for k, v in self.model.state_dict().items()}  # torch.compile
        self.last_checkpoint = runs.save_checkpoint(self.run_dir, weights, self.optimizer, self.noise, state,
                                                    self.config.keep_checkpoints)
        self._saved = state


def train(config: ExperimentConfig, run_dir: Path | str | None = None, resume: bool = False, progress: bool = True,
          data: tuple[MultimodalDataset, MultimodalDataset] | None = None, sync_every: int = 0) -> TrainResult:
    """Train (or continue training) the model of ``config``; returns the model and its per-epoch metrics.

    See :class:`Trainer` for the arguments.

    Raises:
        NonFiniteError: the loss or the parameters became NaN/inf; the message names the step, the last good
            checkpoint stays in place (with ``sync_every > 1`` up to ``sync_every - 1`` more optimiser steps
            ran, and no checkpoint was written after the bad step).
    """
    return Trainer(config, run_dir, resume, progress, data, sync_every).run()
