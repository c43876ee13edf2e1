"""Training: a reliable trainer, checkpoints that never execute code, resume, and DDP under torchrun.

Command line (the same function the notebooks call)::

    python -m mopoe_lib.train polymnist-fast-mopoe                     # a named experiment
    python -m mopoe_lib.train polymnist-fast-mopoe --set epochs=2 --set lr=1e-3
    python -m mopoe_lib.train polymnist-fast-mopoe --resume            # continue an interrupted run
    torchrun --nproc_per_node 4 -m mopoe_lib.train polymnist-full-mopoe  # data parallel (DDP)
    python -m mopoe_lib.train --list

A run folder holds ``config.json`` (resolved config, seed, versions, hardware), ``metrics.jsonl`` (one JSON
line per epoch), and ``checkpoints/`` with one sub-folder per checkpoint (``model.safetensors``,
``optimizer.safetensors`` and ``state.json``) plus ``latest.json`` naming the newest complete one. A
checkpoint folder is written under a temporary name and renamed when complete, and ``latest.json`` is
replaced atomically afterwards, so a crash at any moment leaves the previous checkpoint usable. Loading uses
safetensors and JSON only: no pickle, no code execution.

Reproducibility: the seed fixes the initialisation (``torch.manual_seed``), the data order of every epoch (a
generator seeded from ``(seed, epoch)``) and subset sampling / reparameterisation noise (a generator whose
state is checkpointed). On CPU an interrupted and resumed run therefore ends with bit-identical parameters.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .config import (
    EXPERIMENTS,
    ExperimentConfig,
    build_model,
    get_config,
    load_dataset,
    parse_overrides,
    resolve_precision,
)
from .data.dataset import MultimodalDataset
from .data.integrity import atomic_dir, read_json, write_json
from .model import MultimodalVAE
from .settings import keep_freed_memory, repo_root

CHECKPOINTS = "checkpoints"
LATEST = "latest.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""


class CheckpointError(RuntimeError):
    """A run folder has no usable checkpoint (the message says which file is missing or wrong)."""


# --------------------------------------------------------------------------------------------- environment


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment name>`` in the checkout (or the working directory)."""
    return (repo_root() or Path.cwd()) / "runs" / config.name


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded with every run."""
    info: dict[str, Any] = {
        "mopoe_lib": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when started by torchrun (``WORLD_SIZE > 1``): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# --------------------------------------------------------------------------------------------- checkpoints


def _unwrap(model: nn.Module) -> MultimodalVAE:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    device: torch.device) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            # Adam's step counter lives on the CPU unless capturable; every other tensor follows the params
            state.setdefault(int(pid), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, progress: dict[str, Any], keep: int = 2) -> Path:
    """Write a complete checkpoint folder atomically, point ``latest.json`` at it, prune older ones.

    ``progress`` holds the position (epoch, step in epoch, global step) and the running sums of the
    current epoch's metrics, so a resumed epoch reports the same averages as an uninterrupted one.
    """
    folder = run_dir / CHECKPOINTS
    name = f"step-{progress['global_step']:08d}"
    tensors, meta = _optimizer_tensors(optimizer)
    tensors["rng.noise"] = generator.get_state()
    state = {"progress": progress, "optimizer": meta, "format": 1}
    with atomic_dir(folder / name) as tmp:
        weights = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
        save_file(weights, str(tmp / "model.safetensors"))
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", state)
    write_json(folder / LATEST, {"checkpoint": name, "progress": progress})
    complete = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return folder / name


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None`` if it has none."""
    pointer = run_dir / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / CHECKPOINTS / read_json(pointer)["checkpoint"]
    if not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"{pointer} names {folder.name}, which is missing or incomplete")
    return folder


def load_run(run_dir: Path | str, map_location: str | torch.device = "cpu",
             checkpoint: Path | None = None) -> tuple[MultimodalVAE, ExperimentConfig]:
    """Rebuild a run's model from ``config.json`` and load its newest weights (safetensors only).

    Raises:
        CheckpointError: the folder has no config or no checkpoint; the message gives the training command.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path} is missing: {run_dir} is not a training run. Train one with\n"
                              f"    python -m mopoe_lib.train <experiment> --out {run_dir}")
    blob = read_json(config_path)
    config = ExperimentConfig.from_dict(blob["config"])
    folder = checkpoint or latest_checkpoint(run_dir)
    if folder is None:
        raise CheckpointError(f"{run_dir} has no checkpoint yet; resume it with\n"
                              f"    python -m mopoe_lib.train {config.name} --out {run_dir} --resume")
    names = blob.get("modalities")
    model = build_model(config, len(names) if names else 5, tuple(names) if names else None)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(map_location)))
    return model.to(map_location).eval(), config


# ------------------------------------------------------------------------------------------------ training


@dataclass
class TrainResult:
    model: MultimodalVAE
    config: ExperimentConfig
    run_dir: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: str = ""


def _read_metrics(path: Path, completed_epochs: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= completed_epochs]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    from .data.integrity import atomic_write_bytes

    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def load_training_data(config: ExperimentConfig) -> tuple[MultimodalDataset, MultimodalDataset]:
    train, test = load_dataset(config, "train"), load_dataset(config, "test")
    if config.train_subset:
        train = train.subset(torch.arange(min(config.train_subset, len(train))))
    return train, test


@torch.no_grad()
def evaluate_bound(model: MultimodalVAE, objective, data: MultimodalDataset, batch_size: int, seed: int,
                   autocast) -> dict[str, float]:
    """Mean bound (the objective's main term), reconstruction and KL on ``data``, with fixed noise; and the
    number of *active units* of the joint posterior (latent dimensions whose posterior mean varies across test
    tuples, variance > 0.01; Burda et al. 2016): 0 means the posterior has collapsed onto the prior."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    count = 0
    means = []
    everything = list(range(_unwrap(model).num_modalities))
    for batch in data.batches(batch_size):
        with autocast():
            out = objective(model, batch, generator=generator)
            means.append(_unwrap(model).infer(batch.x, everything)[0].float())  # the joint posterior's mean
        n = batch.size
        for key, value in out.as_floats(model.names).items():
            totals[key] = totals.get(key, 0.0) + value * n
        count += n
    model.train()
    metrics = {f"test/{k}": v / count for k, v in totals.items() if k not in ("beta", "loss")}
    if count > 1:
        metrics["test/active_units"] = int((torch.cat(means).var(dim=0) > 0.01).sum())
    return metrics


def evaluate_coherence(model: MultimodalVAE, classifiers, data: MultimodalDataset, seed: int) -> dict[str, float]:
    """Mean conditional coherence by number of inputs (``test/coherence/<k>``) on ``data``, with fixed noise."""
    from .evaluation.coherence import coherence_by_num_inputs, conditional_coherence

    rows = conditional_coherence(model, classifiers, data, seed=seed, progress=False)
    model.train()
    return {f"test/coherence/{k}": v for k, v in coherence_by_num_inputs(rows).items()}


def train(config: ExperimentConfig, run_dir: Path | str | None = None, resume: bool = False,
          progress: bool = True, data: tuple[MultimodalDataset, MultimodalDataset] | None = None,
          sync_every: int = 0) -> TrainResult:
    """Train (or continue training) the model of ``config``; returns the model and its per-epoch metrics.

    Args:
        run_dir: where config, metrics and checkpoints go (default ``runs/<config.name>``).
        resume: continue from the newest checkpoint in ``run_dir`` (an error if the config differs).
        progress: tqdm bars for epochs and steps.
        data: ``(train, test)`` datasets; loaded from the config when omitted.
        sync_every: read the logged values from the device every this many steps (0: every step on CPU, every
            50 on a GPU, where each read makes the host wait for the GPU). The loss is checked for NaN/inf
            then, and always before a checkpoint is written.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the message names the step, the last good checkpoint
            stays in place (with ``sync_every > 1`` up to ``sync_every - 1`` more optimiser steps ran, and
            no checkpoint was written after the bad step).
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
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

    train_data, test_data = data if data is not None else load_training_data(config)
    train_data = train_data.to(device)
    coherence_data = None
    if config.eval_coherence:
        from .evaluation.classifiers import load_classifiers

        coherence_data = (load_classifiers().to(device),
                          test_data.subset(torch.arange(min(config.eval_coherence, len(test_data)))).to(device))
    if config.eval_samples:
        test_data = test_data.subset(torch.arange(min(config.eval_samples, len(test_data)))).to(device)

    torch.manual_seed(config.seed)
    model = build_model(config, train_data.num_modalities, train_data.names).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    objective = config.make_objective()
    noise = torch.Generator().manual_seed(config.seed + 1)
    position: dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "sums": {}, "counted": 0}
    metrics_path = run_dir / "metrics.jsonl"
    history: list[dict[str, Any]] = []

    if resume and (checkpoint := latest_checkpoint(run_dir)) is not None:
        saved = ExperimentConfig.from_dict(read_json(run_dir / "config.json")["config"])
        changed = {k for k, v in saved.to_dict().items() if config.to_dict()[k] != v and k not in _RESUMABLE}
        if changed:
            raise ValueError(f"cannot resume {run_dir}: the config differs in {sorted(changed)}")
        _unwrap(model).load_state_dict(load_file(str(checkpoint / "model.safetensors"), device=str(device)))
        tensors = load_file(str(checkpoint / "optimizer.safetensors"))
        state = read_json(checkpoint / "state.json")
        noise.set_state(tensors.pop("rng.noise"))
        _load_optimizer(optimizer, tensors, state["optimizer"], device)
        position = dict(state["progress"])
        history = _read_metrics(metrics_path, position["epoch"])
        if progress and dist.is_main:
            print(f"resuming {run_dir} at epoch {position['epoch']}, step {position['global_step']}")
    elif dist.is_main:
        if run_dir.exists() and latest_checkpoint(run_dir) is not None and not resume:
            raise FileExistsError(f"{run_dir} already holds a run; pass resume=True (--resume) or another folder")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", {"config": config.to_dict(), "environment": environment(),
                                             "world_size": dist.world_size, "device": str(device),
                                             "modalities": list(train_data.names),
                                             "precision": resolve_precision(config.precision, device.type)})
        _write_metrics(metrics_path, [])

    net: nn.Module = model
    if config.compile:
        model.encoders = torch.compile(model.encoders)  # type: ignore[assignment]
        model.decoders = torch.compile(model.decoders)  # type: ignore[assignment]
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    precision = resolve_precision(config.precision, device.type)
    low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device.type, dtype=low) if low is not None else nullcontext()

    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    steps_per_epoch = train_data.num_batches(config.batch_size, drop_last=True)
    shard = (dist.rank, dist.world_size) if dist.enabled else None
    start_time = time.perf_counter()
    stopped = ""
    last_checkpoint: Path | None = latest_checkpoint(run_dir) if resume else None
    show = progress and dist.is_main
    epochs = tqdm(range(position["epoch"], config.epochs), desc=config.name, disable=not show,
                  initial=position["epoch"], total=config.epochs)
    model.train()
    # logged values wait on the device and are read every `sync_every` steps: one host sync instead of one per
    # value and step
    sync_every = sync_every or (1 if device.type == "cpu" else 50)
    pending: list[tuple[torch.Tensor, float, str]] = []
    keys: tuple[str, ...] = ()

    def flush() -> None:
        if not pending:
            return
        rows = torch.stack([values for values, _, _ in pending]).tolist()
        sums = position["sums"]
        for (_, beta, where), row in zip(pending, rows, strict=True):
            if not math.isfinite(row[0]):
                kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint yet"
                raise NonFiniteLossError(f"non-finite loss ({row[0]}) at {where}; stopped, {kept}")
            for key, value in (*zip(keys, row, strict=True), ("beta", beta)):
                sums[key] = sums.get(key, 0.0) + value
            position["counted"] += 1
        pending.clear()
        if show:
            bar.set_postfix(loss=f"{rows[-1][0]:.1f}")

    for epoch in epochs:
        timed_steps = 0  # steps run in this process (for throughput; a resumed epoch has fewer)
        epoch_start = time.perf_counter()
        skip = position["step_in_epoch"]
        batches = train_data.batches(config.batch_size, shuffle=True, generator=_epoch_generator(config.seed, epoch),
                                     drop_last=True, shard=shard)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}", leave=False, disable=not show)
        for index, batch in enumerate(bar):
            if index < skip:
                continue
            if config.channels_last:
                batch = type(batch)(tuple(x.contiguous(memory_format=torch.channels_last) for x in batch.x),
                                    batch.label, batch.available)
            with autocast():
                out = net(batch, objective, step=position["global_step"], generator=noise, shard=shard)
            keys, values = out.logged(model.names)
            where = f"step {position['global_step'] + 1} (epoch {epoch + 1}, batch {index + 1})"
            pending.append((values, out.beta, where))
            if len(pending) >= sync_every:
                flush()  # raises on a non-finite loss before the optimiser takes the step (sync_every = 1)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(out.loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                out.loss.backward()
                optimizer.step()
            position["global_step"] += 1
            position["step_in_epoch"] = index + 1
            timed_steps += 1
            if (config.checkpoint_every_steps and position["global_step"] % config.checkpoint_every_steps == 0
                    and dist.is_main):
                flush()
                last_checkpoint = save_checkpoint(run_dir, model, optimizer, noise, dict(position),
                                                  config.keep_checkpoints)
            if config.max_steps and position["global_step"] >= config.max_steps:
                stopped = f"max_steps={config.max_steps} reached"
                break
            if config.time_limit_minutes and time.perf_counter() - start_time > 60 * config.time_limit_minutes:
                stopped = f"time limit of {config.time_limit_minutes} min reached"
                break
        flush()
        seconds = time.perf_counter() - epoch_start
        sums, counted = position["sums"], position["counted"]
        epoch_done = position["step_in_epoch"] >= steps_per_epoch
        if epoch_done:
            position.update(epoch=epoch + 1, step_in_epoch=0, sums={}, counted=0)
        finished = epoch + 1 == config.epochs
        evaluate = epoch_done and ((epoch + 1) % config.eval_every_epochs == 0 or finished or bool(stopped))
        if dist.is_main and (epoch_done or stopped):
            done = epoch + 1 if epoch_done else epoch + position["step_in_epoch"] / steps_per_epoch
            row: dict[str, Any] = {"epoch": done, "global_step": position["global_step"], "seconds": seconds,
                                   "samples_per_s": timed_steps * config.batch_size / max(seconds, 1e-9),
                                   "wall_seconds": time.perf_counter() - start_time}
            row.update({f"train/{k}": v / max(counted, 1) for k, v in sums.items()})
            if config.eval_samples and evaluate:
                row.update(evaluate_bound(model, objective, test_data, config.batch_size, config.seed + 2, autocast))
            if coherence_data is not None and evaluate:
                row.update(evaluate_coherence(_unwrap(model), *coherence_data, config.seed + 3))
            history.append(row)
            _write_metrics(metrics_path, history)
            if stopped or finished or (epoch + 1) % config.checkpoint_every_epochs == 0:
                last_checkpoint = save_checkpoint(run_dir, model, optimizer, noise, dict(position),
                                                  config.keep_checkpoints)
            if show:
                epochs.set_postfix(loss=f"{row.get('train/loss', math.nan):.1f}",
                                   samples_s=f"{row['samples_per_s']:.0f}")
        if stopped:
            break
    if dist.enabled:
        import torch.distributed as tdist

        tdist.barrier()
    return TrainResult(_unwrap(model), config, run_dir, history, stopped)


#: Fields that may change between an interrupted run and its resumption.
_RESUMABLE = {"epochs", "max_steps", "time_limit_minutes", "device", "threads", "compile", "notes",
              "checkpoint_every_steps", "keep_checkpoints", "eval_coherence", "eval_every_epochs",
              "checkpoint_every_epochs", "cudnn_benchmark"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", nargs="?", help="a named experiment (see --list)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default runs/<experiment>)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    parser.add_argument("--list", action="store_true", help="list the named experiments")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.list or not args.experiment:
        for name, cfg in EXPERIMENTS.items():
            print(f"{name:28s} {cfg.architecture:8s} latent {cfg.latent_dim:4d}  {cfg.epochs:4d} epochs  "
                  f"data {cfg.data_variant}")
        return 0 if args.list else 2
    try:
        config = get_config(args.experiment, **parse_overrides(args.overrides))
        result = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileExistsError, NonFiniteLossError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        last = result.metrics[-1] if result.metrics else {}
        print(f"done: {result.run_dir} ({result.stopped_early or 'completed'}); last epoch: "
              + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
