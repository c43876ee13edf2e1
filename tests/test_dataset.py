"""The dataset type every module consumes: batching, availability masks, conversions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mopoe_lib.data import MultimodalDataset, random_availability


def _dataset(n: int = 23) -> MultimodalDataset:
    images = torch.arange(n * 2 * 3 * 4, dtype=torch.int64).reshape(n, 2, 3, 4).remainder(256).to(torch.uint8)
    features = torch.randn(n, 5)
    return MultimodalDataset([images[:, 0], images[:, 1], features], torch.arange(n) % 10, ["a", "b", "c"])


def test_batches_cover_each_sample_once_and_convert_uint8():
    ds = _dataset()
    seen = []
    for batch in ds.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert batch.x[0].dtype == torch.float32 and batch.x[0].max() <= 1.0
        assert batch.x[2].dtype == torch.float32  # float modalities are passed through unchanged
        seen.append(batch.label)
    assert sorted(torch.cat(seen).tolist()) == sorted(ds.labels.tolist())
    assert ds.num_batches(5) == 5 and ds.num_batches(5, drop_last=True) == 4
    assert sum(1 for _ in ds.batches(5, drop_last=True)) == 4


def test_same_generator_seed_gives_same_order():
    ds = _dataset()
    a = [b.label for b in ds.batches(4, True, torch.Generator().manual_seed(3))]
    b = [b.label for b in ds.batches(4, True, torch.Generator().manual_seed(3))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_availability_is_modality_first_in_batches():
    ds = _dataset(8)
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[2, 1] = False
    batch = ds.with_availability(mask).get_batch([1, 2])
    assert batch.available.shape == (3, 2) and not bool(batch.available[1, 1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="samples"):
        MultimodalDataset([torch.zeros(3, 2), torch.zeros(4, 2)], torch.zeros(3))
    with pytest.raises(ValueError, match="at least one available"):
        MultimodalDataset([torch.zeros(2, 2)], torch.zeros(2), available=torch.zeros(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch_size"):
        next(_dataset().batches(0))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 200), m=st.integers(1, 6), p=st.floats(0.0, 0.95), seed=st.integers(0, 1000))
def test_random_availability_keeps_one_modality_per_row(n, m, p, seed):
    mask = random_availability(n, m, p, torch.Generator().manual_seed(seed))
    assert mask.shape == (n, m) and bool(mask.any(dim=1).all())


def test_items_returns_each_stored_item_once_with_its_label():
    from mopoe_lib.data import MultimodalDataset

    stored = torch.arange(5).float().view(5, 1)
    data = MultimodalDataset([torch.zeros(6, 1), stored], torch.tensor([0, 1, 1, 2, 0, 1]),
                             index=[None, torch.tensor([0, 1, 1, 3, 0, 1])])  # item 2 and 4 unused
    items, labels = data.items(1)
    assert items.flatten().tolist() == [0.0, 1.0, 3.0] and labels.tolist() == [0, 1, 2]
    assert data.items(0)[0].shape[0] == 6
