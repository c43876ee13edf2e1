"""The MNIST-SVHN-Text networks of the authors' experiments (Sutter et al. 2021), latent 20 by default.

- MNIST: an MLP 784 -> 400 -> (mean, log-variance); decoder 20 -> 400 -> 784 with a sigmoid (the Laplace
  location lies in [0, 1], as in the authors' code).
- SVHN-like 3x32x32 (the real SVHN or the offline street digits): four 4x4 convolutions (32, 64, 64, 128
  channels; 32 -> 16 -> 8 -> 4 -> 1 pixels) and linear heads; the decoder mirrors it with transposed
  convolutions and outputs the Laplace location without a squashing non-linearity.
- Text (8 characters over 71 symbols): 1-D convolutions over the one-hot string (kernel 1, then two 4-wide
  stride-2 convolutions: 8 -> 4 -> 1 positions, 128 channels); the decoder mirrors them and returns logits
  ``(B, 8, 71)`` for :class:`~mopoe_lib.likelihoods.Categorical` (the authors' code returned log-softmax
  values and passed them to a distribution as probabilities: defect 3 of the README's list). The encoder accepts
  character indices ``(B, 8)`` or one-hot/probability vectors ``(B, 8, 71)``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..data.text import ALPHABET, SEQUENCE_LENGTH


class MNISTEncoder(nn.Module):
    def __init__(self, latent_dim: int = 20, hidden_dim: int = 400) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden_dim), nn.ReLU())
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class MNISTDecoder(nn.Module):
    def __init__(self, latent_dim: int = 20, hidden_dim: int = 400) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 784),
                                 nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class SVHNEncoder(nn.Module):
    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 4
            nn.Conv2d(64, 128, 4, stride=2, padding=0), nn.ReLU(),  # 1
            nn.Flatten(),
        )
        self.mu = nn.Linear(128, latent_dim)
        self.logvar = nn.Linear(128, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class SVHNDecoder(nn.Module):
    def __init__(self, latent_dim: int = 20) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 128), nn.ReLU(), nn.Unflatten(1, (128, 1, 1)),
            nn.ConvTranspose2d(128, 64, 4, stride=1, padding=0), nn.ReLU(),  # 4
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1), nn.ReLU(),  # 8
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),  # 16
            nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1),  # 32
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class TextEncoder(nn.Module):
    def __init__(self, latent_dim: int = 20, channels: int = 128, num_symbols: int = len(ALPHABET)) -> None:
        super().__init__()
        self.num_symbols = num_symbols
        self.features = nn.Sequential(
            nn.Conv1d(num_symbols, channels, 1), nn.ReLU(),
            nn.Conv1d(channels, channels, 4, stride=2, padding=1), nn.ReLU(),  # 8 -> 4
            nn.Conv1d(channels, channels, 4, stride=2, padding=0), nn.ReLU(),  # 4 -> 1
            nn.Flatten(),
        )
        self.mu = nn.Linear(channels, latent_dim)
        self.logvar = nn.Linear(channels, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim == 2:  # character indices
            x = F.one_hot(x.long(), self.num_symbols).to(self.mu.weight.dtype)
        h = self.features(x.transpose(1, 2))  # (B, symbols, length)
        return self.mu(h), self.logvar(h)


class TextDecoder(nn.Module):
    def __init__(self, latent_dim: int = 20, channels: int = 128, num_symbols: int = len(ALPHABET)) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, channels), nn.Unflatten(1, (channels, 1)),
            nn.ConvTranspose1d(channels, channels, 4, stride=1, padding=0), nn.ReLU(),  # 1 -> 4
            nn.ConvTranspose1d(channels, channels, 4, stride=2, padding=1), nn.ReLU(),  # 4 -> 8
            nn.Conv1d(channels, num_symbols, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        logits = self.net(z).transpose(1, 2)  # (B, length, symbols)
        assert logits.shape[1] == SEQUENCE_LENGTH
        return logits
