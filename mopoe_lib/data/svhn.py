"""The real SVHN digits (``train_32x32.mat`` / ``test_32x32.mat``) and the MNIST-SVHN pairing of the paper.

SVHN cannot be downloaded by the book (no internet at run time). Get the two files from
http://ufldl.stanford.edu/housenumbers/ and put them in ``<data folder>/raw/svhn/`` (by default
``data/raw/svhn/`` in the checkout). Their MD5 sums are checked before use (the values torchvision publishes);
pass ``md5=None`` to read another ``.mat`` file with the same layout.

In the ``.mat`` files, ``X`` is ``(32, 32, 3, N)`` uint8 and ``y`` is ``(N, 1)`` with label 10 meaning digit 0.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..integrity import ChecksumError, MissingDataError
from ..settings import data_dir

#: MD5 of the official files, as published by torchvision's SVHN dataset.
SVHN_MD5 = {"train": "e26dedcc434d2e4c54c9b2d4a06d8373", "test": "eb5a983be6a315427106f1b164d9cef3"}
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"


def svhn_path(split: str, root: Path | None = None) -> Path:
    if split not in SVHN_MD5:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SVHN_MD5)}")
    return (root or data_dir() / "raw" / "svhn") / f"{split}_32x32.mat"


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 -- matching the published checksum, not security
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_svhn(split: str, root: Path | None = None, md5: str | None | bool = True) -> tuple[Tensor, Tensor]:
    """SVHN images ``(N, 3, 32, 32)`` uint8 and digit labels ``(N,)`` int64 (label 10 mapped to 0).

    Args:
        root: the folder holding ``<split>_32x32.mat`` (default ``<data folder>/raw/svhn``).
        md5: ``True`` checks the official checksum, a string checks that one, ``None``/``False`` skips the check.

    Raises:
        MissingDataError: the file is absent; the message says where to get it and where to put it.
        ChecksumError: the file's MD5 differs.
    """
    from scipy.io import loadmat

    path = svhn_path(split, root)
    if not path.is_file():
        raise MissingDataError(path, f"download {path.name} from {SVHN_URL} and save it as {path}",
                               what="the real SVHN is not downloaded by the book")
    expected = SVHN_MD5[split] if md5 is True else (md5 or None)
    if expected:
        actual = _md5(path)
        if actual != expected:
            raise ChecksumError(path, expected, actual, f"download {path.name} again from {SVHN_URL}")
    mat = loadmat(str(path))
    images = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)))  # (N, 3, 32, 32)
    labels = mat["y"].astype(np.int64).reshape(-1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (3, 32, 32):
        raise ValueError(f"{path}: unexpected shapes X {mat['X'].shape}, y {mat['y'].shape}")
    labels[labels == 10] = 0
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels outside 1..10")
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels)


def pair_by_label(labels_a: Tensor, labels_b: Tensor, multiplicity: int = 20, max_per_digit: int = 10_000,
                  seed: int = 0) -> tuple[Tensor, Tensor]:
    """Pair items of two labelled sets with the same label, as in the paper's MNIST-SVHN data.

    For each digit d, take the first ``n_d = min(#a_d, #b_d, max_per_digit)`` items of each set with label d (in
    index order) and append ``multiplicity`` random matchings between them (independent permutations of both
    lists). Each item of the smaller side is thus paired ``multiplicity`` times with random partners (the
    authors' MNIST-SVHN training set: 20 x about 56k = 1.12M pairs). Deterministic given ``seed``.

    Returns:
        ``(index_a, index_b)``, equal-length int64 tensors with ``labels_a[index_a] == labels_b[index_b]``.
    """
    if multiplicity < 1 or max_per_digit < 1:
        raise ValueError("multiplicity and max_per_digit must be positive")
    generator = torch.Generator().manual_seed(seed)
    out_a, out_b = [], []
    for digit in torch.unique(labels_a).tolist():
        items_a = torch.nonzero(labels_a == digit).flatten()
        items_b = torch.nonzero(labels_b == digit).flatten()
        n = min(len(items_a), len(items_b), max_per_digit)
        if n == 0:
            continue
        items_a, items_b = items_a[:n], items_b[:n]
        for _ in range(multiplicity):
            out_a.append(items_a[torch.randperm(n, generator=generator)])
            out_b.append(items_b[torch.randperm(n, generator=generator)])
    if not out_a:
        raise ValueError("the two sets share no label")
    return torch.cat(out_a), torch.cat(out_b)
