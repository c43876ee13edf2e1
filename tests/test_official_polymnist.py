"""The loader for the official PolyMNIST release layout, on a fixture written by the test."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopoe_lib.data import DataError, MissingDataError, load_official_polymnist


def _write_release(root: Path, labels: dict[int, int], num_modalities: int = 5) -> dict[tuple[int, int], np.ndarray]:
    """Write ``train/m{k}/{index}.{label}.png``; files are created in a scrambled order per modality."""
    rng = np.random.default_rng(0)
    pixels = {}
    for k in range(num_modalities):
        folder = root / "train" / f"m{k}"
        folder.mkdir(parents=True)
        order = list(labels)
        rng.shuffle(order)  # creation order differs per folder, so directory order is useless for pairing
        for index in order:
            image = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
            image[0, 0] = (index, k, labels[index])  # a fingerprint of (index, modality, label)
            Image.fromarray(image).save(folder / f"{index}.{labels[index]}.png")
            pixels[(index, k)] = image
    return pixels


def test_pairs_by_index_not_by_directory_order(tmp_path):
    labels = {0: 3, 1: 7, 2: 3, 5: 0, 10: 9, 11: 1}
    pixels = _write_release(tmp_path, labels)
    ds = load_official_polymnist(tmp_path, "train", progress=False)
    assert len(ds) == 6 and ds.num_modalities == 5
    for row, index in enumerate(sorted(labels)):
        assert int(ds.labels[row]) == labels[index]
        for k in range(5):
            np.testing.assert_array_equal(ds.modalities[k][row].numpy().transpose(1, 2, 0), pixels[(index, k)])


def test_missing_file_is_named(tmp_path):
    _write_release(tmp_path, {0: 1, 1: 2, 2: 3})
    os.remove(tmp_path / "train" / "m3" / "1.2.png")
    with pytest.raises(DataError) as info:
        load_official_polymnist(tmp_path, "train", progress=False)
    assert "m3" in str(info.value) and "1.*.png" in str(info.value)


def test_label_disagreement_is_named(tmp_path):
    _write_release(tmp_path, {0: 1, 1: 2})
    folder = tmp_path / "train" / "m2"
    (folder / "1.2.png").rename(folder / "1.5.png")
    with pytest.raises(DataError, match="labels disagree") as info:
        load_official_polymnist(tmp_path, "train", progress=False)
    assert "1.5.png" in str(info.value)


def test_malformed_name_is_rejected(tmp_path):
    _write_release(tmp_path, {0: 1})
    (tmp_path / "train" / "m0" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt"):
        load_official_polymnist(tmp_path, "train", progress=False)


def test_missing_split_says_where_to_put_the_data(tmp_path):
    with pytest.raises(MissingDataError, match="Zenodo record 4899160"):
        load_official_polymnist(tmp_path, "test", progress=False)
