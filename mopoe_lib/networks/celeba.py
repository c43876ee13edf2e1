"""CelebA networks: a DCGAN-style convolutional pair for 64x64 faces and 1-D convolutions for the attribute text.

Both encoders output ``latent_dim + style_dim`` values (shared first, then the modality-specific "style" part,
see :class:`~mopoe_lib.model.MultimodalVAE`) and both decoders read that many. The authors use residual
networks here; these plain convolutional ones have the same input/output contract and are much cheaper.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.text import ALPHABET


def _halvings(length: int, floor: int) -> int:
    count = 0
    while length > floor:
        if length % 2:
            raise ValueError(f"length must be {floor} times a power of two")
        length //= 2
        count += 1
    if length != floor:
        raise ValueError(f"length must be {floor} times a power of two")
    return count


class FaceEncoder(nn.Module):
    """``(B, 3, 64, 64)`` -> ``(mu, logvar)`` of size ``out_dim`` (channels doubling from ``width``)."""

    def __init__(self, out_dim: int, width: int = 32, size: int = 64) -> None:
        super().__init__()
        layers, channels = [], 3
        for k in range(_halvings(size, 4)):
            layers += [nn.Conv2d(channels, width * 2**k, 4, stride=2, padding=1), nn.ReLU()]
            channels = width * 2**k
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.mu = nn.Linear(channels * 16, out_dim)
        self.logvar = nn.Linear(channels * 16, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class FaceDecoder(nn.Module):
    """``(N, in_dim)`` -> image parameters ``(N, 3, 64, 64)``; mirrors :class:`FaceEncoder`."""

    def __init__(self, in_dim: int, width: int = 32, size: int = 64) -> None:
        super().__init__()
        steps = _halvings(size, 4)
        top = width * 2 ** (steps - 1)
        layers: list[nn.Module] = [nn.Linear(in_dim, top * 16), nn.ReLU(), nn.Unflatten(1, (top, 4, 4))]
        channels = top
        for k in reversed(range(steps - 1)):
            layers += [nn.ConvTranspose2d(channels, width * 2**k, 4, stride=2, padding=1), nn.ReLU()]
            channels = width * 2**k
        layers.append(nn.ConvTranspose2d(channels, 3, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class AttributeTextEncoder(nn.Module):
    """Character indices ``(B, length)`` (or one-hot ``(B, length, 71)``) -> ``(mu, logvar)``."""

    def __init__(self, out_dim: int, length: int = 256, channels: int = 128,
                 num_symbols: int = len(ALPHABET)) -> None:
        super().__init__()
        self.num_symbols = num_symbols
        layers: list[nn.Module] = [nn.Conv1d(num_symbols, channels, 1), nn.ReLU()]
        for _ in range(_halvings(length, 4)):
            layers += [nn.Conv1d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.mu = nn.Linear(channels * 4, out_dim)
        self.logvar = nn.Linear(channels * 4, out_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim == 2:
            x = F.one_hot(x.long(), self.num_symbols).to(self.mu.weight.dtype)
        h = self.features(x.transpose(1, 2))
        return self.mu(h), self.logvar(h)


class AttributeTextDecoder(nn.Module):
    """``(N, in_dim)`` -> logits ``(N, length, 71)``."""

    def __init__(self, in_dim: int, length: int = 256, channels: int = 128,
                 num_symbols: int = len(ALPHABET)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, channels * 4), nn.ReLU(), nn.Unflatten(1, (channels, 4))]
        for _ in range(_halvings(length, 4)):
            layers += [nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv1d(channels, num_symbols, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).transpose(1, 2)
