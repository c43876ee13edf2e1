"""The text modality of MNIST-SVHN-Text: a digit's English word in an 8-character string, one-hot encoded.

As in the paper (Sutter et al. 2021): the word (``"zero"`` ... ``"nine"``) is placed at a random offset in a string of
8 spaces and every character is one-hot encoded over a 71-position alphabet (the character-CNN alphabet of
Zhang et al. 2015 followed by space and newline; ``-`` occurs twice in it, and encoding always uses its first
position, so one position stays unused, which keeps the paper's 8 x 71 shape). Unlike the authors' code, the
offsets come from a seeded generator, so a data set is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{}" + " \n"
SEQUENCE_LENGTH = 8
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_INDEX = {c: ALPHABET.index(c) for c in ALPHABET}  # first position for the duplicated "-"

assert len(ALPHABET) == 71


def encode_indices(texts: Sequence[str], length: int = SEQUENCE_LENGTH) -> Tensor:
    """Character indices ``(N, length)`` (int64); raises on characters outside the alphabet or long strings."""
    out = torch.full((len(texts), length), _INDEX[" "], dtype=torch.long)
    for i, text in enumerate(texts):
        if len(text) > length:
            raise ValueError(f"text {text!r} is longer than {length} characters")
        unknown = sorted(set(text) - set(_INDEX))
        if unknown:
            raise ValueError(f"characters {unknown} of {text!r} are not in the alphabet")
        out[i, :len(text)] = torch.tensor([_INDEX[c] for c in text], dtype=torch.long)
    return out


def one_hot(indices: Tensor) -> Tensor:
    """One-hot ``(N, length, 71)`` float32 from indices ``(N, length)``."""
    return torch.nn.functional.one_hot(indices, len(ALPHABET)).float()


def encode(texts: Sequence[str], length: int = SEQUENCE_LENGTH) -> Tensor:
    """Strings -> one-hot ``(N, length, 71)``; shorter strings are padded with spaces on the right."""
    return one_hot(encode_indices(texts, length))


def decode(values: Tensor) -> list[str]:
    """Indices ``(N, L)``, or one-hot / logits / probabilities ``(N, L, 71)`` (argmax), -> strings."""
    indices = values.argmax(dim=-1) if values.ndim == 3 else values
    return ["".join(ALPHABET[int(i)] for i in row) for row in indices]


def digit_texts(labels: Tensor, generator: torch.Generator | None = None,
                length: int = SEQUENCE_LENGTH) -> list[str]:
    """For each digit label, its English word at a random offset in ``length`` spaces.

    Offsets are uniform on ``0 .. length - 1 - len(word)`` as in the authors' code, so the last character is
    always a space.
    """
    words = [DIGIT_WORDS[int(y)] for y in labels]
    room = torch.tensor([length - 1 - len(w) for w in words], dtype=torch.float64)
    offsets = (torch.rand(len(words), generator=generator, dtype=torch.float64) * (room + 1)).floor().long()
    return [" " * int(o) + w + " " * (length - int(o) - len(w)) for w, o in zip(words, offsets, strict=True)]


def digit_text_indices(labels: Tensor, generator: torch.Generator | None = None,
                       length: int = SEQUENCE_LENGTH) -> Tensor:
    """:func:`digit_texts` as character indices ``(N, length)`` (store these; one-hot encode per batch)."""
    return encode_indices(digit_texts(labels, generator, length), length)


def text_to_digit(texts: Sequence[str]) -> Tensor:
    """The digit a decoded text names (its stripped content equals a digit word), or -1: ``(N,)`` int64."""
    lookup = {w: d for d, w in enumerate(DIGIT_WORDS)}
    return torch.tensor([lookup.get(t.strip(), -1) for t in texts], dtype=torch.long)
