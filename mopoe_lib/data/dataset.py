"""The one dataset type of the library: M modalities as in-memory tensors, plus labels and availability.

Conventions used by every module that consumes a :class:`Batch`:

- everything is **modality first**: ``batch.x`` is a tuple of M tensors ``(B, *shape_m)`` and
  ``batch.available`` is a bool tensor ``(M, B)``;
- images are stored as uint8 (compact, exact) and converted to float32 in ``[0, 1]`` per batch, so a whole
  data set can live on a GPU and only the current batch is ever materialised in float.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """A mini-batch: ``x`` (M tensors of shape ``(B, *shape_m)``), ``label`` ``(B,)``, ``available`` ``(M, B)``."""

    x: tuple[Tensor, ...]
    label: Tensor
    available: Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """Move every tensor to ``device``."""
        return Batch(
            tuple(x.to(device, non_blocking=non_blocking) for x in self.x),
            self.label.to(device, non_blocking=non_blocking),
            None if self.available is None else self.available.to(device, non_blocking=non_blocking),
        )


def to_float(x: Tensor) -> Tensor:
    """uint8 images to float32 in [0, 1]; float tensors are returned unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class MultimodalDataset:
    """M aligned modalities held as tensors, with one label per sample and an optional availability mask.

    Args:
        modalities: M tensors with the same first dimension N (uint8 images or float features).
        labels: ``(N,)`` integer labels shared by all modalities.
        names: one name per modality (default ``m0, m1, ...``).
        available: optional ``(N, M)`` bool mask; ``False`` marks a modality missing for that sample.
        index: optional, one ``(N,)`` int64 tensor (or ``None``) per modality: sample i uses row
            ``index[m][i]`` of modality m's storage. Pairings that reuse items (MNIST-SVHN: each image in about
            20 pairs) are then stored once; batches gather the rows.
    """

    def __init__(
        self,
        modalities: Sequence[Tensor],
        labels: Tensor,
        names: Sequence[str] | None = None,
        available: Tensor | None = None,
        index: Sequence[Tensor | None] | None = None,
    ) -> None:
        if len(modalities) == 0:
            raise ValueError("a MultimodalDataset needs at least one modality")
        n = int(labels.shape[0])
        index = tuple(index) if index is not None else (None,) * len(modalities)
        if len(index) != len(modalities):
            raise ValueError(f"{len(index)} index tensors for {len(modalities)} modalities")
        for m, (x, rows) in enumerate(zip(modalities, index, strict=True)):
            if rows is None and x.shape[0] != n:
                raise ValueError(f"modality {m} has {x.shape[0]} samples but there are {n} labels")
            out_of_range = rows is not None and n > 0 and (int(rows.min()) < 0 or int(rows.max()) >= x.shape[0])
            if rows is not None and (rows.shape != (n,) or out_of_range):
                raise ValueError(f"index of modality {m} must have shape ({n},) with rows in [0, {x.shape[0]})")
        names = tuple(names) if names is not None else tuple(f"m{m}" for m in range(len(modalities)))
        if len(names) != len(modalities):
            raise ValueError(f"{len(names)} names for {len(modalities)} modalities")
        if available is not None:
            if available.shape != (n, len(modalities)) or available.dtype != torch.bool:
                raise ValueError(f"available must be a bool tensor of shape ({n}, {len(modalities)}), "
                                 f"got {tuple(available.shape)} {available.dtype}")
            if not bool(available.any(dim=1).all()):
                raise ValueError("every sample needs at least one available modality")
        self.modalities = tuple(modalities)
        self.index = index
        self.labels = labels.long()
        self.names = names
        self.available = available

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(x.shape[1:])} {str(x.dtype).removeprefix('torch.')}"
                           for n, x in zip(self.names, self.modalities, strict=True))
        return f"MultimodalDataset(n={len(self)}, {shapes})"

    def get_batch(self, index: Tensor | slice | Sequence[int]) -> Batch:
        """Gather the samples at ``index`` as a float :class:`Batch` (works with a DataLoader too)."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        x = tuple(to_float(m[index] if rows is None else m[rows[index]])
                  for m, rows in zip(self.modalities, self.index, strict=True))
        available = None if self.available is None else self.available[index].T.contiguous()
        return Batch(x, self.labels[index], available)

    __getitem__ = get_batch

    def subset(self, index: Tensor | Sequence[int]) -> MultimodalDataset:
        """A new dataset holding only the samples at ``index`` (copies the selected rows, or the index maps)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return MultimodalDataset(
            [m[index] if rows is None else m for m, rows in zip(self.modalities, self.index, strict=True)],
            self.labels[index], self.names, None if self.available is None else self.available[index],
            [None if rows is None else rows[index] for rows in self.index],
        )

    def items(self, modality: int) -> tuple[Tensor, Tensor]:
        """Modality ``modality``'s stored items and their labels, each item once (a pairing that reuses items,
        as MNIST-SVHN-Text does, stores them once; paired items share the label)."""
        rows = self.index[modality]
        if rows is None:
            return self.modalities[modality], self.labels
        labels = torch.full((self.modalities[modality].shape[0],), -1, dtype=torch.long, device=self.labels.device)
        labels[rows] = self.labels
        used = labels >= 0
        return self.modalities[modality][used], labels[used]

    def with_availability(self, available: Tensor | None) -> MultimodalDataset:
        """The same data with another availability mask (``None`` for all present)."""
        return MultimodalDataset(self.modalities, self.labels, self.names, available, self.index)

    def to(self, device: torch.device | str) -> MultimodalDataset:
        """Move the stored (uint8) tensors to ``device``; batches are then produced there."""
        return MultimodalDataset(
            [m.to(device) for m in self.modalities], self.labels.to(device), self.names,
            None if self.available is None else self.available.to(device),
            [None if rows is None else rows.to(device) for rows in self.index],
        )

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        shard: tuple[int, int] | None = None,
        start: int = 0,
    ) -> Iterator[Batch]:
        """Iterate over mini-batches without a DataLoader (no worker processes, no per-sample Python).

        ``generator`` fixes the shuffling order; pass the same seeded generator for the same order.
        ``start`` skips that many batches of the order (a resumed epoch continues where it stopped).
        ``shard = (rank, world_size)`` yields only this process's equal slice of every (global) batch, for
        data-parallel training; ``batch_size`` must then be divisible by ``world_size``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        rank, world = shard or (0, 1)
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} is not divisible by world size {world}")
        local = batch_size // world
        n = len(self)
        device = self.labels.device
        order = torch.randperm(n, generator=generator).to(device) if shuffle else torch.arange(n, device=device)
        stop = n - n % batch_size if drop_last else n
        for first in range(start * batch_size, stop, batch_size):
            chunk = order[first:first + batch_size]
            yield self.get_batch(chunk[rank * local:(rank + 1) * local] if shard else chunk)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self)
        return n // batch_size if drop_last else -(-n // batch_size)


def random_availability(
    num_samples: int, num_modalities: int, p_missing: float, generator: torch.Generator | None = None
) -> Tensor:
    """An ``(N, M)`` availability mask with each modality missing with probability ``p_missing``.

    Rows that would lose every modality keep one, chosen uniformly at random, so each sample stays usable.
    """
    if not 0.0 <= p_missing < 1.0:
        raise ValueError(f"p_missing must be in [0, 1), got {p_missing}")
    available = torch.rand(num_samples, num_modalities, generator=generator) >= p_missing
    empty = ~available.any(dim=1)
    keep = torch.randint(num_modalities, (num_samples,), generator=generator)
    available[empty, keep[empty]] = True
    return available
