"""Sample quality without the internet: Frechet distances between Gaussians fitted to network features.

:math:`d^2 = \\lVert \\mu_1 - \\mu_2 \\rVert^2 + \\operatorname{tr}\\big(\\Sigma_1 + \\Sigma_2
- 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\big)`, computed in float64 with a symmetric eigendecomposition
(:math:`\\operatorname{tr}(\\Sigma_1\\Sigma_2)^{1/2} = \\sum_i \\sqrt{\\lambda_i}` with :math:`\\lambda_i` the
eigenvalues of :math:`\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}`), so there is no complex square root to clip.

Two feature spaces:

- :func:`frechet_classifier_distance`: the 128-d penultimate features of the project's own PolyMNIST digit
  classifiers (:mod:`.classifiers`). It is **not FID**: the numbers are comparable between models evaluated
  here, not with FIDs in papers. It needs nothing from the internet, so the book and the tests use it.
- :func:`inception_frechet_distance`: FID with an Inception-v3 network, only when the user supplies the
  weights file (torchvision's ``inception_v3`` architecture; nothing is downloaded). Values depend on the
  weights used; published FIDs use the TF-Inception port of ``pytorch-fid``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..data.dataset import MultimodalDataset
from ..fusion import powerset, subset_labels
from ..model import MultimodalVAE
from ..sampler import AggregatePosterior, sample_unconditional
from .classifiers import ModalityClassifiers, evaluating


def gaussian_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of ``features (N, F)``, in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, F), got {tuple(features.shape)}")
    f = features.double()
    return f.mean(dim=0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> float:
    """The squared Frechet (2-Wasserstein) distance between N(mean1, cov1) and N(mean2, cov2)."""
    mean1, cov1, mean2, cov2 = (t.double() for t in (mean1, cov1, mean2, cov2))
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape != (mean1.numel(), mean1.numel()):
        raise ValueError(f"shapes do not match: {tuple(mean1.shape)}, {tuple(cov1.shape)}, "
                         f"{tuple(mean2.shape)}, {tuple(cov2.shape)}")
    root1 = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    value = (mean1 - mean2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return float(value.clamp_min(0))


def frechet_distance_from_features(real: Tensor, fake: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two sets of features ``(N, F)``."""
    return frechet_distance(*gaussian_statistics(real), *gaussian_statistics(fake))


@torch.no_grad()
def _features(classifiers: ModalityClassifiers, xs: Sequence[Tensor]) -> Tensor:
    with evaluating(classifiers):
        return classifiers.embed([x.float().clamp(0, 1) for x in xs]).cpu()  # (M, B, 128)


@torch.no_grad()
def frechet_classifier_distance(
    model: MultimodalVAE,
    classifiers: ModalityClassifiers,
    data: MultimodalDataset,
    subsets: Tensor | None = None,
    prior: bool = True,
    batch_size: int = 250,
    seed: int = 0,
    progress: bool = True,
    sampler: AggregatePosterior | None = None,
) -> list[dict]:
    """Frechet distance in the classifiers' feature space between each modality's test images and generated ones.

    Generated sets: conditional samples from each subset's posterior (``subsets``; default all non-empty
    subsets), when ``prior`` unconditional samples from N(0, I), and with a ``sampler`` unconditional samples from
    that estimate of the aggregate posterior (each as many as test tuples; the last from a generator of its own,
    so the other rows do not depend on it). Every set has ``len(data)`` images per modality. Returns tidy rows
    ``source`` (subset label, ``"prior"`` or ``"aggregate posterior"``), ``num_inputs`` (0 for the unconditional
    ones), ``target``, ``in_subset``, ``frechet``, ``n``.
    """
    model.eval()
    subsets = powerset(model.num_modalities) if subsets is None else subsets
    labels = subset_labels(subsets, model.names)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    sampler_generator = torch.Generator().manual_seed(seed + 1)
    real, conditional, unconditional, aggregate = [], [], [], []
    batches = tqdm(data.batches(batch_size), total=data.num_batches(batch_size), desc="frechet",
                   disable=not progress, leave=False)
    for batch in batches:
        batch = batch.to(device)
        real.append(_features(classifiers, batch.x))
        if subsets.shape[0]:
            z = model.sample_given(model.encode(batch.x), subsets, generator)  # (K, B, D)
            generated = model.means(model.decode(z, generator=generator))
            feats = _features(classifiers, [g.flatten(0, 1) for g in generated])  # (M, K*B, F)
            conditional.append(feats.view(model.num_modalities, subsets.shape[0], -1, feats.shape[-1]))
        if prior:
            unconditional.append(_features(classifiers, model.sample_prior(batch.size, generator)))
        if sampler is not None:
            aggregate.append(_features(classifiers, sample_unconditional(model, batch.size, sampler_generator,
                                                                         sampler)))
    real_stats = [gaussian_statistics(f) for f in torch.cat(real, dim=1)]
    rows = []

    def add(source: str, num_inputs: int, in_subset: Sequence[bool], feats: Tensor) -> None:
        for m, name in enumerate(model.names):
            rows.append({"source": source, "num_inputs": num_inputs, "target": name, "in_subset": bool(in_subset[m]),
                         "frechet": frechet_distance(*real_stats[m], *gaussian_statistics(feats[m])),
                         "n": len(data)})

    if conditional:
        cond = torch.cat(conditional, dim=2)  # (M, K, N, F)
        for k, label in enumerate(labels):
            add(label, int(subsets[k].sum()), subsets[k].tolist(), cond[:, k])
    if prior:
        add("prior", 0, [False] * model.num_modalities, torch.cat(unconditional, dim=1))
    if aggregate:
        add("aggregate posterior", 0, [False] * model.num_modalities, torch.cat(aggregate, dim=1))
    return rows


def load_inception(weights: Path | str) -> Callable[[Tensor], Tensor]:
    """An Inception-v3 feature extractor (2048-d pool features) from a weights file the user supplies.

    Needs ``torchvision`` (not a dependency of the book: ``pip install torchvision`` matching your torch). The
    file holds a state dict for ``torchvision.models.inception_v3`` (``.safetensors``, or a ``.pt``/``.pth``
    file read with ``weights_only=True``). Nothing is downloaded.

    Raises:
        FileNotFoundError: the weights file does not exist.
        ImportError: torchvision is not installed.
    """
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"Inception weights {path} not found. FID needs weights you provide, e.g. save "
                                "torchvision's inception_v3(weights='IMAGENET1K_V1').state_dict() on a machine "
                                "with internet, then pass the file here; without them use "
                                "frechet_classifier_distance (offline).")
    try:
        from torchvision.models import inception_v3  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ImportError("FID needs torchvision: pip install torchvision (the build matching your torch)") from exc
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(state)
    net.fc = torch.nn.Identity()
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    @torch.no_grad()
    def extract(images: Tensor) -> Tensor:
        x = images.float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return net((x - mean) / std)

    return extract


def inception_frechet_distance(real: Tensor, fake: Tensor, weights: Path | str, batch_size: int = 100) -> float:
    """FID between two image sets ``(N, C, H, W)`` in [0, 1], with user-supplied Inception-v3 weights."""
    extract = load_inception(weights)
    feats = [torch.cat([extract(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
             for images in (real, fake)]
    return frechet_distance_from_features(*feats)
