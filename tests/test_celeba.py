"""CelebA loader and the style-latent CelebA model, on a tiny fixture in the real file layout."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mopoe_lib.config import build_model, get_config
from mopoe_lib.data import ChecksumError, DataError, MissingDataError
from mopoe_lib.data.celeba import (
    CELEBA_URL,
    NUM_ATTRIBUTES,
    attribute_text,
    load_celeba,
    unpack_attributes,
)
from mopoe_lib.data.text import decode
from mopoe_lib.train import train

NAMES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald"] + [
    f"Attribute_{k}" for k in range(5, NUM_ATTRIBUTES)]
PARTITION = [0, 0, 0, 0, 1, 2, 2]  # 4 train, 1 valid, 2 test


def _write_fixture(root: Path) -> np.ndarray:
    """Seven 178x218 JPEGs (blue, with a red 148x148 centre whose shade encodes the index) and annotations."""
    rng = np.random.default_rng(0)
    values = rng.random((len(PARTITION), NUM_ATTRIBUTES)) < 0.3
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = [str(len(PARTITION)), " ".join(NAMES)]
    partition = []
    for i, split in enumerate(PARTITION):
        name = f"{i + 1:06d}.jpg"
        image = np.zeros((218, 178, 3), dtype=np.uint8)
        image[..., 2] = 255
        top, left = (218 - 148) // 2, (178 - 148) // 2
        image[top:top + 148, left:left + 148] = (100 + 20 * i, 0, 0)
        Image.fromarray(image).save(folder / name, quality=95)
        lines.append(name + "  " + " ".join("1" if v else "-1" for v in values[i]))
        partition.append(f"{name} {split}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return values


@pytest.fixture()
def celeba(tmp_path):
    root = tmp_path / "celeba"
    return root, _write_fixture(root)


def test_loader_crops_splits_and_builds_the_attribute_text(celeba):
    root, values = celeba
    train_set = load_celeba("train", root, progress=False)
    test_set = load_celeba("test", root, progress=False)
    assert len(train_set) == 4 and len(test_set) == 2 and len(load_celeba("valid", root, progress=False)) == 1
    images, text = train_set.modalities
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.uint8
    assert text.shape == (4, 256) and text.dtype == torch.int32
    # the centre crop keeps only the red square: no blue survives, and the shade identifies the image
    assert int(images[:, 2, 1:-1, 1:-1].max()) < 20  # (the outermost pixels blend in JPEG colour bleed)
    torch.testing.assert_close(images[:, 0].float().mean((1, 2)), torch.tensor([100.0, 120, 140, 160]), atol=4, rtol=0)
    torch.testing.assert_close(unpack_attributes(train_set.labels), torch.from_numpy(values[:4]))
    torch.testing.assert_close(unpack_attributes(test_set.labels), torch.from_numpy(values[5:]))
    strings = decode(text)
    for row, string in zip(values[:4], strings, strict=True):
        expected = ", ".join(n.lower().replace("_", " ") for n, v in zip(NAMES, row, strict=True) if v)
        assert string.rstrip() == expected
    batch = train_set.get_batch([0, 1])
    assert batch.x[0].dtype == torch.float32 and float(batch.x[0].max()) <= 1.0
    assert batch.x[1].dtype == torch.int32  # indices stay indices


def test_text_drops_whole_attributes_when_too_long():
    names = [f"attr_{k:02d}" for k in range(40)]
    text = attribute_text(names, [True] * 40, length=50)
    assert len(text) <= 50 and text.startswith("attr 00, attr 01") and not text.endswith(",")
    assert text.split(", ")[-1] == "attr 04"


def test_cache_is_reused_and_a_corrupt_cache_is_refused(celeba):
    root, _ = celeba
    first = load_celeba("train", root, progress=False)
    (root / "img_align_celeba" / "000001.jpg").unlink()  # the cache no longer needs the images
    again = load_celeba("train", root, progress=False)
    torch.testing.assert_close(first.modalities[0], again.modalities[0])
    cache = root / "processed-64" / "train.npz"
    data = bytearray(cache.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cache.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="load_celeba"):
        load_celeba("train", root, progress=False)


def test_missing_and_malformed_files_are_named(celeba, tmp_path):
    root, _ = celeba
    with pytest.raises(MissingDataError) as error:
        load_celeba("train", tmp_path / "nowhere", progress=False)
    assert "list_attr_celeba.txt" in str(error.value) and CELEBA_URL in str(error.value)
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    (root / "list_attr_celeba.txt").write_text("\n".join(lines[:-1]) + "\n")  # truncated
    with pytest.raises(DataError, match="announces 7 images but 6 rows"):
        load_celeba("train", root, progress=False)
    lines[3] = lines[3].replace("-1", "0", 1)
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="row 4"):
        load_celeba("train", root, progress=False)
    with pytest.raises(ValueError, match="train, valid, test"):
        load_celeba("validation", root)


@pytest.mark.parametrize("objective", ["mopoe", "mvae", "mmvae"])
def test_celeba_model_has_style_latents_and_every_objective_runs(celeba, objective):
    root, _ = celeba
    config = get_config(f"celeba-full-{objective}", data_root=str(root))
    assert (config.latent_dim, config.style_dim, config.lr) == (20, 32, 5e-4)
    torch.manual_seed(0)
    model = build_model(config)
    assert model.style_dims == (32, 32) and model.names == ("image", "text")
    batch = load_celeba("train", root, progress=False).get_batch([0, 1, 2])
    out = config.make_objective()(model, batch, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    generated = model.generate(batch.x, ["text"], generator=torch.Generator().manual_seed(1))
    assert generated[0].shape == (3, 3, 64, 64) and generated[1].shape == (3, 256, 71)


def test_training_on_the_fixture_runs_end_to_end(celeba, tmp_path):
    root, _ = celeba
    config = get_config("celeba-full-mopoe", data_root=str(root), epochs=2, batch_size=2, eval_samples=2)
    result = train(config, tmp_path / "run", progress=False)
    assert len(result.metrics) == 2 and all(math.isfinite(m["test/elbo"]) for m in result.metrics)
