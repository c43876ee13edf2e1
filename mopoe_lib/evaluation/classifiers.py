"""Digit classifiers for the PolyMNIST modalities, used to measure coherence.

Architecture (the authors' code): two 5x5 convolutions (10 and 20 channels, each followed
by 2x2 max-pooling, dropout after the second), ``Linear(980, 128)``, dropout, ``Linear(128, 10)``. The five
classifiers are evaluated as one grouped network (like the VAE's networks), returning logits ``(M, B, 10)``.

They are always *used* in eval mode (:func:`predict` switches and restores the mode): the authors' code left
dropout active while measuring coherence (defect 1 of the README's list).

Train and ship them with ``python -m mopoe_lib.evaluation.classifiers train`` (weights in
``data/classifiers/polymnist/``: ``classifiers.safetensors`` and ``classifiers.json`` with the test accuracy of
each modality, the command and the sha256 of the weights).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.dataset import MultimodalDataset
from ..integrity import atomic_dir, read_json, sha256_file, verify_file, write_json
from ..networks.grouped import GroupedLinear
from ..settings import artifacts_dir

#: Judge architectures: ``authors`` (two 5x5 convolutions, as in the authors' code) and ``deep`` (a second judge:
#: four 3x3 convolutions), each followed by a 128-unit hidden layer.
JUDGE_ARCHITECTURES: tuple[str, ...] = ("authors", "deep")


class ModalityClassifiers(nn.Module):
    """M digit classifiers as one grouped network: ``xs`` (M tensors ``(B, 3, 28, 28)``) -> logits ``(M, B, 10)``."""

    def __init__(self, num_modalities: int = 5, in_channels: int = 3, num_classes: int = 10,
                 arch: str = "authors") -> None:
        super().__init__()
        m = num_modalities
        self.num_modalities, self.arch = m, arch
        if arch == "authors":
            self.features = nn.Sequential(
                nn.Conv2d(in_channels * m, 10 * m, kernel_size=5, padding=2, groups=m), nn.MaxPool2d(2), nn.ReLU(),
                nn.Conv2d(10 * m, 20 * m, kernel_size=5, padding=2, groups=m), nn.Dropout2d(0.25), nn.MaxPool2d(2),
                nn.ReLU(),
            )
            self.flat = 20 * 7 * 7
        elif arch == "deep":
            self.features = nn.Sequential(
                nn.Conv2d(in_channels * m, 24 * m, 3, padding=1, groups=m), nn.ReLU(),
                nn.Conv2d(24 * m, 24 * m, 3, padding=1, groups=m), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(24 * m, 48 * m, 3, padding=1, groups=m), nn.ReLU(),
                nn.Conv2d(48 * m, 48 * m, 3, padding=1, groups=m), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout2d(0.25),
            )
            self.flat = 48 * 7 * 7
        else:
            raise ValueError(f"unknown judge architecture {arch!r}; choose one of {', '.join(JUDGE_ARCHITECTURES)}")
        self.hidden = GroupedLinear(m, self.flat, 128)
        self.dropout = nn.Dropout(0.5)
        self.out = GroupedLinear(m, 128, num_classes)

    def embed(self, xs: Sequence[Tensor]) -> Tensor:
        """The 128-d penultimate features ``(M, B, 128)`` (used for the feature-space Frechet distance)."""
        # channels_last: about 2x faster grouped convolutions on CPU (oneDNN), same results up to rounding
        h = self.features(torch.cat(list(xs), dim=1).contiguous(memory_format=torch.channels_last))
        h = h.reshape(h.shape[0], self.num_modalities, self.flat).transpose(0, 1)
        return F.relu(self.hidden(h))

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return self.out(self.dropout(self.embed(xs)))


def blur_and_contrast(xs: Sequence[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Training augmentation for a judge that reads decoder means fairly: generated images are blurrier and
    lower in contrast than data. Per image: a Gaussian blur (sigma 0 to 1.5 pixels, one of four strengths) and
    the contrast scaled by 0.4 to 1 around the image's mean."""
    out = []
    for x in xs:
        n = x.shape[0]
        level = torch.randint(0, 4, (n,), generator=generator)
        blurred = x.clone()
        for k, sigma in ((1, 0.6), (2, 1.0), (3, 1.5)):
            chosen = level == k
            if chosen.any():
                t = torch.arange(-3, 4, dtype=x.dtype)
                kernel = torch.exp(-t**2 / (2 * sigma**2))
                kernel = (kernel / kernel.sum()).to(x.device)
                y = x[chosen].reshape(-1, 1, *x.shape[-2:])
                y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
                y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="replicate"), kernel.view(1, 1, -1, 1))
                blurred[chosen] = y.reshape(-1, *x.shape[1:])
        contrast = (0.4 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)).to(x.device, x.dtype)
        mean = blurred.mean(dim=(1, 2, 3), keepdim=True)
        out.append((mean + contrast * (blurred - mean)).clamp(0, 1))
    return out


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Run ``module`` in eval mode (dropout off) inside the block and restore its previous mode after it."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def predict(classifiers: ModalityClassifiers, xs: Sequence[Tensor], batch_size: int = 1000) -> Tensor:
    """Predicted digits ``(M, N)`` in eval mode (dropout off), in batches; restores the previous mode."""
    with evaluating(classifiers):
        n = xs[0].shape[0]
        out = [classifiers([x[i:i + batch_size].float() for x in xs]).argmax(-1) for i in range(0, n, batch_size)]
        return torch.cat(out, dim=1)


def accuracy(classifiers: ModalityClassifiers, data: MultimodalDataset, batch_size: int = 1000) -> Tensor:
    """Test accuracy of each modality's classifier ``(M,)``."""
    correct = torch.zeros(data.num_modalities)
    for batch in data.batches(batch_size):
        correct += (predict(classifiers, batch.x, batch_size) == batch.label).sum(dim=1).cpu()
    return correct / len(data)


def select_groups(model: ModalityClassifiers, members: Sequence[int]) -> ModalityClassifiers:
    """A new classifier set made of copies of ``model``'s classifiers ``members`` (in that order)."""
    part = ModalityClassifiers(len(members), arch=model.arch)
    m, index = model.num_modalities, torch.as_tensor(list(members))
    part.load_state_dict({k: v.reshape(m, -1, *v.shape[1:])[index].reshape(-1, *v.shape[1:]).clone()
                          for k, v in model.state_dict().items()})
    return part.train(model.training)


@torch.no_grad()
def replace_groups(model: ModalityClassifiers, members: Sequence[int], part: ModalityClassifiers) -> None:
    """Overwrite ``model``'s classifiers ``members`` with those of ``part`` (one per member, in order)."""
    m, index, source = model.num_modalities, torch.as_tensor(list(members)), part.state_dict()
    for key, value in model.state_dict().items():
        value.view(m, -1, *value.shape[1:])[index] = source[key].view(len(members), -1, *value.shape[1:])


def train_classifiers(train: MultimodalDataset, epochs: int = 20, batch_size: int = 128, lr: float = 3e-3,
                      seed: int = 0, progress: bool = True, init: ModalityClassifiers | None = None,
                      fresh: Callable[[int], MultimodalDataset] | None = None, arch: str = "authors",
                      augment: bool = False) -> ModalityClassifiers:
    """Train the M classifiers jointly (summed cross-entropy; the groups do not share weights), with Adam and
    a cosine learning-rate decay to zero over all steps.

    Args:
        init: start from these weights (a copy is trained) instead of a random initialisation.
        fresh: ``fresh(epoch)`` returns that epoch's training data (e.g. new background crops); its size must
            be ``len(train)``. Default: ``train`` in every epoch.
        arch: the judges' architecture (:data:`JUDGE_ARCHITECTURES`).
        augment: train on :func:`blur_and_contrast` versions of the images (a judge for decoder means).
    """
    torch.manual_seed(seed)
    model = ModalityClassifiers(train.num_modalities, arch=arch)
    noise = torch.Generator().manual_seed(seed + 1)
    if init is not None:
        model.load_state_dict(init.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * train.num_batches(batch_size))
    order = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        data = train if fresh is None else fresh(epoch)
        if len(data) != len(train):
            raise ValueError(f"fresh({epoch}) returned {len(data)} samples; expected {len(train)}")
        bar = tqdm(data.batches(batch_size, shuffle=True, generator=order), total=data.num_batches(batch_size),
                   desc=f"classifiers epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            logits = model(blur_and_contrast(batch.x, noise) if augment else batch.x)  # (M, B, 10)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.label.repeat(train.num_modalities))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def classifier_dir(name: str = "polymnist") -> Path:
    """Where the shipped classifiers live (the checkout's ``data/`` when available): ``polymnist`` is the judge
    of every coherence number, ``polymnist-judge2`` a second set (another architecture and seed, trained on
    blurred, low-contrast images) that shows how much coherence depends on the judge."""
    return artifacts_dir() / "classifiers" / name


TRAIN_COMMAND = "python -m mopoe_lib.evaluation.classifiers train"


def save_classifiers(model: ModalityClassifiers, accuracies: Tensor, folder: Path, info: dict) -> Path:
    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "classifiers.safetensors"))
        write_json(tmp / "classifiers.json", {
            **info, "test_accuracy": [round(float(a), 5) for a in accuracies],
            "command": info.get("command")
            or TRAIN_COMMAND + "".join(f" --{k} {info[k]}" for k in ("epochs", "lr", "seed") if k in info),
            "sha256": sha256_file(tmp / "classifiers.safetensors"),
        })
    return folder


#: A classifier set judges generations only if every modality's classifier reached this test accuracy on real
#: images (a classifier stuck at chance would make every coherence number it touches meaningless).
JUDGE_MIN_ACCURACY = 0.9


def load_classifiers(folder: Path | None = None, map_location: str = "cpu") -> ModalityClassifiers:
    """Load the shipped classifiers (checksum verified), in eval mode.

    Raises:
        MissingDataError: not trained yet; the message gives the command.
    """
    folder = folder or classifier_dir()
    meta = read_json(folder / "classifiers.json", TRAIN_COMMAND)
    verify_file(folder / "classifiers.safetensors", meta["sha256"], TRAIN_COMMAND)
    model = ModalityClassifiers(meta.get("num_modalities", 5), arch=meta.get("arch", "authors"))
    model.load_state_dict(load_file(str(folder / "classifiers.safetensors"), device=map_location))
    return model.eval()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mopoe_lib.evaluation.classifiers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the PolyMNIST classifiers and ship them under data/")
    tr.add_argument("--variant", default="full")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--lr", type=float, default=3e-3)
    tr.add_argument("--out", type=Path, default=None)
    tr.add_argument("--modalities", nargs="+", default=None, metavar="NAME",
                    help="train only these modalities' classifiers and replace them in the shipped set")
    tr.add_argument("--fresh-crops", action="store_true",
                    help="draw new training tuples (pairings and background crops) for every epoch")
    tr.add_argument("--finetune", action="store_true", help="start from the shipped classifiers' weights")
    tr.add_argument("--arch", choices=JUDGE_ARCHITECTURES, default="authors")
    tr.add_argument("--augment", action="store_true", help="train on blurred, low-contrast images (second judge)")
    sh = sub.add_parser("show", help="print the shipped classifiers' accuracies")
    sh.add_argument("--out", type=Path, default=None, help="another classifier folder")
    return parser


def _train_command(args: argparse.Namespace, folder: Path, command: str) -> int:
    """``train``: fit the chosen modalities' classifiers; a partial set replaces them in the shipped one."""
    from ..data.polymnist import fresh_training_tuples, load_polymnist

    start = time.perf_counter()
    train, test = load_polymnist("train", args.variant), load_polymnist("test", args.variant)
    names = list(train.names)
    wanted = args.modalities or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; choose from {', '.join(names)}")
    members = [names.index(n) for n in wanted]
    partial = members != list(range(len(names)))
    shipped = load_classifiers(folder) if partial or args.finetune else None
    if partial:
        train = MultimodalDataset([train.modalities[m] for m in members], train.labels, wanted)
    part = train_classifiers(train, args.epochs, lr=args.lr, seed=args.seed,
                             init=select_groups(shipped, members) if args.finetune and shipped is not None else None,
                             fresh=(lambda epoch: fresh_training_tuples(len(train), args.seed, epoch, wanted))
                             if args.fresh_crops else None, arch=args.arch, augment=args.augment)
    options = {"epochs": args.epochs, "lr": args.lr, "seed": args.seed, "fresh_crops": args.fresh_crops,
               "finetune": args.finetune, "arch": args.arch, "augment": args.augment,
               "train_seconds": round(time.perf_counter() - start, 1), "command": command}
    if partial:
        assert shipped is not None
        before = accuracy(shipped, test)
        replace_groups(shipped, members, part)
        model, info = shipped, read_json(folder / "classifiers.json", TRAIN_COMMAND)
        info.pop("sha256", None)
        info.setdefault("refinements", []).append({
            **options, "modalities": wanted, "test_accuracy_before": [round(float(a), 5) for a in before]})
    else:
        model, info = part, {"num_modalities": train.num_modalities, "modalities": names,
                             "data_variant": args.variant, **options, "torch": torch.__version__}
    acc = accuracy(model, test)
    save_classifiers(model, acc, folder, info)
    print(f"test accuracy per modality: {[round(float(a), 4) for a in acc]} -> {folder}")
    weak = [name for name, a in zip(names, acc.tolist(), strict=True) if a < JUDGE_MIN_ACCURACY]
    if weak:
        print(f"below {JUDGE_MIN_ACCURACY} (not usable as judges): {', '.join(weak)}; retrain them with "
              f"--modalities {' '.join(weak)} --out {folder} (a lower --lr often helps)")
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..integrity import guarded

    args = _parser().parse_args(argv)
    folder = args.out or classifier_dir()
    if args.command == "show":
        return guarded(lambda: print(read_json(folder / "classifiers.json", TRAIN_COMMAND)) or 0)
    command = " ".join([TRAIN_COMMAND, *(argv if argv is not None else sys.argv[1:])[1:]])
    return guarded(lambda: _train_command(args, folder, command))


if __name__ == "__main__":
    sys.exit(main())
