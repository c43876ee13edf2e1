"""Classifiers for MNIST-SVHN-Text coherence: small CNNs for the two image modalities and a text reader.

- :class:`DigitCNN`: two convolutions and a linear layer, for 1x28x28 (MNIST) or 3x32x32 (street digits or
  SVHN) images; :func:`train_digit_classifier` fits one in a few epochs on a CPU.
- :class:`TextReader`: not learned. A generated text is a distribution over characters at each position (the
  decoder's mean); the reader names the digit whose word the distribution spells most probably, summed over the
  offsets at which the data places words. Like the image classifiers it always names a digit. With
  ``exact=True`` it decodes the most likely character at each position instead and counts a text that is not
  exactly a digit word as wrong (class 10): a stricter judge, which fails a decoder that is unsure only of
  the word's offset.
- :class:`PerModalityClassifiers`: the three behind the interface of the coherence functions: ``xs`` (one
  tensor per modality) -> logits ``(M, B, 11)``, class 10 meaning "unreadable".

Ship them with ``python -m mopoe_lib.evaluation.mst train [--source street|svhn]`` (weights and test accuracies
in ``data/classifiers/mnist-svhn-text-<source>/``); :func:`load_mst_classifiers` loads them.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.dataset import to_float
from ..data.mnist import load_mnist
from ..data.street_digits import generate_street_digits
from ..data.svhn import load_svhn
from ..data.text import DIGIT_WORDS, SEQUENCE_LENGTH, decode, encode_indices, text_to_digit
from ..integrity import atomic_dir, read_json, sha256_file, verify_file, write_json
from ..settings import artifacts_dir

UNREADABLE = 10


class DigitCNN(nn.Module):
    def __init__(self, in_channels: int = 1, size: int = 28) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25),
        )
        self.out = nn.Linear(64 * (size // 4) ** 2, 10)

    def forward(self, x: Tensor) -> Tensor:
        # per-image standardisation: colour and brightness carry no digit information
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-3)
        return self.out(self.features(x))


def train_digit_classifier(images: Tensor, labels: Tensor, epochs: int = 2, batch_size: int = 128, lr: float = 2e-3,
                           seed: int = 0, progress: bool = True) -> DigitCNN:
    """Fit a :class:`DigitCNN` on uint8 or float images ``(N, C, H, W)`` (Adam, cosine decay); eval mode."""
    torch.manual_seed(seed)
    model = DigitCNN(images.shape[1], images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=steps, desc="digit classifier", disable=not progress, leave=False)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(batch_size):
            x = to_float(images[index])
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update()
    bar.close()
    return model.eval()


@torch.no_grad()
def classifier_accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(labels), batch_size):
        x = to_float(images[start:start + batch_size])
        correct += int((model(x).argmax(-1) == labels[start:start + batch_size]).sum())
    return correct / len(labels)


class TextReader(nn.Module):
    """Reads the digit a text names: indices ``(B, 8)`` or per-position probabilities ``(B, 8, 71)`` -> scores
    ``(B, 11)`` (class 10: unreadable).

    Indices are hard strings: a string that is exactly a digit word (at any offset) names it, any other string is
    unreadable. Probabilities (the decoder's mean; non-negative scores are normalised over the alphabet) are
    read by likelihood: the score of digit ``d`` is ``log sum_offsets prod_positions p[position, character]`` of
    ``d``'s word at each offset the data uses (:func:`~mopoe_lib.data.text.digit_texts`), so a decoder that
    spells "eight" but is unsure where the word starts still reads as 8. ``exact=True`` reads probabilities as
    their most likely string instead.
    """

    def __init__(self, exact: bool = False) -> None:
        super().__init__()
        self.exact = exact
        templates, digits = [], []
        for d, word in enumerate(DIGIT_WORDS):
            for offset in range(SEQUENCE_LENGTH - len(word)):
                text = " " * offset + word + " " * (SEQUENCE_LENGTH - offset - len(word))
                templates.append(encode_indices([text])[0])
                digits.append(d)
        self.register_buffer("templates", torch.stack(templates), persistent=False)  # (K, 8)
        self.register_buffer("digits", torch.tensor(digits), persistent=False)  # (K,)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 2 or self.exact:
            indices = x.round().long() if x.ndim == 2 else x.argmax(dim=-1)
            digits = text_to_digit(decode(indices)).to(x.device)
            digits = torch.where(digits < 0, torch.full_like(digits, UNREADABLE), digits)
            return F.one_hot(digits, UNREADABLE + 1).float()
        p = x.float().clamp_min(0.0)
        log_p = (p / p.sum(dim=-1, keepdim=True).clamp_min(1e-30)).clamp_min(1e-30).log()  # (B, 8, 71)
        positions = torch.arange(self.templates.shape[1], device=x.device)
        per_template = log_p[:, positions, self.templates].sum(dim=-1)  # (B, K)
        scores = torch.full((x.shape[0], UNREADABLE + 1), float("-inf"), device=x.device)
        for d in range(UNREADABLE):
            scores[:, d] = per_template[:, self.digits == d].logsumexp(dim=-1)
        return scores


class PerModalityClassifiers(nn.Module):
    """Per-modality classifiers with 10-class logits (or a :class:`TextReader`) as one module: logits
    ``(M, B, 11)`` where class 10 ("unreadable") never matches a label."""

    def __init__(self, classifiers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.classifiers = nn.ModuleList(classifiers)

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        out = []
        for classifier, x in zip(self.classifiers, xs, strict=True):
            logits = classifier(x)
            if logits.shape[-1] == UNREADABLE:
                logits = F.pad(logits, (0, 1), value=float("-inf"))
            out.append(logits)
        return torch.stack(out)


# ------------------------------------------------------------------------------------ shipped classifiers

TRAIN_COMMAND = "python -m mopoe_lib.evaluation.mst train"
IMAGE_MODALITIES = {"mnist": (1, 28), "svhn": (3, 32)}


def classifier_dir(source: str = "street") -> Path:
    """Where the shipped MNIST-SVHN-Text classifiers live (the checkout's ``data/`` when available)."""
    return artifacts_dir() / "classifiers" / f"mnist-svhn-text-{source}"


def _image_data(source: str, split: str, seed: int) -> dict[str, tuple[Tensor, Tensor]]:
    mnist = load_mnist()
    images, labels = (mnist.train_images, mnist.train_labels) if split == "train" else \
        (mnist.test_images, mnist.test_labels)
    if source == "svhn":
        colour = load_svhn(split)
    else:  # a seed of its own: the judge never sees the VAE's street digits
        colour = generate_street_digits(73_257 if split == "train" else 26_032, seed=seed + (split == "test"))
    return {"mnist": (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)), "svhn": colour}


def load_mst_classifiers(source: str = "street", folder: Path | None = None) -> tuple[PerModalityClassifiers, dict]:
    """The shipped image classifiers plus the text reader, checksum verified, and their metadata.

    Raises:
        MissingDataError: not trained yet; the message gives the command.
    """
    folder = folder or classifier_dir(source)
    meta = read_json(folder / "classifiers.json", f"{TRAIN_COMMAND} --source {source}")
    verify_file(folder / "classifiers.safetensors", meta["sha256"], f"{TRAIN_COMMAND} --source {source}")
    state = load_file(str(folder / "classifiers.safetensors"))
    judges: list[nn.Module] = []
    for name, (channels, size) in IMAGE_MODALITIES.items():
        model = DigitCNN(channels, size)
        model.load_state_dict({k.removeprefix(f"{name}."): v for k, v in state.items() if k.startswith(f"{name}.")})
        judges.append(model.eval())
    return PerModalityClassifiers([*judges, TextReader()]).eval(), meta


def save_mst_classifiers(state: dict[str, Tensor], folder: Path, info: dict) -> Path:
    """Write ``classifiers.safetensors`` (keys ``mnist.*``, ``svhn.*``) and ``classifiers.json`` atomically."""
    with atomic_dir(folder) as tmp:
        save_file(state, str(tmp / "classifiers.safetensors"))
        write_json(tmp / "classifiers.json", {**info, "text": "TextReader (the most probable digit word)",
                                              "sha256": sha256_file(tmp / "classifiers.safetensors")})
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.evaluation.mst", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the MNIST and colour-digit classifiers and ship them under data/")
    tr.add_argument("--source", choices=("street", "svhn"), default="street")
    tr.add_argument("--epochs", type=int, default=4)
    tr.add_argument("--seed", type=int, default=777)
    tr.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    train, test = _image_data(args.source, "train", args.seed), _image_data(args.source, "test", args.seed)
    state, accuracy = {}, {}
    for name in IMAGE_MODALITIES:
        model = train_digit_classifier(*train[name], epochs=args.epochs, seed=args.seed)
        accuracy[name] = round(classifier_accuracy(model, *test[name]), 5)
        state.update({f"{name}.{k}": v.contiguous() for k, v in model.state_dict().items()})
        print(f"{name}: test accuracy {accuracy[name]:.4f} on {len(test[name][1])} images")
    folder = save_mst_classifiers(state, args.out or classifier_dir(args.source), {
        "test_accuracy": accuracy, "source": args.source, "epochs": args.epochs, "seed": args.seed,
        "command": f"{TRAIN_COMMAND} --source {args.source} --epochs {args.epochs} --seed {args.seed}",
        "train_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__})
    print(f"-> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
