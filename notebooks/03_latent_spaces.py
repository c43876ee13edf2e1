# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Latent spaces: what each subset's posterior knows
#
# **Goal.** A multimodal VAE gives a posterior for *every* subset of modalities. Here we look at those
# posteriors directly: where the posterior means of test tuples lie (coloured by digit), how well a linear
# classifier reads the digit off them, and how the posterior *sharpens* as modalities are added.
#
# **Outline.**
# 1. Load the three models (shipped compact models, or the runs of chapter 2).
# 2. Posterior means and variances for all 31 subsets at once.
# 3. 2-D embeddings: PCA for every model and a growing subset; t-SNE for a closer look.
# 4. Interactive: pick a model and the input modalities, see the subset posterior.
# 5. Sharpening: posterior variance and linear-probe accuracy against the number of inputs.

# %% Setup
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.manifold import TSNE

from mopoe_lib.book import book_models, book_setup
from mopoe_lib.data import load_polymnist
from mopoe_lib.evaluation import latent_probe, subset_posteriors
from mopoe_lib.fusion import powerset
from mopoe_lib.viz import subset_picker

MODE, FAST, SEED, DEVICE = book_setup(seed=0)
USE_PRETRAINED = True  # the shipped compact models when present; False: the runs of chapter 2
N_POINTS = 1000 if FAST else 5000  # test tuples embedded

# %% [markdown]
# ## 1. The models
#
# `book_models` returns the shipped compact models (trained on the full data set on CPU) when they exist, and
# otherwise the runs of chapter 2 (training them if chapter 2 has not run). Of those FAST runs only the MoPoE
# has begun to carry the digit (after 558 steps the MVAE has barely left the phase where the latent code ignores
# it and the MMVAE has not), so expect blurry clusters from them; the shipped models show the structure this
# chapter is about.

# %%
runs = book_models("fast" if FAST else "full", use_pretrained=USE_PRETRAINED, seed=SEED)
MODELS = tuple(runs)
for name, run in runs.items():
    print(f"{name:6s} source={run.source:8s} latent={run.model.latent_dim}  epochs={run.metrics[-1]['epoch']}")
names = runs["mopoe"].model.names
M = len(names)
test = load_polymnist("test", "fast" if FAST else "full")
test = test.subset(torch.arange(min(N_POINTS, len(test))))
labels = test.labels.numpy()

# %% [markdown]
# ## 2. All subset posteriors at once
#
# Each model encodes every modality once, and the posteriors given all 31 subsets come from those unimodal
# experts in one batched operation. *How* they combine is part of the model, as in the authors' code: the MVAE
# and the MoPoE multiply the experts of a subset (with the prior as an extra expert where the model uses one);
# the MMVAE, whose objective never multiplies experts, mixes them: given S, z comes from one of S's experts,
# chosen at random. A mixture is not Gaussian, so for it we keep the mixture's mean and per-dimension variance.
# Shape of each: `(subsets, points, latent)` (`model.moments_given`).

# %%
SUBSETS = powerset(M)
subset_index = {tuple(np.flatnonzero(s.numpy())): k for k, s in enumerate(SUBSETS)}
posteriors = {name: subset_posteriors(run.model, test, SUBSETS) for name, run in runs.items()}
print({name: tuple(mu.shape) for name, (mu, _) in posteriors.items()})

# %% [markdown]
# ## 3. Where the digit lives
#
# A posterior that knows the digit puts tuples of the same digit together, but not necessarily along the
# directions a picture shows first. **PCA** keeps the two directions along which the posterior means vary most
# across tuples; in PolyMNIST most of that variation is each modality's own background (which part of the
# photograph, how bright, how colourful), which no other modality shares. The digit can then sit in directions
# of smaller variance: a linear probe finds them, PCA does not show them. **Linear discriminant analysis** (LDA)
# shows them: it looks for the directions that separate the digits, fitted here on the posterior means of 1000
# *training* tuples (so the test tuples drawn are held out). Read a row from left to right: one modality, then
# all five, each seen by PCA and by LDA.

# %%
train_points = load_polymnist("train", "fast" if FAST else "full").subset(torch.arange(1000))
train_labels = train_points.labels.numpy()
train_posteriors = {name: subset_posteriors(run.model, train_points, SUBSETS)[0] for name, run in runs.items()}
views = [((0,), "PCA"), ((0,), "LDA"), (tuple(range(M)), "PCA"), (tuple(range(M)), "LDA")]
fig, axes = plt.subplots(len(MODELS), len(views), figsize=(2.6 * len(views), 2.5 * len(MODELS)), squeeze=False,
                         layout="constrained")
for r, name in enumerate(MODELS):
    for c, (members, method) in enumerate(views):
        k = subset_index[members]
        fitted = train_posteriors[name][k].numpy()
        projection = PCA(2, random_state=SEED).fit(fitted) if method == "PCA" else \
            LinearDiscriminantAnalysis(n_components=2).fit(fitted, train_labels)
        xy = projection.transform(posteriors[name][0][k].numpy())
        ax = axes[r][c]
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=3, vmin=-0.5, vmax=9.5)
        ax.set_xticks([])
        ax.set_yticks([])
        if r == 0:
            inputs = names[members[0]] if len(members) == 1 else "all five"
            ax.set_title(f"{method}, q(z | {inputs})", fontsize=9)
        if c == 0:
            ax.set_ylabel(name)
fig.colorbar(points, ax=axes, ticks=range(10), label="digit", shrink=0.6)
plt.show()

# %% [markdown]
# t-SNE keeps neighbourhoods instead of directions. Its neighbourhoods are those of the whole 64-dimensional
# mean, so they group tuples by whatever dominates the distances: the digit only where the posterior encodes
# little else. Here the MoPoE's posterior from one modality and from all five.

# %%
fig, axes = plt.subplots(1, 2, figsize=(8.5, 3.8), layout="constrained")
for ax, members in zip(axes, [(0,), tuple(range(M))]):
    xy = TSNE(2, init="pca", perplexity=30, random_state=SEED).fit_transform(
        posteriors["mopoe"][0][subset_index[members]].numpy())
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
    ax.set_title(f"MoPoE, t-SNE of q(z | {', '.join(names[m] for m in members)})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(points, ax=axes, ticks=range(10), label="digit", shrink=0.8)
plt.show()

# %% [markdown]
# ## 4. Pick a subset
#
# Choose a model and tick the input modalities. The left panel projects that subset's posterior means into the
# model's full-set PCA axes; the right panel shows, for the first 12 test tuples, the posterior mean and one
# standard deviation along the first PCA axis, for your subset (colour) and for the full set (grey): adding
# modalities moves the mean and shrinks the interval.

# %%
pcas = {name: PCA(2, random_state=SEED).fit(posteriors[name][0][subset_index[tuple(range(M))]].numpy())
        for name in MODELS}


def draw_subset(model_name: str, members: tuple[int, ...]) -> None:
    mu, logvar = posteriors[model_name]
    pca = pcas[model_name]
    k, full = subset_index[members], subset_index[tuple(range(M))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    xy = pca.transform(mu[k].numpy())
    left.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=5, vmin=-0.5, vmax=9.5)
    left.set_title(f"{model_name}: q(z | {', '.join(names[m] for m in members)})", fontsize=10)
    axis = torch.from_numpy(pca.components_[0]).float()
    for kk, colour, offset in [(full, "0.6", 0.15), (k, "C3", -0.15)]:
        centre = (mu[kk, :12] - torch.from_numpy(pca.mean_).float()) @ axis
        std = (logvar[kk, :12].exp() @ axis.square()).sqrt()
        right.errorbar(np.arange(12) + offset, centre.numpy(), yerr=std.numpy(), fmt="o", color=colour,
                       label="all five" if kk == full else "chosen subset")
    right.set_xticks(range(12), [str(int(y)) for y in test.labels[:12]])
    right.set_xlabel("test tuple (true digit)")
    right.set_ylabel("first PCA axis")
    right.legend(fontsize=8)
    plt.show()


# %%
model_choice = widgets.ToggleButtons(options=MODELS, value="mopoe", description="model")
display(subset_picker(names, lambda members, model: draw_subset(model, members), selected=(0,),
                      controls={"model": model_choice}))

# %% [markdown]
# ## 5. How the posterior sharpens, and what it knows
#
# Two numbers per subset: the average posterior variance (over test tuples and latent dimensions), and the test
# accuracy of a linear probe (logistic regression trained on the posterior means of 500 training tuples;
# the protocol of Sutter et al. 2021). Both are averaged over the subsets of each size.
#
# What to expect from trained models: a product of experts sharpens with every modality (precisions add up), so
# the MVAE's and the MoPoE's variances fall with the number of inputs; the MMVAE's mixture does not sharpen
# (its variance is the experts' average variance plus the spread between their means).

# %%
train = load_polymnist("train", "fast" if FAST else "full")
sizes = SUBSETS.sum(dim=1).numpy()
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
probe_table = {}
for name, run in runs.items():
    variance = posteriors[name][1].exp().mean(dim=(1, 2)).numpy()  # (subsets,)
    left.plot(range(1, M + 1), [variance[sizes == k].mean() for k in range(1, M + 1)], "o-", label=name)
    rows = latent_probe(run.model, train, test, SUBSETS, num_train=500, seed=SEED)
    accuracy = np.array([row["accuracy"] for row in rows])
    probe_table[name] = [accuracy[sizes == k].mean() for k in range(1, M + 1)]
    right.plot(range(1, M + 1), probe_table[name], "o-", label=name)
left.set_yscale("log")
left.set_title("mean posterior variance")
right.set_title("linear probe accuracy on posterior means")
right.axhline(0.1, color="0.5", linestyle=":", label="chance")
for ax in (left, right):
    ax.set_xlabel("number of input modalities")
    ax.set_xticks(range(1, M + 1))
    ax.legend(fontsize=8)
plt.show()
print("probe accuracy by number of inputs:", {n: [round(float(a), 3) for a in v] for n, v in probe_table.items()})

# %% [markdown]
# ## Summary
#
# - Every subset's posterior comes from the same unimodal experts: the MVAE and the MoPoE multiply a subset's
#   experts (PoE), the MMVAE mixes them (MoE); the MoPoE's *joint* posterior is in turn a mixture of products.
# - With more modalities a product posterior sharpens; whether it also *knows more* (the probe) depends on
#   what the objective asked of it during training.
# - The same probe protocol, for every subset and model, is part of the metric suite
#   (`python -m mopoe_lib.evaluation`), whose tables chapter 7 compares with the paper.
#
# **Exercises.** (1) Replace the PCA axes of the full set with those of your subset: what changes in the
# picture, and why is a shared frame better for comparison? (2) Train the probe on 50 instead of 500 tuples.
