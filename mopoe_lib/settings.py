"""Process-wide settings: the data folder, the book's FAST/FULL mode and seeding.

Everything that depends on the machine or on the user's choice of mode is read here, once, so notebooks and
library code never hard-code paths like ``"../data"``.
"""

from __future__ import annotations

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
