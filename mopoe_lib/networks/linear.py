"""Affine encoders and decoders: the linear-Gaussian toy model, and tiny models in tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearEncoder(nn.Module):
    """``mu = A x + c`` and a ``logvar`` that is affine in x too (constant when ``input_dependent_var`` is off)."""

    def __init__(self, in_dim: int, latent_dim: int, input_dependent_var: bool = False) -> None:
        super().__init__()
        self.mu = nn.Linear(in_dim, latent_dim)
        self.input_dependent_var = input_dependent_var
        if input_dependent_var:
            self.logvar = nn.Linear(in_dim, latent_dim)
        else:
            self.logvar_bias = nn.Parameter(torch.zeros(latent_dim))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(start_dim=1)
        mu = self.mu(x)
        logvar = self.logvar(x) if self.input_dependent_var else self.logvar_bias.expand_as(mu)
        return mu, logvar


class LinearDecoder(nn.Module):
    """``params = W z + b``, reshaped to ``out_shape``."""

    def __init__(self, latent_dim: int, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.linear = nn.Linear(latent_dim, int(torch.tensor(out_shape).prod()))

    def forward(self, z: Tensor) -> Tensor:
        return self.linear(z).view(z.shape[0], *self.out_shape)
