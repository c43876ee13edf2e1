"""Experiment configurations: one dataclass, one record per data set, and the registry of named experiments.

Named experiments (``polymnist-<scale>-<model>``):

==========  =====================================================================================
scale       what it is
==========  =====================================================================================
``fast``    the FAST data set (6k tuples), a compact network and the FAST recipe (:data:`FAST_RECIPE`; the
            MVAE: :data:`FAST_MVAE_RECIPE`), 45 epochs for the MoPoE, 6 for the others (:data:`FAST_EPOCHS`): minutes
            on a laptop CPU
``compact`` the full 60k tuples, the compact network and the CPU recipe, 24 epochs: the shipped models
``full``    the paper's setup (Sutter et al. 2021): paper networks, latent 512, Laplace likelihood with
            scale 0.75, beta 2.5, Adam 5e-4, batch 256, 300 epochs (a GPU job)
==========  =====================================================================================

for each model ``mopoe``, ``mvae`` and ``mmvae``; ``mst-<fast|full>-<model>`` for MNIST-SVHN-Text (the
official networks, latent 20, Adam 1e-3; offline on the street-digit stand-in, ``data_source=svhn`` for the
real SVHN); ``mst-compact-<model>`` (the CPU recipe, 20 epochs of 120k triples: the shipped MNIST-SVHN-Text models);
``polymnist-<scale>-<relative>`` for the relatives ``mmjsd``, ``mvtcae`` and ``mmvae-plus`` (MMVAE+, 32 shared
and 32 modality-specific dimensions), and ``polymnist-full-mmvae-iw``;
``celeba-full-<model>`` for CelebA image-text (20 shared + 32 modality-specific latent dimensions,
Adam 5e-4, 250 epochs; needs the data set you download, see :mod:`mopoe_lib.data.celeba`).

Any field can be overridden: ``get_config("polymnist-fast-mopoe", epochs=2, lr=1e-3)`` or ``--set epochs=2`` on
the command line. The objective's options (``estimator``, ``num_samples``, ``max_subsets``, ...) are ``None``
by default, meaning "the named objective's own" (:data:`mopoe_lib.objectives.OBJECTIVES`), so
``--set objective=mmvae_iw`` trains with that objective's DReG estimator and K = 30.

Adding a data set means one :class:`DatasetSpec` in :data:`DATASETS` (its loader, architectures, modality names
and model builder); adding an objective means one record in :data:`mopoe_lib.objectives.OBJECTIVES`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .likelihoods import LIKELIHOODS, get_likelihood
from .model import MultimodalVAE
from .networks import GroupedConvDecoder, GroupedConvEncoder
from .objectives import OBJECTIVE_OPTIONS, OBJECTIVES, Objective, ObjectiveConfig

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # the paper's PolyMNIST networks, evaluated as one grouped network
    "paper": {"channels": (32, 64, 128), "hidden_dim": 512},
    # a compact variant: a quarter of the channels, about 15x fewer flops than the paper's networks
    "compact": {"channels": (16, 32, 64), "hidden_dim": 256},
}
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:<n>")
#: MNIST-SVHN-Text reconstruction weights (the authors' code): numel(SVHN) / numel(modality), text as 8 symbols
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


# ------------------------------------------------------------------------------------------------ data sets


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the library needs to know about one data set.

    Attributes:
        architectures: the network families it can use (the first is the default).
        modalities: the modality names, in order (a model rebuilt from a config uses them).
        load: ``load(config, split)`` -> :class:`~mopoe_lib.data.MultimodalDataset` for ``"train"``/``"test"``.
        build: ``build(config, names)`` -> the :class:`~mopoe_lib.model.MultimodalVAE` of a config.
        judged: shipped digit classifiers exist for it (coherence can be measured during training).
    """

    name: str
    architectures: tuple[str, ...]
    modalities: tuple[str, ...]
    load: Callable[[ExperimentConfig, str], Any]
    build: Callable[[ExperimentConfig, tuple[str, ...]], MultimodalVAE]
    judged: bool = False


def _posterior_options(config: ExperimentConfig) -> dict[str, Any]:
    """The model's posterior policies (prior expert, posterior given a subset) from the config's objective,
    whether it learns MMVAE+'s auxiliary style priors, and whether it learns its prior (``learn_prior``)."""
    objective = config.objective_config
    return {"prior_expert": objective.prior_expert, "subset_posterior": objective.subset_posterior,
            "auxiliary_style": objective.cross_style == "auxiliary", "learn_prior": config.learn_prior}


def style_dims(config: ExperimentConfig, names: Sequence[str]) -> list[int]:
    """Each modality's style size: ``style_dim`` for the modalities named in ``style_modalities`` (all when it is
    empty), 0 for the others."""
    chosen = [n.strip() for n in config.style_modalities.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise ValueError(f"style_modalities names {', '.join(unknown)}, not a modality of {config.dataset}: "
                         f"choose from {', '.join(names)}")
    return [config.style_dim if not chosen or n in chosen else 0 for n in names]


def _build_polymnist(config: ExperimentConfig, names: tuple[str, ...]) -> MultimodalVAE:
    arch = ARCHITECTURES[config.architecture]
    if len(set(style_dims(config, names))) != 1:
        raise ValueError("the PolyMNIST networks give every modality the same style size: leave style_modalities "
                         "empty")
    m, width = len(names), config.latent_dim + config.style_dim  # encoders return [z, w_m], decoders read it
    encoder = GroupedConvEncoder(m, width, arch["channels"], arch["hidden_dim"])
    decoder = GroupedConvDecoder(m, width, tuple(reversed(arch["channels"])))
    scale = {"scale": config.likelihood_scale} if config.likelihood in ("laplace", "gaussian") else {}
    likelihoods = [get_likelihood(config.likelihood, **scale) for _ in range(m)]
    return MultimodalVAE(encoder, decoder, likelihoods, config.latent_dim, names=names, **_posterior_options(config),
                         learn_scales=config.learn_scale, optimal_scales=config.optimal_scale,
                         style_dims=[config.style_dim] * m)


def _build_mst(config: ExperimentConfig, names: tuple[str, ...]) -> MultimodalVAE:
    from .networks import mnist_svhn_text as nets

    styles = style_dims(config, names)
    width = [config.latent_dim + s for s in styles]
    image = {"scale": config.likelihood_scale} if config.likelihood in ("laplace", "gaussian") else {}
    return MultimodalVAE([nets.MNISTEncoder(width[0]), nets.SVHNEncoder(width[1]), nets.TextEncoder(width[2])],
                         [nets.MNISTDecoder(width[0]), nets.SVHNDecoder(width[1]), nets.TextDecoder(width[2])],
                         [get_likelihood(config.likelihood, **image), get_likelihood(config.likelihood, **image),
                          get_likelihood("categorical")], config.latent_dim, names=names,
                         recon_weights=MST_RECON_WEIGHTS, style_dims=styles, **_posterior_options(config),
                         learn_scales=config.learn_scale)


def _build_celeba(config: ExperimentConfig, names: tuple[str, ...]) -> MultimodalVAE:
    from .networks import celeba

    styles = style_dims(config, names)
    width = [config.latent_dim + s for s in styles]
    return MultimodalVAE([celeba.FaceEncoder(width[0]), celeba.AttributeTextEncoder(width[1])],
                         [celeba.FaceDecoder(width[0]), celeba.AttributeTextDecoder(width[1])],
                         [get_likelihood("laplace", scale=config.likelihood_scale), get_likelihood("categorical")],
                         config.latent_dim, names=names, recon_weights=CELEBA_RECON_WEIGHTS,
                         style_dims=styles, **_posterior_options(config),
                         learn_scales=config.learn_scale)


def _load_polymnist(config: ExperimentConfig, split: str):
    from .data.polymnist import load_polymnist

    return load_polymnist(split, config.data_variant, seed=config.data_seed)


def _load_mst(config: ExperimentConfig, split: str):
    from .data.mnist_svhn_text import load_mnist_svhn_text

    return load_mnist_svhn_text(split, config.data_variant, config.data_source or "street", config.data_seed)


def _load_celeba(config: ExperimentConfig, split: str):
    from .data.celeba import load_celeba

    return load_celeba(split, config.data_root or None)


DATASETS: dict[str, DatasetSpec] = {
    "polymnist": DatasetSpec("polymnist", ("compact", "paper"),
                             ("astronaut", "chelsea", "coffee", "ihc", "motorcycle"),
                             _load_polymnist, _build_polymnist, judged=True),
    "mnist-svhn-text": DatasetSpec("mnist-svhn-text", ("mst",), ("mnist", "svhn", "text"), _load_mst, _build_mst,
                                   judged=True),
    "celeba": DatasetSpec("celeba", ("celeba",), ("image", "text"), _load_celeba, _build_celeba),
}


# ----------------------------------------------------------------------------------------------- the config


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
    missing: str = "none"  # which modalities training tuples have: none, mcar:<rate>, complete:<fraction>
    missing_seed: int = 0
    drop_incomplete: bool = False  # the baseline: train only on the complete tuples
    # model
    architecture: str = "compact"
    latent_dim: int = 64
    style_dim: int = 0  # modality-specific latent per modality (0: none; CelebA: 32)
    style_modalities: str = ""  # comma-separated modalities that get the style latent ("": every modality)
    likelihood: str = "laplace"
    likelihood_scale: float = 0.75  # the fixed scale, or the starting value of a learned one
    learn_scale: bool = False  # learn each modality's likelihood scale (a calibrated decoder)
    optimal_scale: bool = False  # with learn_scale: set it to its maximum-likelihood value on every batch
    learn_prior: bool = False  # learn the prior's standard deviations (Shi et al. 2019; mixture models only)
    # objective: the named objective's record, with these options overriding it where they are not None
    objective: str = "mopoe"
    beta: float = 2.5
    kl_anneal_steps: int = 0
    estimator: str | None = None
    num_samples: int | None = None
    sampling: str | None = None
    max_subsets: int | None = None
    unimodal_terms: bool | None = None
    random_subset_terms: int | None = None
    prior_expert: str | None = None
    subset_posterior: str | None = None
    free_bits: float | None = None
    tc_ratio: float | None = None  # MVTCAE: the weight of the total-correlation terms (5/6 by default)
    cross_style: str | None = None  # MMVAE+: "auxiliary" styles for the modalities a term does not encode
    iw_bound: str | None = None  # iwae/dreg: "looser" (mean over components outside the log) or "tight"
    # optimisation
    lr: float = 1e-3
    lr_warmup_steps: int = 0  # linear warm-up from 0 over this many steps
    lr_schedule: str = "constant"  # "constant", or "cosine": decay to lr * lr_final over the run's steps
    lr_final: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
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
    eval_coherence: int = 0  # test tuples for per-epoch coherence with the shipped classifiers (0: skip)
    eval_every_epochs: int = 1  # evaluate (test bound, coherence) after every n-th epoch and the last one
    checkpoint_every_epochs: int = 1  # checkpoint after every n-th epoch, the last one and a stop
    checkpoint_every_steps: int = 0  # extra checkpoints within an epoch (0: only at epoch ends)
    keep_checkpoints: int = 2
    time_limit_minutes: float = 0.0  # stop with a checkpoint after this much training time (0: none)
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """A config from ``to_dict()`` output; configs saved by earlier versions load too (``prior_expert=""``
        and the explicit ``estimator="elbo"``, ``num_samples=1``, ``sampling="stratified"`` they stored are
        what the named objectives use)."""
        check_fields(values)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if values.get("prior_expert") == "":
            values["prior_expert"] = None
        return cls(**values)

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def objective_config(self) -> ObjectiveConfig:
        """The named objective's record with this config's options applied (``beta``, ``kl_anneal_steps`` and
        every option that is not ``None``)."""
        options = {name: getattr(self, name) for name in OBJECTIVE_OPTIONS if hasattr(self, name)}
        options = {k: v for k, v in options.items() if v is not None}
        return replace(OBJECTIVES[self.objective], **options)

    @property
    def resolved_prior_expert(self) -> str:
        return self.objective_config.prior_expert

    def make_objective(self) -> Objective:
        return Objective(self.objective_config)


def _validate(config: ExperimentConfig) -> None:
    """Raise a ValueError naming the field and the valid values for the first invalid field."""
    c = config
    if c.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {c.dataset!r}; choose one of {', '.join(DATASETS)}")
    for name, value, valid in (("architecture", c.architecture, c.spec.architectures),
                               ("objective", c.objective, tuple(OBJECTIVES)),
                               ("precision", c.precision, PRECISIONS),
                               ("likelihood", c.likelihood, tuple(LIKELIHOODS)),
                               ("lr_schedule", c.lr_schedule, LR_SCHEDULES)):
        if value not in valid:
            suffix = f" for {c.dataset}" if name == "architecture" else ""
            raise ValueError(f"unknown {name} {value!r}{suffix}; choose one of {', '.join(valid)}")
    if not (c.device in ("auto", "cpu", "cuda") or (c.device.startswith("cuda:") and c.device[5:].isdigit())):
        raise ValueError(f"unknown device {c.device!r}; choose one of {', '.join(DEVICES)}")
    _validate_ranges(c)
    if c.eval_coherence and not c.spec.judged:
        raise ValueError(f"eval_coherence needs shipped digit classifiers, which {c.dataset} has not; use 0")
    from .data.missing import parse_missing

    parse_missing(c.missing, len(c.spec.modalities))
    objective = c.objective_config
    if c.optimal_scale and not c.learn_scale:
        raise ValueError("optimal_scale fits the likelihood scales that learn_scale makes free: set learn_scale=true "
                         "too (and likelihood=gaussian or laplace)")
    if c.learn_prior and (objective.prior_expert != "never" or objective.divergence != "prior"):
        able = [name for name, o in OBJECTIVES.items() if o.prior_expert == "never" and o.divergence == "prior"]
        raise ValueError(f"learn_prior needs a model without the N(0, I) expert in its products, trained against "
                         f"the prior itself; objective {c.objective!r} is not one: choose one of {', '.join(able)}")
    if c.style_modalities:
        if not c.style_dim:
            raise ValueError("style_modalities chooses which modalities get a style latent: set style_dim > 0 too")
        style_dims(c, c.spec.modalities)
    if objective.cross_style == "auxiliary" and not c.style_dim:
        raise ValueError(f"objective {c.objective!r} with cross_style='auxiliary' (MMVAE+) needs modality-specific "
                         "latents: set style_dim > 0 (the MMVAE+ experiments use 32)")


def _validate_ranges(c: ExperimentConfig) -> None:
    positive = ("latent_dim", "batch_size", "eval_every_epochs", "checkpoint_every_epochs", "keep_checkpoints")
    non_negative = ("style_dim", "epochs", "max_steps", "threads", "eval_samples", "eval_coherence",
                    "checkpoint_every_steps", "train_subset", "kl_anneal_steps", "data_seed", "lr_warmup_steps",
                    "missing_seed")
    for name in positive:
        if getattr(c, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(c, name)}")
    for name in non_negative:
        if getattr(c, name) < 0:
            raise ValueError(f"{name} must be non-negative, got {getattr(c, name)}")
    for name in ("lr", "likelihood_scale"):
        if not (math.isfinite(getattr(c, name)) and getattr(c, name) > 0):
            raise ValueError(f"{name} must be a finite positive number, got {getattr(c, name)}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(c, name) < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {getattr(c, name)}")
    if not 0.0 <= c.lr_final <= 1.0:
        raise ValueError(f"lr_final (a fraction of lr) must lie in [0, 1], got {c.lr_final}")
    if not (math.isfinite(c.time_limit_minutes) and c.time_limit_minutes >= 0):
        raise ValueError(f"time_limit_minutes must be finite and non-negative (0: no limit), got "
                         f"{c.time_limit_minutes}")


def check_fields(names: Any) -> None:
    """Raise a ValueError naming the unknown config fields among ``names`` and listing the valid ones."""
    known = {f.name for f in fields(ExperimentConfig)}
    unknown = set(names) - known
    if unknown:
        raise ValueError(f"unknown config fields {sorted(unknown)}; valid: {', '.join(sorted(known))}")


def build_model(config: ExperimentConfig, names: Sequence[str] | None = None) -> MultimodalVAE:
    """The model a config describes (random initialisation from the current torch seed); ``names`` default to
    the data set's modality names."""
    return config.spec.build(config, tuple(names) if names is not None else config.spec.modalities)


def load_dataset(config: ExperimentConfig, split: str):  # -> MultimodalDataset
    """The ``split`` (``"train"``/``"test"``) of the config's data set and variant."""
    return config.spec.load(config, split)


# --------------------------------------------------------------------------------------- named experiments


#: The CPU recipe of the fast and compact PolyMNIST experiments (measured in benchmarks/time_to_coherence.py
#: against the paper's setup): a Gaussian likelihood whose scale the model learns (a calibrated decoder) instead
#: of the paper's fixed Laplace scale 0.75, and batches of 64 (more steps per CPU minute).
CPU_RECIPE: dict[str, Any] = {"likelihood": "gaussian", "likelihood_scale": 0.25, "learn_scale": True,
                              "batch_size": 64, "lr": 1e-3}
#: The FAST MoPoE's and MMVAE's recipe: the CPU recipe with each batch scored at its maximum-likelihood scale
#: (Rybkin et al.'s optimal sigma: no scale to learn first), Adam at 3e-3, and Adam's second-moment average over
#: about 100 steps instead of 1,000 (beta2 0.99). On the FAST MoPoE the optimal scale and the larger step reach in 4
#: minutes what the CPU recipe reaches in 6; beta2 0.99 is a small lever (+0.03-0.05 coherence from one input at 2,790
#: steps on an Intel Xeon, two seeds; on an AMD EPYC earlier by about 0.03 near 2,000 steps and a tie from 2,600 on;
#: benchmarks/README.md). The shipped compact models use the CPU recipe.
FAST_RECIPE: dict[str, Any] = {**CPU_RECIPE, "optimal_scale": True, "lr": 3e-3, "adam_beta2": 0.99}
#: The FAST MVAE's recipe: the CPU recipe with Adam at 3e-3 (beta2 0.99) but a learned scale. The optimal scale
#: slowed the MVAE down at every learning rate measured (and diverged with Adam at 3e-3); the larger step alone
#: helped on two seeds, beta2 0.99 a little more (benchmarks/README.md).
FAST_MVAE_RECIPE: dict[str, Any] = {**CPU_RECIPE, "lr": 3e-3, "adam_beta2": 0.99}
#: FAST training length per model (epochs of the 6k FAST tuples, 93 steps each): the MoPoE gets the most (4,185
#: steps, under 5 minutes on two CPU cores), so that the book's own MoPoE learns the digit (coherence about 0.5
#: from one input) within the whole book's 15-minute budget.
FAST_EPOCHS: dict[str, int] = {"mopoe": 45, "mvae": 6, "mmvae": 6}
#: How many times each FAST model is evaluated during training (evenly spaced; the last at its final epoch): the
#: MoPoE three times (a curve for chapter 2), the others, at chance after their 558 steps, once at the end.
FAST_EVALUATIONS: dict[str, int] = {"mopoe": 3, "mvae": 1, "mmvae": 1}


def _registry() -> dict[str, ExperimentConfig]:
    out = {}
    for model in ("mopoe", "mvae", "mmvae"):
        out[f"polymnist-fast-{model}"] = ExperimentConfig(
            name=f"polymnist-fast-{model}", data_variant="fast", architecture="compact", latent_dim=64,
            objective=model, epochs=FAST_EPOCHS[model], eval_samples=1000, eval_coherence=500,
            eval_every_epochs=FAST_EPOCHS[model] // FAST_EVALUATIONS[model],
            **(FAST_MVAE_RECIPE if model == "mvae" else FAST_RECIPE))
        out[f"polymnist-compact-{model}"] = ExperimentConfig(
            name=f"polymnist-compact-{model}", data_variant="full", architecture="compact", latent_dim=64,
            objective=model, epochs=24, eval_samples=2000, eval_coherence=1000, eval_every_epochs=2, **CPU_RECIPE)
        out[f"polymnist-full-{model}"] = ExperimentConfig(
            name=f"polymnist-full-{model}", data_variant="full", architecture="paper", latent_dim=512,
            objective=model, lr=5e-4, epochs=300, eval_samples=10000, eval_coherence=2000, eval_every_epochs=5,
            checkpoint_every_epochs=5, channels_last=True, cudnn_benchmark=True)
        for scale, epochs in (("fast", 3), ("full", 200)):
            out[f"mst-{scale}-{model}"] = ExperimentConfig(
                name=f"mst-{scale}-{model}", dataset="mnist-svhn-text", data_variant=scale, architecture="mst",
                latent_dim=20, objective=model, lr=1e-3, epochs=epochs, eval_samples=1000 if scale == "fast" else 10000)
        out[f"mst-compact-{model}"] = ExperimentConfig(
            name=f"mst-compact-{model}", dataset="mnist-svhn-text", data_variant="compact", architecture="mst",
            latent_dim=20, objective=model, epochs=20, eval_samples=2000, eval_coherence=1000, eval_every_epochs=2,
            **CPU_RECIPE)
        # CelebA (download it yourself: mopoe_lib/data/celeba.py): 20 shared + 32 modality-specific dimensions
        out[f"celeba-full-{model}"] = ExperimentConfig(
            name=f"celeba-full-{model}", dataset="celeba", data_variant="full", architecture="celeba", latent_dim=20,
            style_dim=32, objective=model, lr=5e-4, epochs=250, eval_samples=2000)
    # relatives of the three: mmJSD (Sutter et al. 2020) and MVTCAE (Hwang et al. 2021) with the same networks and
    # recipe, and the MMVAE trained as Shi et al. (2019) trained it (DReG, K = 30 samples per component, learned
    # prior; the paper-scale run wants a GPU)
    for scale in ("fast", "compact", "full"):
        base = out[f"polymnist-{scale}-mmvae"]
        out[f"polymnist-{scale}-mmjsd"] = replace(base, name=f"polymnist-{scale}-mmjsd", objective="mmjsd")
        out[f"polymnist-{scale}-mvtcae"] = replace(base, name=f"polymnist-{scale}-mvtcae", objective="mvtcae")
    out["polymnist-full-mmvae-iw"] = replace(out["polymnist-full-mmvae"], name="polymnist-full-mmvae-iw",
                                             objective="mmvae_iw", learn_prior=True)
    # MMVAE+ (Palumbo et al. 2023): the latent split into 32 shared and 32 modality-specific dimensions and beta
    # 2.5, as in the authors' PolyMNIST runs (250 epochs, one importance sample from every component; they use
    # ResNet networks and Laplace distributions, here the other models' networks). FAST and compact draw one
    # component per row (the same objective in expectation, a fifth of the decoding: the CPU recipe's care)
    for scale in ("fast", "compact", "full"):
        base = out[f"polymnist-{scale}-mmvae"]
        paper = {"epochs": 250, "lr": 1e-3, "estimator": "iwae", "num_samples": 1} if scale == "full" else {}
        out[f"polymnist-{scale}-mmvae-plus"] = replace(
            base, name=f"polymnist-{scale}-mmvae-plus", objective="mmvae_plus", latent_dim=32, style_dim=32, **paper)
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


#: The incomplete-data study (chapter 8): fractions of complete training tuples, and the training length of every
#: run in epochs of the full 60k tuples (about 7,500 optimiser steps of 64, where the compact MoPoE and MMVAE
#: have left chance on complete data: coherence about 0.55 from one input, the MVAE about 0.3)
STUDY_FRACTIONS: tuple[float, ...] = (1.0, 0.5, 0.2)
STUDY_EPOCHS = 8


def incomplete_study_config(model: str, fraction: float, drop_incomplete: bool = False, seed: int = 0,
                            **overrides: Any) -> ExperimentConfig:
    """``polymnist-compact-<model>`` trained with only ``fraction`` of the tuples complete (``complete:<fraction>``:
    every other tuple lacks a random non-empty proper subset of its modalities), for the same number of optimiser
    steps whatever the data: on all tuples (each tuple's objective uses what it has), or with ``drop_incomplete``
    on the complete tuples only (the baseline; :data:`STUDY_EPOCHS` / ``fraction`` epochs of the smaller set).
    Evaluated (and checkpointed) about four times per run."""
    epochs = round(STUDY_EPOCHS / fraction) if drop_incomplete else STUDY_EPOCHS
    every = max(2, round(epochs / 4))
    return get_config(f"polymnist-compact-{model}", missing=f"complete:{float(fraction)}", seed=seed,
                      drop_incomplete=drop_incomplete, epochs=epochs, eval_every_epochs=every,
                      checkpoint_every_epochs=every, **overrides)


def study_tag(model: str, fraction: float, drop_incomplete: bool = False) -> str:
    """The folder name of one study run: ``mopoe-complete-0.2`` or ``mopoe-complete-0.2-drop``."""
    return f"{model}-complete-{float(fraction)}{'-drop' if drop_incomplete else ''}"


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _field_types() -> dict[str, tuple[type, ...]]:
    """Each field's accepted types, ``NoneType`` included for the optional ones (resolved annotations)."""
    hints = typing.get_type_hints(ExperimentConfig)
    out = {}
    for name, hint in hints.items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else ()
        out[name] = args or (typing.get_origin(hint) or hint,)
    return out


def parse_value(key: str, raw: str) -> Any:
    """One ``--set key=value`` value, converted to the field's type; ``none`` sets an optional field back to
    its default (the objective's own). Errors name the key and the expected type."""
    check_fields([key])
    kinds = _field_types()[key]
    if type(None) in kinds and raw.strip().lower() in ("none", "null", "default"):
        return None
    kind = next(k for k in kinds if k is not type(None))
    if kind is dict:
        raise ValueError(f"{key} cannot be set from the command line")
    if kind is bool:
        if raw.lower() not in _TRUE + _FALSE:
            raise ValueError(f"{key} expects true or false, got {raw!r}")
        return raw.lower() in _TRUE
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{key} expects {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    return raw


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-3", "compile=true"]`` -> typed values, using the dataclass field types."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = parse_value(key.strip(), raw)
    return out
