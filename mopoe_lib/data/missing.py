"""Incomplete data: which modalities each tuple has, by a named and seeded missingness mechanism.

A mechanism is written as a short string (the config field ``missing``, e.g. ``--set missing=complete:0.5``):

=======================  ===========================================================================
mechanism                which modalities a tuple has
=======================  ===========================================================================
``none``                 all of them
``mcar:<rate>``          each modality is missing independently with probability ``rate``
``mcar:<r1>,<r2>,...``   the same with one rate per modality
``complete:<fraction>``  that fraction of the tuples is complete; every other tuple has a random
                         non-empty proper subset of the modalities (uniform over the 2^M - 2)
=======================  ===========================================================================

Both are *missing completely at random* (MCAR): whether a modality is observed does not depend on any value,
observed or not (Rubin 1976), so a model fitted to what is observed sees an unbiased picture of the data. An
``mcar`` tuple that would lose every modality is drawn again: the mechanism is MCAR conditioned on observing at
least one modality (a tuple with nothing observed carries no information and is refused by the objectives).

A mask is a function of the mechanism, the number of tuples and modalities, and a seed (:func:`availability`).
:func:`recorded_availability` keeps it in ``<data folder>/masks/`` with its sha256 in a manifest and verifies it
whenever it is read again, like every other data file.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..integrity import atomic_write_bytes, exclusive, read_json, sha256_file, verify_file, write_json
from ..settings import data_dir

MECHANISMS: tuple[str, ...] = ("none", "mcar:<rate>[,<rate>...]", "complete:<fraction>")


def parse_missing(spec: str, num_modalities: int | None = None) -> tuple[str, tuple[float, ...]]:
    """``(kind, parameters)`` of a mechanism string.

    Raises:
        ValueError: an unknown mechanism or a parameter out of range; the message lists the valid forms.
    """
    kind, _, raw = spec.strip().partition(":")
    valid = f"choose one of {', '.join(MECHANISMS)}"
    if kind == "none" and not raw:
        return "none", ()
    try:
        values = tuple(float(v) for v in raw.split(",")) if raw else ()
    except ValueError:
        raise ValueError(f"missing={spec!r}: parameters must be numbers; {valid}") from None
    if kind == "mcar" and values and all(math.isfinite(v) and 0.0 <= v < 1.0 for v in values):
        if num_modalities is not None and len(values) not in (1, num_modalities):
            raise ValueError(f"missing={spec!r}: give one rate, or one per modality ({num_modalities})")
        return kind, values
    if kind == "complete" and len(values) == 1 and 0.0 <= values[0] <= 1.0:
        return kind, values
    raise ValueError(f"missing={spec!r} is not a mechanism (rates in [0, 1), a fraction in [0, 1]); {valid}")


def availability(spec: str, num_tuples: int, num_modalities: int, seed: int = 0) -> Tensor:
    """The ``(N, M)`` bool mask of ``spec`` (see the module docstring); every row has a modality."""
    kind, values = parse_missing(spec, num_modalities)
    generator = torch.Generator().manual_seed(seed)
    if kind == "none":
        return torch.ones(num_tuples, num_modalities, dtype=torch.bool)
    if kind == "mcar":
        rates = torch.tensor(values if len(values) > 1 else values * num_modalities, dtype=torch.float64)
        mask = torch.rand(num_tuples, num_modalities, generator=generator, dtype=torch.float64) >= rates
        while not bool(mask.any(dim=1).all()):  # redraw the tuples that lost everything
            empty = ~mask.any(dim=1)
            draw = torch.rand(int(empty.sum()), num_modalities, generator=generator, dtype=torch.float64) >= rates
            mask[empty] = draw
        return mask
    complete = torch.rand(num_tuples, generator=generator) < values[0]
    if num_modalities == 1:
        return torch.ones(num_tuples, 1, dtype=torch.bool)
    # a random proper, non-empty subset: a uniform code in 1 .. 2^M - 2, as bits
    codes = torch.randint(1, 2**num_modalities - 1, (num_tuples,), generator=generator)
    bits = ((codes[:, None] >> torch.arange(num_modalities)) & 1).bool()
    return torch.where(complete[:, None], torch.ones_like(bits), bits)


def _file_name(spec: str, seed: int) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", spec.strip()) + f"-seed{seed}.npy"


def recorded_availability(spec: str, num_tuples: int, num_modalities: int, seed: int, data_name: str,
                          root: Path | None = None) -> Tensor:
    """:func:`availability`, kept in ``<data folder>/masks/<data_name>/`` with its sha256 (``manifest.json``)
    and verified against it when it is read again.

    Raises:
        ChecksumError: the stored mask was changed or damaged (it is not used).
    """
    folder = (root or data_dir()) / "masks" / data_name
    path = folder / _file_name(spec, seed)
    with exclusive(folder.parent / ".masks.lock", f"another process is writing masks in {folder.parent}"):
        manifest = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
        entry = manifest.get(path.name)
        if entry is not None and entry["shape"] == [num_tuples, num_modalities]:
            verify_file(path, entry["sha256"], f"delete {path} to draw it again")
            return torch.from_numpy(np.load(path))
        mask = availability(spec, num_tuples, num_modalities, seed)
        buffer = io.BytesIO()
        np.save(buffer, mask.numpy())
        atomic_write_bytes(path, buffer.getvalue())
        manifest[path.name] = {"mechanism": spec, "seed": seed, "shape": [num_tuples, num_modalities],
                               "observed_fraction": round(float(mask.float().mean()), 6),
                               "complete_fraction": round(float(mask.all(dim=1).float().mean()), 6),
                               "sha256": sha256_file(path)}
        write_json(folder / "manifest.json", manifest)
        return mask
