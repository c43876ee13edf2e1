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
# # 2. Training MVAE, MMVAE and MoPoE on PolyMNIST
#
# **Goal.** Train the three models of chapter 1 on PolyMNIST with the *same* networks, data and optimiser, so
# that the only difference is the objective, and look at what each objective does to the two terms of the
# ELBO: reconstruction and KL.
#
# **Outline.**
# 1. The three objectives side by side.
# 2. Train (or load the shipped models).
# 3. Learning curves: reconstruction and KL, train and test.
# 4. A first look at cross-modal generation.
#
# The same training function runs from the command line (`python -m mopoe_lib.train polymnist-fast-mopoe`),
# writes safetensors checkpoints atomically, and resumes interrupted runs bit for bit.

# %% Setup
import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from mopoe_lib.book import book_setup, load_or_train
from mopoe_lib.config import get_config
from mopoe_lib.data import load_polymnist
from mopoe_lib.integrity import read_json
from mopoe_lib.runs import find_pretrained, read_metrics
from mopoe_lib.settings import repo_root
from mopoe_lib.viz import image_grid

MODE, FAST, SEED, DEVICE = book_setup(seed=0)
MODELS = ("mvae", "mmvae", "mopoe")
# The switch: load the compact models shipped in data/pretrained/ when they exist (trained on CPU on the full
# data set), instead of training here. Set to False to always train in this notebook.
USE_PRETRAINED = True
SCALE = "fast" if FAST else "full"  # FAST: 6k tuples, compact nets, minutes on CPU; FULL: the paper (GPU)
print({m: bool(find_pretrained(f"polymnist-compact-{m}")) for m in MODELS}, "<- shipped models available")

# %% [markdown]
# ## 1. Three objectives, one code path
#
# All three models use one encoder and one decoder per modality and the Laplace likelihood with scale 0.75.
# Their objectives differ only in the subsets over which the experts are fused (chapter 1):
#
# | model | objective per tuple $X$ |
# |---|---|
# | **MVAE** | $\mathcal{L}(X; \mathrm{PoE}_{\{1..5\}}) + \sum_m \mathcal{L}(x_m; q_m)$ : the joint PoE ELBO plus five unimodal ELBOs |
# | **MMVAE** | $\mathbb{E}_{q_{\text{MoE}}}[\log p(X \mid z)] - \beta\, \frac{1}{5}\sum_m \mathrm{KL}(q_m \,\|\, p)$ : every modality is reconstructed from every *single* one |
# | **MoPoE** | $\mathbb{E}_{q_{\text{MoPoE}}}[\log p(X \mid z)] - \beta\, \frac{1}{31}\sum_S \mathrm{KL}(\mathrm{PoE}_S \,\|\, p)$ : from every *subset* |
#
# In the mixtures, each training row draws one component (stratified over the batch) and reconstructs *all*
# modalities from it. That is what forces a mixture model's posteriors to carry the shared information (the
# digit) and what MVAE's joint objective never asks for: the MVAE reconstructs $X$ from the joint posterior,
# and each modality only from itself.

# %%
configs = {m: get_config(f"polymnist-{SCALE}-{m}", seed=SEED) for m in MODELS}
for name, cfg in configs.items():
    print(f"{name:6s} objective={cfg.objective:6s} prior expert={cfg.resolved_prior_expert:8s} "
          f"latent={cfg.latent_dim} arch={cfg.architecture} beta={cfg.beta} lr={cfg.lr} "
          f"batch={cfg.batch_size} epochs={cfg.epochs} data={cfg.data_variant}")

# %% [markdown]
# ## 2. Train, or load the shipped models
#
# `load_or_train` takes the shipped model when the switch allows it and says so; otherwise it trains (or
# resumes an interrupted run in `runs/`). In FAST mode training all three takes a few minutes on a laptop CPU.

# %%
runs = {}
for name in MODELS:
    runs[name] = load_or_train(configs[name], use_pretrained=USE_PRETRAINED,
                               pretrained_name=f"polymnist-compact-{name}")
for name, run in runs.items():
    speed = [r["samples_per_s"] for r in run.metrics if "samples_per_s" in r]
    print(f"{name:6s} source={run.source:8s} epochs={run.metrics[-1]['epoch']}  "
          f"test bound={run.metrics[-1].get('test/elbo', float('nan')):.1f}  "
          f"active units={run.metrics[-1].get('test/active_units', '?')}  "
          f"throughput={sum(speed) / max(len(speed), 1):.0f} samples/s")

# %% [markdown]
# *Active units* count the latent dimensions whose joint-posterior mean varies across test tuples (variance
# above 0.01): 0 means the posterior has collapsed onto the prior and the decoders ignore $z$. An MVAE can fall
# into this early on: its experts raise their variances until the product is the prior, after which their
# gradients vanish and the run cannot recover (seen with the compact MVAE on the full data, beta 2.5). KL
# annealing (`kl_anneal_steps`), the MVAE paper's remedy, starts with beta = 0 so the experts learn to encode
# first: annealed over 10 epochs, the same run kept a test KL of about 70 nats after reaching beta = 2.5
# (`data/runs/polymnist-compact-mvae/metrics.jsonl`).

# %% [markdown]
# ## 3. Learning curves
#
# We plot the two terms separately, per epoch, for training (averaged over the epoch) and test (at the end of
# each evaluated epoch: every epoch here, every fifth in the FULL configs). The *reconstruction* term is summed
# over the five modalities (higher is better); the *KL* term is the objective's own (the PoE's KL for MVAE's
# joint term, the average of subset KLs for the mixtures).
#
# What to look for: the MVAE usually reconstructs best (its joint posterior sees all five images), the MMVAE
# worst (every modality must be rebuilt from *one* image, which cannot know the other four backgrounds), and
# the MoPoE in between, with a KL that reflects how much each subset's posterior has to encode.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for name, run in runs.items():
    epochs = [r["epoch"] for r in run.metrics]
    line, = axes[0].plot(epochs, [r["train/recon"] for r in run.metrics], label=f"{name} train")
    axes[1].plot(epochs, [r["train/kl"] for r in run.metrics], color=line.get_color(), label=f"{name} train")
    tested = [r for r in run.metrics if "test/recon" in r]  # every `eval_every_epochs` epochs
    if tested:
        test_epochs = [r["epoch"] for r in tested]
        axes[0].plot(test_epochs, [r["test/recon"] for r in tested], "--", color=line.get_color(), label=f"{name} test")
        axes[1].plot(test_epochs, [r["test/kl"] for r in tested], "--", color=line.get_color(), label=f"{name} test")
axes[0].set_title("reconstruction: sum over modalities of log p(x_m | z)")
axes[1].set_title("KL term")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **Coherence against training time.** Runs with `eval_coherence` set (every PolyMNIST experiment of the book)
# also measure conditional coherence at the end of each epoch, on a fixed set of test tuples with the shipped
# classifiers, and log it with the wall-clock time. The curves show the phase in which the latent code ignores
# the digit (coherence at chance, 0.1) and, for runs that are long enough, the climb out of it.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name, run in runs.items():
    timed = [r for r in run.metrics if "test/coherence/1" in r]
    if not timed:
        print(f"{name}: no per-epoch coherence in this run's metrics (trained without eval_coherence)")
        continue
    elapsed = np.cumsum([r["seconds"] for r in run.metrics]) / 60  # training time, summed over resumptions
    minutes = [t for t, r in zip(elapsed, run.metrics, strict=True) if "test/coherence/1" in r]
    line, = ax.plot(minutes, [r["test/coherence/1"] for r in timed], marker="o", label=f"{name}, 1 input")
    ax.plot(minutes, [r["test/coherence/4"] for r in timed], "--", marker="o", color=line.get_color(),
            label=f"{name}, 4 inputs")
    note = read_json(run.folder / "config.json").get("note") if run.source == "shipped" else None
    if note:
        print(f"{name}: {note}")
ax.axhline(0.1, color="0.5", linestyle=":", label="chance")
ax.set_xlabel("training time (minutes, this machine)")
ax.set_ylabel("conditional coherence")
ax.set_ylim(0, 1)
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# **What a GPU buys.** The same objective with the paper's networks (latent 512, Adam 5e-4) ran for three and a
# half minutes on one H100 when a GPU was lent to this project (`benchmarks/results/h100/`; the run was stopped
# by its time limit, 77 of 300 epochs). Its coherence against wall-clock time, on a log axis, next to the final
# coherence of the shipped compact MoPoE after its hours on one CPU thread (evaluated on 2000 test tuples):

# %%
gpu_run = (repo_root() or Path(".")) / "benchmarks/results/h100/runs/polymnist-full-mopoe-tuned"
compact = find_pretrained("polymnist-compact-mopoe")
if not (gpu_run / "metrics.jsonl").is_file():
    print(f"{gpu_run} is not in this copy of the book (it ships with the repository checkout)")
else:
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    gpu_rows = [r for r in read_metrics(gpu_run) if "test/coherence/1" in r]
    for k, style in ((1, "-"), (4, "--")):
        ax.plot([r["wall_seconds"] / 60 for r in gpu_rows], [r[f"test/coherence/{k}"] for r in gpu_rows], style,
                marker="o", color="C3", label=f"FULL MoPoE, one H100, {k} input{'s' if k > 1 else ''}")
    if compact is not None and (compact / "evaluation/summary.csv").is_file():
        with open(compact / "evaluation/summary.csv") as f:
            final = {int(r["num_inputs"]): float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "coherence"}
        cpu_minutes = sum(r["seconds"] for r in read_metrics(compact)) / 60
        for k, marker in ((1, "s"), (4, "D")):
            ax.plot([cpu_minutes], [final[k]], marker, color="C0",
                    label=f"compact MoPoE, one CPU thread, {k} input{'s' if k > 1 else ''}")
    ax.axhline(0.1, color="0.5", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("wall-clock training time (minutes, log scale)")
    ax.set_ylabel("conditional coherence")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    plt.show()

# %% [markdown]
# ## 4. Cross-modal generation: a first look
#
# Each model infers $z$ from the first modality alone and decodes modality 2. A model whose unimodal posterior
# carries the digit should paint the *same digit* in modality 2's style. Chapter 4 measures this with
# classifiers (coherence); here we just look.
#
# Be warned: models trained for a few FAST epochs are still in the phase where the latent code carries almost
# nothing and every decoder paints its modality's *average background*. On PolyMNIST this phase lasts several
# epochs of the full data set, even on a GPU. The shipped models (trained for 3.6 to 4 hours on one CPU thread)
# are past it and draw digits; run this notebook with them (the switch at the top) to see the difference.

# %%
test = load_polymnist("test", "fast")
batch = test.get_batch(torch.arange(8))
generator = torch.Generator().manual_seed(SEED)
rows, labels = [[batch.x[0][i] for i in range(8)]], ["input m0"]
for name, run in runs.items():
    generated = run.model.generate(batch.x, [0], generator=generator)
    rows.append([generated[2][i].clamp(0, 1) for i in range(8)])
    labels.append(f"{name}: m2")
fig = image_grid(rows, row_labels=labels, col_labels=[str(int(y)) for y in batch.label],
                 title="modality 2 generated from modality 0")
plt.show()

# %% [markdown]
# ## Summary
#
# - One trainer serves all three models; they differ only in the objective (the fused subsets).
# - MVAE fits its joint posterior well but is never trained to generate one modality from another; the
#   mixtures are, at the cost of a looser bound (chapter 1).
# - Checkpoints are safetensors + JSON, written atomically; interrupted runs resume bit for bit; the same CLI
#   runs under `torchrun` for multi-GPU training.
#
# **Exercises.** (1) Train `polymnist-fast-mopoe` with `beta=1.0`: how do the curves change? (2) Interrupt
# `python -m mopoe_lib.train polymnist-fast-mvae` with Ctrl-C and continue it with `--resume`.
