"""All M modality networks evaluated as one: grouped convolutions and batched linear layers.

M separate convolutional encoders applied to M inputs are *mathematically identical* to one convolution with
``groups=M`` applied to the inputs stacked along channels: group m sees only modality m's channels and has its
own weights. Likewise M linear layers on M inputs are one batched matrix product. Evaluating the five PolyMNIST
networks this way replaces five small kernel launches per layer by one larger one, which is what makes the
library fast on CPUs and GPUs alike (see ``benchmarks/``).

:class:`GroupedConvEncoder` returns ``(mu, logvar)`` stacked modality first ``(M, B, D)``, and
:class:`GroupedConvDecoder` returns a list of M outputs; both plug into :class:`~mopoe_lib.model.MultimodalVAE`
in place of a list of per-modality networks. With ``channels=(32, 64, 128)`` and ``hidden_dim=512`` they are
the paper's PolyMNIST networks (``PolyMNISTEncoder``/``PolyMNISTDecoder``) for every modality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupedLinear(nn.Module):
    """M independent linear layers: ``x (M, B, in) -> (M, B, out)``, initialised like ``nn.Linear``."""

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class GroupedConvEncoder(nn.Module):
    """M PolyMNIST-style encoders as one grouped network (stride-2 3x3 convolutions, then linear layers)."""

    stacked = True  # returns (M, B, D) directly

    def __init__(self, num_modalities: int, latent_dim: int, channels: Sequence[int] = (32, 64, 128),
                 hidden_dim: int = 512, in_channels: int = 3, image_size: int = 28) -> None:
        super().__init__()
        m = num_modalities
        layers: list[nn.Module] = []
        previous, size = in_channels, image_size
        for c in channels:
            layers += [nn.Conv2d(previous * m, c * m, kernel_size=3, stride=2, padding=1, groups=m), nn.ReLU()]
            previous, size = c, (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.num_modalities = m
        self.input_shape = (in_channels, image_size, image_size)
        self.flat_dim = previous * size * size
        self.hidden = GroupedLinear(m, self.flat_dim, hidden_dim)
        self.mu = GroupedLinear(m, hidden_dim, latent_dim)
        self.logvar = GroupedLinear(m, hidden_dim, latent_dim)

    def forward(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        for m, x_m in enumerate(xs):
            if tuple(x_m.shape[1:]) != self.input_shape:
                raise ValueError(f"modality {m} has images of shape {tuple(x_m.shape[1:])}; these networks take "
                                 f"{self.input_shape} (a 32x32 image would pass the convolutions unnoticed)")
            if x_m.device.type == "cpu" and x_m.numel() and float(x_m.detach().amax()) > 1.0 + 1e-6:
                raise ValueError(f"modality {m} has values up to {float(x_m.amax()):.4g}: images must lie in [0, 1] "
                                 "(divide 0..255 images by 255, or use mopoe_lib.data.to_float)")
        x = torch.cat(list(xs), dim=1)  # (B, M*C, H, W)
        h = self.conv(x)
        h = h.reshape(h.shape[0], self.num_modalities, self.flat_dim).transpose(0, 1)  # (M, B, flat)
        h = F.relu(self.hidden(h))
        return self.mu(h), self.logvar(h)


class GroupedConvDecoder(nn.Module):
    """M PolyMNIST-style decoders as one grouped network; can decode any subset of the modalities."""

    stacked = True  # takes z and a list of modalities, returns a list of M outputs

    def __init__(self, num_modalities: int, latent_dim: int, channels: Sequence[int] = (128, 64, 32),
                 out_channels: int = 3, start_size: int = 4) -> None:
        super().__init__()
        m = num_modalities
        self.num_modalities, self.channels, self.start_size = m, tuple(channels), start_size
        # the M first layers share their input z, so they are one Linear with M * features outputs
        self.fc = nn.Linear(latent_dim, m * channels[0] * start_size * start_size)
        outs = (*channels[1:], out_channels)
        # the first transposed convolution maps 4 -> 7 pixels, the others double the size (28 in the end)
        self.deconvs = nn.ModuleList(
            nn.ConvTranspose2d(c_in * m, c_out * m, kernel_size=3, stride=2, padding=1,
                               output_padding=0 if i == 0 else 1, groups=m)
            for i, (c_in, c_out) in enumerate(zip(channels, outs, strict=True))
        )
        self.out_channels = out_channels

    def forward(self, z: Tensor, modalities: Sequence[int] | None = None) -> list[Tensor | None]:
        m, c0, s = self.num_modalities, self.channels[0], self.start_size
        chosen = list(range(m)) if modalities is None else sorted(set(modalities))
        k = len(chosen)
        if k == m:
            h = F.relu(self.fc(z))
            weights = [(d.weight, d.bias) for d in self.deconvs]
        else:  # slice the chosen groups out of every layer
            rows = torch.tensor(chosen, device=z.device)
            fc_w = self.fc.weight.view(m, -1, z.shape[-1])[rows].reshape(-1, z.shape[-1])
            fc_b = self.fc.bias.view(m, -1)[rows].reshape(-1)
            h = F.relu(F.linear(z, fc_w, fc_b))
            weights = []
            for d in self.deconvs:
                w = d.weight.view(m, -1, *d.weight.shape[1:])[rows].reshape(-1, *d.weight.shape[1:])
                b = d.bias.view(m, -1)[rows].reshape(-1)
                weights.append((w, b))
        return self._deconvolve(h.view(z.shape[0], k * c0, s, s), weights, chosen)

    def forward_each(self, z: Tensor) -> list[Tensor]:
        """Decoder m applied to its own latent ``z[m]``: ``z (M, N, D)`` -> M outputs ``(N, C, H, W)``.

        One grouped pass (the first layer as a batched matrix product), the cost of decoding one z: MVAE's M
        unimodal terms need this instead of M single-modality passes.
        """
        m, c0, s = self.num_modalities, self.channels[0], self.start_size
        if z.ndim != 3 or z.shape[0] != m:
            raise ValueError(f"z must have shape (M, N, D) with M = {m}; got {tuple(z.shape)}")
        fc_w = self.fc.weight.view(m, -1, z.shape[-1])  # (M, F, D)
        h = F.relu(torch.baddbmm(self.fc.bias.view(m, 1, -1), z, fc_w.transpose(1, 2)))  # (M, N, F)
        h = h.transpose(0, 1).reshape(z.shape[1], m * c0, s, s)
        return self._deconvolve(h, [(d.weight, d.bias) for d in self.deconvs], list(range(m)))  # type: ignore

    def _deconvolve(self, h: Tensor, weights: list[tuple[Tensor, Tensor]], chosen: list[int]) -> list[Tensor | None]:
        k = len(chosen)
        for i, ((w, b), deconv) in enumerate(zip(weights, self.deconvs, strict=True)):
            h = F.conv_transpose2d(h, w, b, stride=2, padding=1, output_padding=deconv.output_padding, groups=k)
            if i < len(self.deconvs) - 1:
                h = F.relu(h)
        h = h.view(h.shape[0], k, self.out_channels, *h.shape[-2:])
        out: list[Tensor | None] = [None] * self.num_modalities
        for j, modality in enumerate(chosen):
            out[modality] = h[:, j]
        return out
