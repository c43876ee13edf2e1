"""PolyMNIST generation: determinism, structure, the rendering rule, and the on-disk cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_backgrounds, make_tiny_mnist
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.data import ChecksumError, MissingDataError, load_polymnist, prepare_polymnist
from mopoe_lib.data.polymnist import (
    BINARIZE_THRESHOLD,
    VARIANTS,
    assign_writers,
    dataset_dir,
    fresh_training_tuples,
    generate_polymnist,
    generate_split,
    render_modality,
)


def _generate(seed: int, num_train: int = 100, num_test: int = 40):
    return generate_polymnist(make_tiny_mnist(), num_train, num_test, seed, make_backgrounds())


def test_same_seed_gives_same_bytes():
    a, b = _generate(3), _generate(3)
    for split in ("train", "test"):
        for x, y in zip(a[split], b[split], strict=True):
            assert x.tobytes() == y.tobytes()


def test_different_seed_gives_different_data():
    a, b = _generate(3), _generate(4)
    assert a["train"][0].tobytes() != b["train"][0].tobytes()


def test_smaller_count_is_a_prefix_of_larger_count():
    small, large = _generate(5, 30, 10), _generate(5, 100, 40)
    for split in ("train", "test"):
        for x, y in zip(small[split], large[split], strict=True):
            np.testing.assert_array_equal(x, y[: x.shape[0]])


def test_shapes_dtypes_and_label_agreement(tiny_mnist):
    out = generate_polymnist(tiny_mnist, 120, 60, seed=0, backgrounds=make_backgrounds())
    for split, pool_labels in (("train", tiny_mnist.train_labels), ("test", tiny_mnist.test_labels)):
        images, labels, sources = out[split]
        n = labels.shape[0]
        assert images.shape == (n, 5, 3, 28, 28) and images.dtype == np.uint8
        assert sources.shape == (n, 5) and labels.dtype == np.int64
        # every modality of a tuple shows an MNIST image with the tuple's label ...
        np.testing.assert_array_equal(pool_labels[sources], np.repeat(labels[:, None], 5, axis=1))
        # ... and the five writers of a tuple are five different images
        assert all(len(set(row)) == 5 for row in sources.tolist())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), per_class=st.integers(5, 30), num_modalities=st.integers(2, 5))
def test_assign_writers_is_a_label_preserving_permutation_per_modality(seed, per_class, num_modalities):
    labels = np.repeat(np.arange(10), per_class)
    np.random.default_rng(seed).shuffle(labels)
    writers = assign_writers(labels, num_modalities, np.random.default_rng(seed))
    for m in range(num_modalities):
        assert sorted(writers[:, m].tolist()) == list(range(labels.size))  # each image once per modality
        np.testing.assert_array_equal(labels[writers[:, m]], labels)
    assert (np.sort(writers, axis=1)[:, 1:] != np.sort(writers, axis=1)[:, :-1]).all()


def test_render_matches_a_per_pixel_reference():
    rng = np.random.default_rng(1)
    digits = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    background = rng.integers(0, 256, (35, 41, 3), dtype=np.uint8)
    top, left = rng.integers(0, 8, 6), rng.integers(0, 14, 6)
    fast = render_modality(digits, background, top, left)
    for n in range(6):
        for i in range(28):
            for j in range(28):
                pixel = background[top[n] + i, left[n] + j]
                expected = 255 - pixel if digits[n, i, j] >= BINARIZE_THRESHOLD else pixel
                np.testing.assert_array_equal(fast[n, :, i, j], expected)


def test_a_background_of_exactly_28x28_admits_only_the_full_crop():
    # Corners are drawn in [0, H - 28]: with a 28x28 black background every crop is that background, so the
    # rendered image is exactly the binarized digit in white.
    mnist = make_tiny_mnist()
    bgs = make_backgrounds()
    bgs[0] = type(bgs[0])("black", "test", "black.png", np.zeros((28, 28, 3), np.uint8))
    images, _, sources = generate_split(mnist.train_images, mnist.train_labels, bgs, 50,
                                        np.random.default_rng(0))
    strokes = mnist.train_images[sources[:, 0]] >= BINARIZE_THRESHOLD
    expected = np.where(strokes, 255, 0).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(images[:, 0, channel], expected)


def test_too_many_tuples_is_an_error(tiny_mnist):
    with pytest.raises(ValueError, match="num_tuples"):
        generate_polymnist(tiny_mnist, 10_000, 10, backgrounds=make_backgrounds())


def test_unknown_variant_lists_the_choices():
    with pytest.raises(ValueError, match="fast, full"):
        prepare_polymnist("medium")


# ------------------------------------------------------------------------------------ the generated data


def test_fast_variant_on_disk_is_consistent():
    """The FAST variant `make test` generated: sizes, dtypes, manifest, label agreement."""
    train = load_polymnist("train", "fast")
    test = load_polymnist("test", "fast")
    assert len(train) == VARIANTS["fast"].num_train and len(test) == VARIANTS["fast"].num_test
    assert train.num_modalities == 5
    assert all(m.shape[1:] == (3, 28, 28) and m.dtype == torch.uint8 for m in train.modalities)
    folder = dataset_dir("fast")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["mnist"]["sha256"].startswith("f11bb9e4")
    assert len(manifest["backgrounds"]) == 5 and set(manifest["files"]) == {
        f"{s}_{a}.npy" for s in ("train", "test") for a in ("images", "labels", "sources")}
    from mopoe_lib.data import load_mnist

    mnist = load_mnist()
    sources = np.load(folder / "train_sources.npy")
    np.testing.assert_array_equal(mnist.train_labels[sources], np.repeat(train.labels.numpy()[:, None], 5, 1))
    # class balance mirrors MNIST: every digit present, none above 13%
    counts = np.bincount(train.labels.numpy(), minlength=10) / len(train)
    assert counts.min() > 0.07 and counts.max() < 0.13


@pytest.mark.slow
def test_regenerating_in_a_fresh_folder_gives_the_same_bytes(data_root):
    folder = prepare_polymnist("fast", progress=False)
    fresh = json.loads((folder / "manifest.json").read_text())["files"]
    shipped = json.loads((dataset_dir("fast", root=Path(__file__).parents[1] / "data") / "manifest.json")
                         .read_text())["files"]
    assert fresh == shipped


def test_missing_variant_names_the_command(data_root):
    with pytest.raises(MissingDataError) as info:
        load_polymnist("train", "full", seed=7)
    message = str(info.value)
    assert "full-seed7" in message and "python -m mopoe_lib.data polymnist --variant full --seed 7" in message


def _copy_fast_variant(root: Path) -> Path:
    source = dataset_dir("fast", root=Path(__file__).parents[1] / "data")
    target = dataset_dir("fast", root=root)
    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_file_is_detected_never_used_and_nothing_deleted(data_root, damage):
    folder = _copy_fast_variant(data_root)
    victim = folder / "test_images.npy"
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(ChecksumError) as info:
        load_polymnist("test", "fast")
    assert "test_images.npy" in str(info.value) and "--force" in str(info.value)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert victim.read_bytes() == bytes(data)  # left as found for the user to inspect
    # the other split is intact and still loads
    assert len(load_polymnist("train", "fast")) == VARIANTS["fast"].num_train


def test_cached_variant_is_not_regenerated(data_root):
    folder = _copy_fast_variant(data_root)
    stamp = (folder / "train_images.npy").stat().st_mtime_ns
    assert prepare_polymnist("fast", progress=False) == folder
    assert (folder / "train_images.npy").stat().st_mtime_ns == stamp


def test_fresh_training_tuples_are_new_draws_of_the_same_process(data_root):
    first = fresh_training_tuples(300, seed=0, draw=0, modalities=["motorcycle", "astronaut"])
    again = fresh_training_tuples(300, seed=0, draw=0, modalities=["motorcycle", "astronaut"])
    other = fresh_training_tuples(300, seed=0, draw=1, modalities=["motorcycle", "astronaut"])
    assert first.names == ("motorcycle", "astronaut") and first.modalities[0].shape == (300, 3, 28, 28)
    assert all(torch.equal(a, b) for a, b in zip(first.modalities, again.modalities, strict=True))
    assert not torch.equal(first.modalities[0], other.modalities[0])
    assert set(first.labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="choose from"):
        fresh_training_tuples(10, seed=0, draw=0, modalities=["moon"])
