"""Synthetic street-number digits: an offline stand-in for SVHN (it is *not* SVHN).

Colour 3x32x32 crops centred on one digit, in the spirit of SVHN's cropped-digit format, rendered from the
TrueType fonts that ship with matplotlib (DejaVu Sans/Serif/Mono in several weights and slants, STIX, Computer
Modern). Per image, from a seeded generator: a font, the centre digit and two neighbours of the same font
(partly cut off by the crop, as house numbers are), scale, rotation, shear and offset, foreground and
background colours with a minimum luminance contrast, a background gradient with low-frequency texture, blur
and pixel noise. Everything is vectorised over a batch (glyphs are rendered once into an atlas, then warped
with ``grid_sample``): 60,000 images take about a minute on one CPU core.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf",
)
ATLAS_SIZE = 64  # each glyph is rendered into a 64x64 mask, centred, about 48 pixels tall


@cache
def glyph_atlas() -> Tensor:
    """Masks ``(F, 10, 64, 64)`` in [0, 1]: every digit in every font, centred by its ink's bounding box."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    masks = np.zeros((len(FONT_FILES), 10, ATLAS_SIZE, ATLAS_SIZE), dtype=np.float32)
    for f, name in enumerate(FONT_FILES):
        font = ImageFont.truetype(str(folder / name), size=52)
        for digit in range(10):
            canvas = Image.new("L", (96, 96), 0)
            ImageDraw.Draw(canvas).text((20, 10), str(digit), fill=255, font=font)
            ink = np.asarray(canvas, dtype=np.float32) / 255.0
            rows, cols = np.nonzero(ink > 0.05)
            glyph = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            h, w = glyph.shape
            scale = 48.0 / h  # same height for every font
            resized = np.asarray(Image.fromarray((glyph * 255).astype(np.uint8)).resize(
                (max(1, round(w * scale)), 48), Image.BILINEAR), dtype=np.float32) / 255.0
            h2, w2 = resized.shape
            w2 = min(w2, ATLAS_SIZE)
            top, left = (ATLAS_SIZE - h2) // 2, (ATLAS_SIZE - w2) // 2
            masks[f, digit, top:top + h2, left:left + w2] = resized[:, :w2]
    return torch.from_numpy(masks)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=g)


def _luminance(rgb: Tensor) -> Tensor:
    return rgb @ torch.tensor([0.299, 0.587, 0.114])


def _glyph_mask(labels: Tensor, g: torch.Generator, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Where the ink is: the digit with a neighbour on each side, in a random font, scale, rotation, shear
    and shift; ``(N, 1, size, size)`` in [0, 1], and the output grid's coordinates ``xs, ys``."""
    n = labels.shape[0]
    atlas = glyph_atlas()
    num_fonts = atlas.shape[0]
    font = torch.randint(0, num_fonts, (n,), generator=g)
    neighbours = torch.randint(0, 10, (n, 2), generator=g)
    # geometry: output coords in [-1, 1] -> glyph coords; digit height is `scale` of the crop height
    scale = _uniform(n, 0.7, 1.0, g)
    angle = _uniform(n, -0.25, 0.25, g)  # radians, about +-14 degrees
    shear = _uniform(n, -0.25, 0.25, g)
    shift = torch.stack([_uniform(n, -0.12, 0.12, g), _uniform(n, -0.1, 0.1, g)], dim=1)
    spacing = _uniform(n, 0.95, 1.3, g)  # centre distance to a neighbour (atlas units; a glyph is ~0.9 wide)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    grid = torch.stack([xs, ys], dim=-1).reshape(1, -1, 2) - shift[:, None, :]  # (N, P, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # inverse rotation
    sh = torch.zeros(n, 2, 2)
    sh[:, 0, 0] = sh[:, 1, 1] = 1.0
    sh[:, 0, 1] = shear
    coords = grid @ (rot @ sh).transpose(1, 2) / (scale[:, None, None] * 48 / ATLAS_SIZE)  # (N, P, 2)
    mask = torch.zeros(n, 1, size * size)
    for which, dx in ((labels, 0.0), (neighbours[:, 0], -1.0), (neighbours[:, 1], 1.0)):
        glyphs = atlas[font, which][:, None]  # (N, 1, 64, 64)
        offset = torch.stack([dx * spacing, torch.zeros(n)], dim=1)[:, None, :]
        sampled = F.grid_sample(glyphs, (coords - offset)[:, :, None, :], align_corners=False,
                                padding_mode="zeros").reshape(n, 1, -1)
        mask = torch.maximum(mask, sampled)
    return mask.reshape(n, 1, size, size), xs, ys


def _colours(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Background and ink colours ``(N, 3)`` with a minimum luminance contrast."""
    background = torch.rand(n, 3, generator=g)
    foreground = torch.rand(n, 3, generator=g)
    for _ in range(8):
        weak = (_luminance(foreground) - _luminance(background)).abs() < 0.3
        foreground = torch.where(weak[:, None], torch.rand(n, 3, generator=g), foreground)
    flip = (_luminance(foreground) - _luminance(background)).abs() < 0.3  # rare leftovers: black or white ink
    foreground = torch.where(flip[:, None], (_luminance(background) < 0.5).float()[:, None].expand(-1, 3), foreground)
    return background, foreground


def _blur_and_noise(image: Tensor, g: torch.Generator) -> Tensor:
    """Gaussian blur of one of three strengths per image (none, 0.7, 1.2 pixels), then pixel noise."""
    n, size = image.shape[0], image.shape[-1]
    blur = torch.randint(0, 3, (n,), generator=g)
    for level, sigma in ((1, 0.7), (2, 1.2)):
        chosen = blur == level
        if chosen.any():
            radius = 3
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            kernel = torch.exp(-t**2 / (2 * sigma**2))
            kernel = kernel / kernel.sum()
            x = image[chosen].reshape(-1, 1, size, size)
            x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
            x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
            image[chosen] = x.reshape(-1, 3, size, size)
    return image + _uniform(n, 0.0, 0.06, g)[:, None, None, None] * torch.randn(image.shape, generator=g)


def render_street_digits(labels: Tensor, generator: torch.Generator, size: int = 32) -> Tensor:
    """Render one image per label: float ``(N, 3, size, size)`` in [0, 1]."""
    g, n = generator, labels.shape[0]
    mask, xs, ys = _glyph_mask(labels, g, size)
    background, foreground = _colours(n, g)
    # background: colour + linear gradient + low-frequency texture
    direction = _uniform(n, 0, 2 * math.pi, g)
    ramp = (torch.cos(direction)[:, None, None] * xs + torch.sin(direction)[:, None, None] * ys)[:, None]
    texture = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=(size, size), mode="bicubic",
                            align_corners=False)
    bg = background[:, :, None, None] + _uniform(n, 0, 0.25, g)[:, None, None, None] * ramp \
        + _uniform(n, 0, 0.12, g)[:, None, None, None] * texture
    image = bg * (1 - mask) + foreground[:, :, None, None] * mask
    return _blur_and_noise(image, g).clamp(0, 1)


def generate_street_digits(num: int, seed: int = 0, batch: int = 8192) -> tuple[Tensor, Tensor]:
    """``num`` images ``(num, 3, 32, 32)`` uint8 with balanced-at-random labels ``(num,)``; fixed by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (num,), generator=g)
    images = torch.empty(num, 3, 32, 32, dtype=torch.uint8)
    for start in range(0, num, batch):
        chunk = render_street_digits(labels[start:start + batch], g)
        images[start:start + batch] = (chunk * 255).round().to(torch.uint8)
    return images, labels
