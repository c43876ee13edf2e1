"""Process-wide settings: the data folder, the book's FAST/FULL mode, seeding and the CPU memory allocator.

Everything that depends on the machine or on the user's choice of mode is read here, once, so notebooks and
library code never hard-code paths like ``"../data"``.
"""

from __future__ import annotations

import ctypes
import os
import random
from pathlib import Path
from typing import Literal

import numpy as np
import torch

Mode = Literal["fast", "full"]
MODES: tuple[Mode, ...] = ("fast", "full")

#: Environment variable that selects the book's mode (``fast`` by default).
MODE_ENV = "MOPOE_MODE"
#: Environment variable that overrides the data folder.
DATA_ENV = "MOPOE_DATA_DIR"
#: Environment variable the book's build sets to ``1``: subset pickers then save every state for the HTML edition.
STATIC_ENV = "MOPOE_STATIC_WIDGETS"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path | None:
    """The project checkout this package was installed from (editable install), or ``None``."""
    return _REPO_ROOT if (_REPO_ROOT / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """The folder holding generated data and shipped artifacts.

    ``$MOPOE_DATA_DIR`` when set; else ``data/`` of the checkout (editable install); else
    ``~/.cache/mopoe_lib``. The folder is created when missing.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
    elif repo_root() is not None:
        path = _REPO_ROOT / "data"
    else:
        path = Path.home() / ".cache" / "mopoe_lib"
    path.mkdir(parents=True, exist_ok=True)
    return path


def artifacts_dir() -> Path:
    """Where shipped artifacts (classifiers, pretrained models) are written: the checkout's ``data/`` (they are
    committed there), or the data folder for an installed package."""
    root = repo_root()
    return root / "data" if root is not None else data_dir()


def run_mode(default: Mode = "fast") -> Mode:
    """The book's mode from ``$MOPOE_MODE`` (``fast`` or ``full``).

    Raises:
        ValueError: the variable holds anything else; the message lists the valid choices.
    """
    value = os.environ.get(MODE_ENV, default).strip().lower()
    if value not in MODES:
        raise ValueError(f"{MODE_ENV}={value!r} is not a valid mode; choose one of {', '.join(MODES)}")
    return value  # type: ignore[return-value]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a fresh ``torch.Generator`` seeded with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- seeds third-party code that uses the legacy global RNG
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def keep_freed_memory() -> bool:
    """Make glibc's allocator keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every allocation of 32 MiB or more with a fresh ``mmap`` and unmaps it on free, so
    the kernel zero-fills the pages again at every step. Training tensors cross that size: the MoPoE fusion over
    64 subsets at batch 256 and latent 512 (exactly 32 MiB per tensor), the first activations of the grouped
    PolyMNIST networks. Measured with ``benchmarks/fusion_scaling.py --case 7 sampled`` on a 2-core machine:
    565 ms per fusion step by default, 143 ms with this setting. The price: the process keeps its peak memory.

    Process-wide (``mallopt``: no ``mmap`` for allocations, no trimming of the heap). The trainer calls it when
    it trains on the CPU, the benchmarks at start. Returns ``False`` where the C library is not glibc (macOS,
    Windows, musl), where nothing changes.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
