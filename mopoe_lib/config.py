"""Experiment configurations: one dataclass, a registry of named experiments, and the model factory.

Named experiments (``polymnist-<scale>-<model>``):

==========  =====================================================================================
scale       what it is
==========  =====================================================================================
``fast``    the FAST data set (6k tuples), a compact network, a few epochs: minutes on a laptop CPU
``compact`` the full 60k tuples with the compact network (bf16 where the CPU supports it): the shipped models
``full``    the paper's setup (REFERENCE.md): paper networks, latent 512, Laplace 0.75, beta 2.5,
            Adam 5e-4, batch 256, 300 epochs (a GPU job)
==========  =====================================================================================

for each model ``mopoe``, ``mvae`` and ``mmvae``; and ``mst-<fast|full>-<model>`` for MNIST-SVHN-Text (the
official networks, latent 20, Adam 1e-3; FAST on the offline street-digit stand-in; ``data_source=svhn`` for
the real SVHN); ``celeba-full-<model>`` for CelebA image-text (20 shared + 32 modality-specific latent
dimensions, Adam 5e-4, 250 epochs; needs the data set you download, see :mod:`mopoe_lib.data.celeba`). Any
field can be overridden, e.g.
``get_config("polymnist-fast-mopoe", epochs=2, lr=1e-3)`` or ``--set epochs=2`` on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .likelihoods import get_likelihood
from .model import MultimodalVAE
from .networks import GroupedConvDecoder, GroupedConvEncoder
from .objectives import DEFAULT_PRIOR_EXPERT, OBJECTIVES, SUBSET_POSTERIOR, Objective, make_objective

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # the paper's PolyMNIST networks (REFERENCE.md), evaluated as one grouped network
    "paper": {"channels": (32, 64, 128), "hidden_dim": 512},
    # a compact variant: a quarter of the channels, about 15x fewer flops than the paper's networks
    "compact": {"channels": (16, 32, 64), "hidden_dim": 256},
}
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
#: data set -> its architectures (the first is the default)
DATASETS: dict[str, tuple[str, ...]] = {"polymnist": ("compact", "paper"), "mnist-svhn-text": ("mst",),
                                        "celeba": ("celeba",)}
#: MNIST-SVHN-Text reconstruction weights (REFERENCE.md): numel(SVHN) / numel(modality), text as 8 symbols
MST_RECON_WEIGHTS = (3072 / 784, 1.0, 3072 / 8)
#: CelebA reconstruction weights, the same rule: numel(image) / numel(modality), text as 256 symbols
CELEBA_RECON_WEIGHTS = (1.0, 3 * 64 * 64 / 256)


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` -> ``bf16`` where the hardware runs it fast, else ``fp32``.

    On CPUs, bf16 autocast pays off only with native bf16 support (AVX-512-BF16 or AMX, as oneDNN reports it):
    on an AVX2-only CPU the convolutions fall back to slow reference kernels and a training step is about
    ten times *slower* than in fp32 (measured on an AMD EPYC with AVX2, torch 2.13).
    """
    if precision != "auto":
        return precision
    import torch

    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run. Saved next to every run's results."""

    name: str = "custom"
    # data
    dataset: str = "polymnist"
    data_variant: str = "fast"
    data_source: str = ""  # mnist-svhn-text: "street" (offline stand-in, default) or "svhn" (real SVHN)
    data_seed: int = 0
    data_root: str = ""  # celeba: folder with the downloaded files ("" -> <data folder>/raw/celeba)
    train_subset: int = 0  # use only the first n training tuples (0: all)
    # model
    architecture: str = "compact"
    latent_dim: int = 64
    style_dim: int = 0  # modality-specific latent per modality (0: none; CelebA: 32)
    likelihood: str = "laplace"
    likelihood_scale: float = 0.75
    prior_expert: str = ""  # "" -> the objective's default (mopoe: full_set, mvae: always, mmvae: never)
    # objective
    objective: str = "mopoe"
    beta: float = 2.5
    estimator: str = "elbo"
    num_samples: int = 1
    sampling: str = "stratified"
    kl_anneal_steps: int = 0
    # optimisation
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 5
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit)
    seed: int = 0
    # hardware
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    threads: int = 0  # CPU threads (0: torch's default, i.e. all cores or $OMP_NUM_THREADS)
    cudnn_benchmark: bool = False  # GPU: let cuDNN time its convolution algorithms for the fixed batch shape
    # bookkeeping
    eval_samples: int = 1000  # test tuples for the per-epoch test bound (0: skip)
    eval_coherence: int = 0  # PolyMNIST: test tuples for per-epoch coherence with the shipped classifiers (0: skip)
    eval_every_epochs: int = 1  # evaluate (test bound, coherence) after every n-th epoch and the last one
    checkpoint_every_epochs: int = 1  # checkpoint after every n-th epoch, the last one and a stop
    checkpoint_every_steps: int = 0  # extra checkpoints within an epoch (0: only at epoch ends)
    keep_checkpoints: int = 2
    time_limit_minutes: float = 0.0  # stop with a checkpoint after this much training time (0: none)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.architecture not in DATASETS[self.dataset]:
            raise ValueError(f"unknown architecture {self.architecture!r} for {self.dataset}; choose one of "
                             f"{', '.join(DATASETS[self.dataset])}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        get_likelihood(self.likelihood)  # raises with the valid names
        if self.eval_coherence and self.dataset != "polymnist":
            raise ValueError("eval_coherence needs the shipped PolyMNIST classifiers; use 0 for other data sets")
        if self.style_dim < 0:
            raise ValueError(f"style_dim must be non-negative, got {self.style_dim}")
        if self.style_dim and self.dataset == "polymnist":
            raise ValueError("style_dim needs per-modality networks; the PolyMNIST networks are grouped (use 0)")
        if self.eval_every_epochs < 1 or self.checkpoint_every_epochs < 1:
            raise ValueError("eval_every_epochs and checkpoint_every_epochs must be at least 1")
        if self.batch_size < 1 or self.epochs < 0 or self.lr <= 0:
            raise ValueError("batch_size and lr must be positive and epochs non-negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        check_fields(values)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    @property
    def resolved_prior_expert(self) -> str:
        return self.prior_expert or DEFAULT_PRIOR_EXPERT[self.objective]

    def make_objective(self) -> Objective:
        options: dict[str, Any] = {"beta": self.beta, "estimator": self.estimator, "sampling": self.sampling,
                                   "kl_anneal_steps": self.kl_anneal_steps}
        if self.estimator != "elbo" or self.num_samples != 1:
            options["num_samples"] = self.num_samples
        return make_objective(self.objective, **options)


def check_fields(names: Any) -> None:
    """Raise a ValueError naming the unknown config fields among ``names`` and listing the valid ones."""
    known = {f.name for f in fields(ExperimentConfig)}
    unknown = set(names) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; valid: {', '.join(sorted(known))}")


def _posterior_options(config: ExperimentConfig) -> dict[str, Any]:
    """The model's posterior policies for the config's objective (prior expert, posterior given a subset)."""
    return {"prior_expert": config.resolved_prior_expert, "subset_posterior": SUBSET_POSTERIOR[config.objective]}


def build_model(config: ExperimentConfig, num_modalities: int = 5,
                names: tuple[str, ...] | None = None) -> MultimodalVAE:
    """The model a config describes (random initialisation from the current torch seed)."""
    if config.dataset == "mnist-svhn-text":
        from .networks import mnist_svhn_text as nets

        d, s = config.latent_dim, config.style_dim
        image = {"scale": config.likelihood_scale}
        return MultimodalVAE([nets.MNISTEncoder(d + s), nets.SVHNEncoder(d + s), nets.TextEncoder(d + s)],
                             [nets.MNISTDecoder(d + s), nets.SVHNDecoder(d + s), nets.TextDecoder(d + s)],
                             [get_likelihood("laplace", **image), get_likelihood("laplace", **image),
                              get_likelihood("categorical")], d, names=names or ("mnist", "svhn", "text"),
                             recon_weights=MST_RECON_WEIGHTS, style_dims=[s] * 3,
                             **_posterior_options(config))
    if config.dataset == "celeba":
        from .networks import celeba

        width = config.latent_dim + config.style_dim
        return MultimodalVAE([celeba.FaceEncoder(width), celeba.AttributeTextEncoder(width)],
                             [celeba.FaceDecoder(width), celeba.AttributeTextDecoder(width)],
                             [get_likelihood("laplace", scale=config.likelihood_scale),
                              get_likelihood("categorical")], config.latent_dim, names=names or ("image", "text"),
                             recon_weights=CELEBA_RECON_WEIGHTS, style_dims=[config.style_dim] * 2,
                             **_posterior_options(config))
    arch = ARCHITECTURES[config.architecture]
    encoder = GroupedConvEncoder(num_modalities, config.latent_dim, arch["channels"], arch["hidden_dim"])
    decoder = GroupedConvDecoder(num_modalities, config.latent_dim, tuple(reversed(arch["channels"])))
    scale = {"scale": config.likelihood_scale} if config.likelihood in ("laplace", "gaussian") else {}
    likelihoods = [get_likelihood(config.likelihood, **scale) for _ in range(num_modalities)]
    return MultimodalVAE(encoder, decoder, likelihoods, config.latent_dim, names=names,
                         **_posterior_options(config))


def load_dataset(config: ExperimentConfig, split: str):  # -> MultimodalDataset
    """The ``split`` (``"train"``/``"test"``) of the config's data set and variant."""
    if config.dataset == "mnist-svhn-text":
        from .data.mnist_svhn_text import load_mnist_svhn_text

        return load_mnist_svhn_text(split, config.data_variant, config.data_source or "street", config.data_seed)
    if config.dataset == "celeba":
        from .data.celeba import load_celeba

        return load_celeba(split, config.data_root or None)
    from .data.polymnist import load_polymnist

    return load_polymnist(split, config.data_variant, seed=config.data_seed)


def _registry() -> dict[str, ExperimentConfig]:
    out = {}
    for model in ("mopoe", "mvae", "mmvae"):
        out[f"polymnist-fast-{model}"] = ExperimentConfig(
            name=f"polymnist-fast-{model}", data_variant="fast", architecture="compact", latent_dim=64,
            objective=model, lr=1e-3, epochs=4, eval_samples=1000, eval_coherence=200)
        out[f"polymnist-compact-{model}"] = ExperimentConfig(
            name=f"polymnist-compact-{model}", data_variant="full", architecture="compact", latent_dim=64,
            objective=model, lr=1e-3, epochs=80, precision="auto", eval_samples=2000, eval_coherence=1000)
        out[f"polymnist-full-{model}"] = ExperimentConfig(
            name=f"polymnist-full-{model}", data_variant="full", architecture="paper", latent_dim=512,
            objective=model, lr=5e-4, epochs=300, eval_samples=10000, eval_coherence=2000, eval_every_epochs=5,
            checkpoint_every_epochs=5, channels_last=True, cudnn_benchmark=True)
        for scale, epochs in (("fast", 3), ("full", 200)):
            out[f"mst-{scale}-{model}"] = ExperimentConfig(
                name=f"mst-{scale}-{model}", dataset="mnist-svhn-text", data_variant=scale, architecture="mst",
                latent_dim=20, objective=model, lr=1e-3, epochs=epochs, eval_samples=1000 if scale == "fast" else 10000)
        # CelebA (download it yourself: mopoe_lib/data/celeba.py): 20 shared + 32 modality-specific dimensions
        out[f"celeba-full-{model}"] = ExperimentConfig(
            name=f"celeba-full-{model}", dataset="celeba", data_variant="full", architecture="celeba", latent_dim=20,
            style_dim=32, objective=model, lr=5e-4, epochs=250, eval_samples=2000)
    return out


EXPERIMENTS: dict[str, ExperimentConfig] = _registry()


def get_config(name: str, **overrides: Any) -> ExperimentConfig:
    """A named experiment with optional overrides.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or unknown/invalid overrides.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    check_fields(overrides)
    return replace(EXPERIMENTS[name], **overrides)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "compile=true"]`` -> typed values, using the dataclass field types."""
    types = {f.name: f.type for f in fields(ExperimentConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key=value")
        check_fields([key])
        kind = str(types[key])
        if "bool" in kind:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{key} expects true or false, got {raw!r}")
            out[key] = raw.lower() in ("true", "1", "yes")
        elif "int" in kind:
            out[key] = int(raw)
        elif "float" in kind:
            out[key] = float(raw)
        elif "dict" in kind:
            raise ValueError(f"{key} cannot be set from the command line")
        else:
            out[key] = raw
    return out
