"""Run folders and shipped-model folders: one format, written and read only here.

Training writes run folders, evaluation and the book read them; neither needs to know the layout.

**A run folder** (``runs/<experiment>`` by default)::

    config.json        {"config", "objective" (resolved), "modalities", "environment", "device", "precision", ...}
    metrics.jsonl      one JSON line per epoch (and one for a stop within an epoch)
    checkpoints/
        step-00001170/   model.safetensors, optimizer.safetensors, state.json
        latest.json      {"checkpoint": "step-00001170", "progress": {...}}
    .lock              held (flock) by the process that trains into the folder

``state.json`` holds the position in training, the optimizer's non-tensor state and the sha256 of the two
weight files *and of config.json*: a checkpoint is loaded only if all three match, so a flipped bit, a truncated
file or an edited config (say, another objective) is refused instead of silently giving another model. Weights
are also refused when they are not finite.

**The checkpoint protocol** (power-loss safe; :func:`save_checkpoint`):

1. the three files are written into a temporary folder ``.step-N.tmp-*``, flushed to disk (fsync), the folder
   flushed;
2. the folder is renamed to ``step-N`` (a name never used before in this run: a second checkpoint at the same
   step gets ``step-N.1``) and the ``checkpoints/`` folder is flushed;
3. only then ``latest.json`` is replaced atomically (temporary file, fsync, rename, fsync of the folder);
4. older checkpoints beyond ``keep`` are deleted, never the one just written.

A crash at any point leaves ``latest.json`` naming a complete checkpoint. If ``latest.json`` is lost or names a
folder that is gone, :func:`latest_checkpoint` falls back to the newest complete checkpoint by its recorded step
(not by folder name). Temporary folders left by a kill are removed when training next opens the folder.

**A shipped model** (``data/pretrained/<name>``): ``config.json`` (as above, plus the command that trained it
and a note), ``metrics.jsonl``, ``model.safetensors``, ``MANIFEST.json`` (sha256 of the weights and of
``config.json``) and ``learning_curves.png``. :func:`rebuild_model` loads either kind of folder.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import ExperimentConfig, build_model
from .integrity import (
    ChecksumError,
    DataError,
    UserError,
    atomic_dir,
    atomic_write_bytes,
    exclusive,
    read_json,
    remove_temporaries,
    sha256_file,
    verify_file,
    write_json,
)
from .model import MultimodalVAE
from .settings import artifacts_dir, data_dir, repo_root

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
MANIFEST = "MANIFEST.json"
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.safetensors"
STATE = "state.json"
PRETRAINED = "pretrained"
#: version of the checkpoint format written here (1: no checksums; still read)
FORMAT = 2
_CHECKPOINT_NAME = re.compile(r"^step-(\d{8})(?:\.(\d+))?$")


class CheckpointError(UserError):
    """A run folder has no usable checkpoint, or a model folder is incomplete or damaged (the message says which
    file and what to do)."""


class NonFiniteError(UserError):
    """The loss or the parameters became NaN or infinite; the run stopped and the last good checkpoint was kept."""


# --------------------------------------------------------------------------------------------- config files


def environment() -> dict[str, Any]:
    """Versions and hardware, recorded with every run."""
    return {"mopoe_lib": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment name>`` in the checkout (or the working directory)."""
    return (repo_root() or Path.cwd()) / "runs" / config.name


def write_run_config(run_dir: Path, config: ExperimentConfig, modalities: tuple[str, ...], **extra: Any) -> None:
    """Write a run's ``config.json``: the config, the resolved objective, the modality names and the environment."""
    write_json(run_dir / CONFIG, {"config": config.to_dict(), "objective": config.objective_config.to_dict(),
                                  "modalities": list(modalities), "environment": environment(), **extra})


def read_run_config(folder: Path | str) -> tuple[ExperimentConfig, dict[str, Any]]:
    """``(config, the whole config.json)`` of a run or shipped-model folder.

    Raises:
        CheckpointError: no ``config.json``, or one that is not a valid config (the message says why).
    """
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {folder} is not a training run or a shipped model. Train one "
                              f"with\n    python -m mopoe_lib.train <experiment> --out {folder}")
    try:
        blob = read_json(path)
        return ExperimentConfig.from_dict(blob["config"]), blob
    except (DataError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a valid run config ({exc}); it was edited or damaged") from exc


# -------------------------------------------------------------------------------------------------- metrics


def read_metrics(folder: Path | str, upto_epoch: float | None = None) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` (none if it is missing), only those up to ``upto_epoch`` when given."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{path}, line {number}, is not JSON ({exc})") from exc
    return rows if upto_epoch is None else [r for r in rows if r.get("epoch", 0) <= upto_epoch]


def write_metrics(folder: Path | str, rows: list[dict[str, Any]]) -> None:
    """Replace ``metrics.jsonl`` atomically with ``rows``."""
    atomic_write_bytes(Path(folder) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


# ----------------------------------------------------------------------------------------------- checkpoints


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as safetensors-ready tensors and JSON-ready metadata."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                         device: torch.device) -> None:
    """The inverse of :func:`optimizer_tensors` (tensors other than Adam's step counter go to ``device``)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _order(folder: Path) -> tuple[int, int]:
    match = _CHECKPOINT_NAME.match(folder.name)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (-1, -1)


def checkpoint_folders(run_dir: Path | str) -> list[Path]:
    """The run's complete checkpoint folders (renamed into place, with weights), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name) and (p / STATE).is_file()]
    return sorted(found, key=_order)


def _fresh_name(run_dir: Path, step: int) -> str:
    """``step-N``, or ``step-N.k`` when a checkpoint of step N already exists (a name is never reused)."""
    taken = {p.name for p in (run_dir / CHECKPOINTS).glob(f"step-{step:08d}*")}
    name, k = f"step-{step:08d}", 0
    while name in taken:
        k += 1
        name = f"step-{step:08d}.{k}"
    return name


def save_checkpoint(run_dir: Path, weights: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, progress: dict[str, Any], keep: int = 2) -> Path:
    """Write a checkpoint with the protocol of the module docstring; returns its folder.

    ``progress`` holds the position (epoch, step in epoch, global step) and the running sums of the current
    epoch's metrics, so a resumed epoch reports the same averages as an uninterrupted one.

    Raises:
        NonFiniteError: a weight is NaN or infinite (nothing is written).
    """
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise NonFiniteError(f"parameters {bad[:3]}{' ...' if len(bad) > 3 else ''} are not finite at step "
                             f"{progress['global_step']}; no checkpoint was written")
    run_dir = Path(run_dir)
    name = _fresh_name(run_dir, progress["global_step"])
    tensors, meta = optimizer_tensors(optimizer)
    tensors["rng.noise"] = generator.get_state()
    with atomic_dir(run_dir / CHECKPOINTS / name) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
        save_file(tensors, str(tmp / OPTIMIZER))
        sums = {f: sha256_file(tmp / f) for f in (WEIGHTS, OPTIMIZER)}
        if (run_dir / CONFIG).is_file():
            sums[CONFIG] = sha256_file(run_dir / CONFIG)
        write_json(tmp / STATE, {"progress": progress, "optimizer": meta, "format": FORMAT, "sha256": sums})
    write_json(run_dir / CHECKPOINTS / LATEST, {"checkpoint": name, "progress": progress})
    for old in checkpoint_folders(run_dir)[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return run_dir / CHECKPOINTS / name


def latest_checkpoint(run_dir: Path | str) -> Path | None:
    """The checkpoint ``latest.json`` names; if the pointer is missing, damaged or names a folder that is gone,
    the newest complete checkpoint by step; ``None`` if the run has none.

    Raises:
        CheckpointError: ``latest.json`` points outside the run's ``checkpoints/`` folder.
    """
    folder = Path(run_dir) / CHECKPOINTS
    pointer = folder / LATEST
    try:
        name = read_json(pointer)["checkpoint"] if pointer.is_file() else None
    except (DataError, KeyError, TypeError):
        name = None
    if name is not None:
        if not isinstance(name, str) or not _CHECKPOINT_NAME.match(name):
            raise CheckpointError(f"{pointer} names {name!r}, which is not a checkpoint of this run "
                                  f"(expected step-NNNNNNNN); delete {pointer} to use the newest checkpoint")
        if (folder / name / STATE).is_file():
            return folder / name
    found = checkpoint_folders(run_dir)
    return found[-1] if found else None


def read_checkpoint(checkpoint: Path, run_dir: Path | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(weights, state)`` of a checkpoint folder, after checking every checksum ``state.json`` records (the
    run's ``config.json`` included) and that the weights are finite. The optimizer's tensors are read with
    :func:`read_optimizer`."""
    try:
        state = read_json(checkpoint / STATE)
        state["progress"]["global_step"], state["optimizer"]["param_groups"]  # noqa: B018 -- must be present
    except (DataError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint / STATE} is damaged or incomplete ({exc!r}); it was not used") from exc
    for name, expected in state.get("sha256", {}).items():
        path = (run_dir or checkpoint.parent.parent) / CONFIG if name == CONFIG else checkpoint / name
        _verify(path, expected, f"the checkpoint {checkpoint}" if name != CONFIG else f"the run {path.parent}")
    return _finite_weights(checkpoint / WEIGHTS, map_location), state


def read_optimizer(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The optimizer tensors (and the noise generator's state, ``rng.noise``) of a verified checkpoint."""
    try:
        return load_file(str(checkpoint / OPTIMIZER))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{checkpoint / OPTIMIZER} cannot be read ({exc})") from exc


def _verify(path: Path, expected: str, owner: str) -> None:
    try:
        verify_file(path, expected)
    except ChecksumError as exc:
        what = "was edited after training" if path.name == CONFIG else "is damaged"
        raise CheckpointError(f"{path} {what}: its sha256 differs from the one recorded by {owner}. "
                              f"It was not used.") from exc
    except DataError as exc:
        raise CheckpointError(f"{path} is missing: {owner} is incomplete") from exc


def _finite_weights(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    try:
        weights = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc})") from exc
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({', '.join(bad[:3])}); it was not used")
    return weights


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder (``.lock``) while training into it; a second trainer fails at once.
    What a killed process left behind (temporary checkpoint folders and files) is removed once the lock is held,
    and the folder must be writable."""
    run_dir.mkdir(parents=True, exist_ok=True)
    busy = f"another process is training into {run_dir}; wait for it to finish, or train into another folder (--out)"
    with exclusive(run_dir / ".lock", busy):
        remove_temporaries(run_dir)
        remove_temporaries(run_dir / CHECKPOINTS)
        check_writable(run_dir)
        yield


def check_writable(folder: Path) -> None:
    """Raise ``PermissionError`` (or the ``OSError`` of a full disk) now rather than after an epoch of work."""
    probe = folder / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
    finally:
        probe.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------- loading models


def rebuild_model(folder: Path | str, map_location: str | torch.device = "cpu",
                  checkpoint: Path | None = None) -> tuple[MultimodalVAE, ExperimentConfig]:
    """The model of a run folder (its newest checkpoint, or ``checkpoint``) or of a shipped-model folder, in eval
    mode, after every checksum the folder records has been verified.

    Raises:
        CheckpointError: no config, no checkpoint yet, or a damaged or edited file (the message says which).
    """
    folder = Path(folder)
    config, blob = read_run_config(folder)
    if (folder / MANIFEST).is_file():
        manifest = read_json(folder / MANIFEST)
        for name, expected in manifest["sha256"].items():
            _verify(folder / name, expected, f"{folder / MANIFEST}")
        weights = _finite_weights(folder / WEIGHTS, map_location)
    else:
        checkpoint = checkpoint or latest_checkpoint(folder)
        if checkpoint is None:
            raise CheckpointError(f"{folder} has no checkpoint yet; resume it with\n"
                                  f"    python -m mopoe_lib.train {config.name} --out {folder} --resume")
        weights, _ = read_checkpoint(checkpoint, folder, map_location)
    names = blob.get("modalities")
    model = build_model(config, tuple(names) if names else None)
    model.load_state_dict(weights)
    return model.to(map_location).eval(), config


def run_progress(folder: Path | str) -> dict[str, Any] | None:
    """Where training stood when the folder's model was saved (epoch, steps), or ``None`` if not recorded."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return read_run_config(folder)[1].get("progress")
    checkpoint = latest_checkpoint(folder)
    return None if checkpoint is None else read_json(checkpoint / STATE)["progress"]


# ------------------------------------------------------------------------------------------- shipped models


def pretrained_dirs() -> list[Path]:
    """Where shipped models are looked up: the data folder, then the checkout's ``data/``."""
    dirs = [data_dir() / PRETRAINED]
    if artifacts_dir() / PRETRAINED not in dirs:
        dirs.append(artifacts_dir() / PRETRAINED)
    return dirs


def find_pretrained(name: str) -> Path | None:
    """The folder of a shipped model, or ``None``."""
    for base in pretrained_dirs():
        if (base / name / MANIFEST).is_file():
            return base / name
    return None


def shipped_models() -> list[str]:
    """Names of the shipped models."""
    return sorted({p.parent.name for base in pretrained_dirs() if base.is_dir() for p in base.glob(f"*/{MANIFEST}")})


@dataclass
class Shipped:
    """A loaded shipped model with its config, learning curves and folder."""

    model: MultimodalVAE
    config: ExperimentConfig
    metrics: list[dict[str, Any]]
    folder: Path


def load_pretrained(name: str, map_location: str = "cpu") -> Shipped:
    """Load a shipped model after verifying its checksums.

    Raises:
        FileNotFoundError: not shipped (the message lists what is).
        CheckpointError: a file is corrupt, or ``config.json`` was edited.
    """
    folder = find_pretrained(name)
    if folder is None:
        raise FileNotFoundError(f"no shipped model {name!r}; shipped: {', '.join(shipped_models()) or 'none'}. "
                                f"Train it with\n    python -m mopoe_lib.train {name}")
    model, config = rebuild_model(folder, map_location)
    return Shipped(model, config, read_metrics(folder), folder)


def export_run(run_dir: Path | str, name: str | None = None, command: str = "", note: str = "",
               target: Path | None = None) -> Path:
    """Copy a run's newest verified weights, config and metrics into ``<target or data/pretrained>/<name>`` with
    a manifest binding the weights and the config; ``note`` (kept in config.json) tells readers what they
    should know about the run. Returns the folder (the learning-curve picture is drawn by the CLI)."""
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"{run_dir} has no checkpoint to export")
    _, state = read_checkpoint(checkpoint, run_dir)
    _, blob = read_run_config(run_dir)
    name = name or blob["config"]["name"]
    base = (target or artifacts_dir() / PRETRAINED) / name
    with atomic_dir(base) as tmp:
        shutil.copyfile(checkpoint / WEIGHTS, tmp / WEIGHTS)
        shutil.copyfile(run_dir / METRICS, tmp / METRICS)
        write_json(tmp / CONFIG, {**blob, "command": command, "progress": state["progress"],
                                  **({"note": note} if note else {})})
        write_json(tmp / MANIFEST, {"sha256": {f: sha256_file(tmp / f) for f in (WEIGHTS, CONFIG)},
                                    "source_run": str(run_dir), "checkpoint": checkpoint.name})
    return base

