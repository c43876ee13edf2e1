"""Per-data-set encoders and decoders. Encoders map ``x (B, *shape)`` to ``(mu, logvar)``, each ``(B, D)``;
decoders map ``z (N, D)`` to the likelihood's parameters ``(N, *shape)``."""

from .grouped import GroupedConvDecoder, GroupedConvEncoder, GroupedLinear
from .linear import LinearDecoder, LinearEncoder
from .polymnist import PolyMNISTDecoder, PolyMNISTEncoder

__all__ = [
    "GroupedConvDecoder",
    "GroupedConvEncoder",
    "GroupedLinear",
   "LinearDecoder", "LinearEncoder", "PolyMNISTDecoder", "PolyMNISTEncoder"]
