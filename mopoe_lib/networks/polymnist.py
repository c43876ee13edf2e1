"""The PolyMNIST networks of the authors' experiments (Sutter et al. 2021, and their code).

Encoder: three stride-2 3x3 convolutions (3 -> 32 -> 64 -> 128 channels, 28 -> 14 -> 7 -> 4 pixels), a
2048 -> hidden linear layer and two linear heads for the mean and the log-variance. The decoder mirrors it
with transposed convolutions. As in the authors' code the decoder's output is the Laplace location itself,
without a squashing non-linearity; clamp to [0, 1] only for display.
"""

from __future__ import annotations

from torch import Tensor, nn


class PolyMNISTEncoder(nn.Module):
    def __init__(self, latent_dim: int = 512, hidden_dim: int = 512, channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 32 x 14 x 14
            nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 64 x 7 x 7
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 128 x 4 x 4
            nn.Flatten(),
            nn.Linear(2048, hidden_dim), nn.ReLU(),
        )
        self.mu = nn.Linear(hidden_dim, latent_dim)
        self.logvar = nn.Linear(hidden_dim, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class PolyMNISTDecoder(nn.Module):
    def __init__(self, latent_dim: int = 512, channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2048), nn.ReLU(),
            nn.Unflatten(1, (128, 4, 4)),
            nn.ConvTranspose2d(128, 64, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 64 x 7 x 7
            nn.ConvTranspose2d(64, 32, kernel_size=3, stride=2, padding=1, output_padding=1), nn.ReLU(),  # 14
            nn.ConvTranspose2d(32, channels, kernel_size=3, stride=2, padding=1, output_padding=1),  # 28 x 28
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
