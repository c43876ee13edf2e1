"""MNIST-SVHN-Text: triples (MNIST digit, a colour street-number digit, the digit's word) sharing the label.

Built as in the paper (Sutter et al. 2021): MNIST and SVHN-style images are paired by label with
:func:`~.svhn.pair_by_label` (each item of the smaller side in ``multiplicity`` pairs; 20 in the paper, about
1.12M training triples with the real SVHN), and each triple gets the digit's word at a random offset
(:mod:`.text`). Images are stored once and gathered per batch through index maps, so the 1.12M triples cost the
memory of the 60k + 73k images.

The colour modality comes from one of two sources:

- ``"street"`` (default, offline): the synthetic street digits of :mod:`.street_digits`, generated in memory
  from the seed (sized like SVHN in FULL: 73,257 train / 26,032 test). They are not SVHN.
- ``"svhn"``: the real SVHN ``.mat`` files, which you download yourself (:func:`~.svhn.load_svhn` says where).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .dataset import MultimodalDataset
from .mnist import load_mnist
from .street_digits import generate_street_digits
from .svhn import load_svhn, pair_by_label
from .text import digit_text_indices

MODALITIES = ("mnist", "svhn", "text")
SOURCES = ("street", "svhn")


@dataclass(frozen=True)
class Variant:
    mnist: dict[str, int | None]  # images per split (None: all)
    street: dict[str, int]  # street digits generated per split
    multiplicity: int


VARIANTS = {
    "fast": Variant({"train": 6000, "test": 1000}, {"train": 6000, "test": 2000}, multiplicity=2),
    "full": Variant({"train": None, "test": None}, {"train": 73_257, "test": 26_032}, multiplicity=20),
    # all of MNIST and SVHN-sized colour sets, but each image in 2 pairs: the compact CPU-trained models
    "compact": Variant({"train": None, "test": None}, {"train": 73_257, "test": 26_032}, multiplicity=2),
}


def load_mnist_svhn_text(split: str, variant: str = "fast", source: str = "street", seed: int = 0,
                         svhn_root: Path | None = None) -> MultimodalDataset:
    """The triples of ``split`` (``"train"``/``"test"``) as a :class:`MultimodalDataset` named
    ``("mnist", "svhn", "text")``: MNIST ``(1, 28, 28)`` uint8, colour digits ``(3, 32, 32)`` uint8, text as
    character indices ``(8,)`` int64. Deterministic given ``seed`` (street digits, pairing and text offsets)."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose one of train, test")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    spec = VARIANTS[variant]
    mnist = load_mnist()
    images = mnist.train_images if split == "train" else mnist.test_images
    labels = mnist.train_labels if split == "train" else mnist.test_labels
    limit = spec.mnist[split]
    mnist_x = torch.from_numpy(images[:limit]).unsqueeze(1)
    mnist_y = torch.from_numpy(labels[:limit])
    split_seed = seed * 2 + (split == "test")
    if source == "street":
        svhn_x, svhn_y = generate_street_digits(spec.street[split], seed=10_000 + split_seed)
    else:
        svhn_x, svhn_y = load_svhn(split, svhn_root)
        if variant != "full":
            svhn_x, svhn_y = svhn_x[:spec.street[split]], svhn_y[:spec.street[split]]
    index_mnist, index_svhn = pair_by_label(mnist_y, svhn_y, spec.multiplicity, seed=split_seed)
    # pairs come grouped by digit; shuffle them (seeded) so that any prefix, e.g. the first 1000 test triples
    # an evaluation takes, is a fair sample of all digits
    order = torch.randperm(index_mnist.shape[0], generator=torch.Generator().manual_seed(30_000 + split_seed))
    index_mnist, index_svhn = index_mnist[order], index_svhn[order]
    pair_labels = mnist_y[index_mnist]
    text = digit_text_indices(pair_labels, torch.Generator().manual_seed(20_000 + split_seed))
    return MultimodalDataset([mnist_x, svhn_x, text], pair_labels, MODALITIES, index=[index_mnist, index_svhn, None])
