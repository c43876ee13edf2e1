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
# # 8. Learning from incomplete data
#
# **Goal.** So far every training tuple had all five modalities, and missing modalities only appeared at test
# time, when we conditioned on a subset. Real multimodal data sets are rarely complete: a patient lacks one scan,
# a product lacks a photo. This chapter trains the three models on tuples that each lack a random set of
# modalities, and asks what the mean-function view of chapter 1 predicts and what the models do.
#
# **Outline.**
# 1. Missingness masks: which modalities each tuple has.
# 2. What each objective does with a tuple that lacks modalities, and what its bound bounds (the exact model).
# 3. Train one yourself.
# 4. The study: three models, three fractions of complete tuples, against a baseline that drops incomplete tuples.
# 5. What the mean-function view predicts, and whether the results agree.

# %% Setup
import ipywidgets as widgets
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from mopoe_lib.book import book_setup, load_or_train, record
from mopoe_lib.config import STUDY_FRACTIONS, get_config, incomplete_study_config, study_tag
from mopoe_lib.data import load_polymnist
from mopoe_lib.data.missing import availability
from mopoe_lib.evaluation import (
    SuiteOptions,
    coherence_by_num_inputs,
    collect_results,
    conditional_coherence,
    evaluated,
    load_classifiers,
    result_folders,
)
from mopoe_lib.integrity import MissingDataError
from mopoe_lib.objectives import OBJECTIVES, make_objective
from mopoe_lib.runs import find_pretrained, read_metrics
from mopoe_lib.settings import repo_root
from mopoe_lib.toy import LinearGaussianToy
from mopoe_lib.train import load_training_data
from mopoe_lib.viz import subset_picker

MODE, FAST, SEED, DEVICE = book_setup(seed=0)
MODELS = ("mvae", "mmvae", "mopoe")
NAMES = ("astronaut", "chelsea", "coffee", "ihc", "motorcycle")

# %% [markdown]
# ## 1. Missingness masks
#
# A mask says, for every training tuple, which modalities it has. The library draws it from a named mechanism and
# a seed (`--set missing=...`, `missing_seed=...`) and keeps it next to the data with its checksum:
#
# - `complete:<fraction>`: that fraction of the tuples is complete; every other tuple has a random non-empty
#   proper subset of the modalities (each of the $2^5 - 2 = 30$ equally likely);
# - `mcar:<rate>`: every modality is missing independently with that probability (a tuple that would lose all of
#   them is drawn again).
#
# Both mechanisms are *missing completely at random* (Rubin 1976): whether a modality is observed depends on
# nothing, observed or not. A model fitted to what is observed then sees an unbiased picture of the data; if,
# say, blurry photos went missing more often, it would not.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained",
                         gridspec_kw={"width_ratios": [1.3, 1.3, 1.6]})
masks = {"complete:0.2": availability("complete:0.2", 60_000, 5, seed=0),
         "mcar:0.3": availability("mcar:0.3", 60_000, 5, seed=0)}
for ax, (spec, mask) in zip(axes[:2], masks.items(), strict=True):
    ax.imshow(mask[:40].T.float(), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(5), NAMES, fontsize=8)
    ax.set_xlabel("training tuple")
    ax.set_title(f"{spec}: the first 40 tuples (black: observed)", fontsize=9)
for spec, mask in masks.items():
    counts = torch.bincount(mask.sum(dim=1), minlength=6)[1:].float() / len(mask)
    axes[2].plot(range(1, 6), counts, "o-", label=spec)
axes[2].set(xlabel="observed modalities per tuple", ylabel="fraction of tuples", xticks=range(1, 6))
axes[2].legend(fontsize=8)
plt.show()
for spec, mask in masks.items():
    print(f"{spec}: {mask.all(dim=1).float().mean():.3f} of the tuples complete, "
          f"{mask.float().mean():.3f} of all modality slots observed")

# %% [markdown]
# ## 2. What the objectives do with an incomplete tuple
#
# Chapter 1 wrote each model as a mean function over subsets of the modalities. A tuple that has only the
# modalities $A$ keeps exactly the subsets inside $A$: the MVAE fuses the experts of $A$ by their product, the
# MMVAE mixes the $|A|$ experts of $A$, the MoPoE mixes the products of all $2^{|A|} - 1$ non-empty subsets of
# $A$. Every objective reconstructs only what was observed, and the MVAE's extra unimodal terms run only for
# modalities in $A$. A modality that a tuple lacks contributes nothing to its loss, so its encoder and decoder get
# no gradient from that tuple (the tests check this for every objective).
#
# The library restricts each of an objective's subsets to the modalities the tuple has and keeps every distinct
# non-empty restriction once. For a tuple with astronaut, coffee and ihc observed:

# %%
observed = torch.tensor([True, False, True, True, False])
rows = []
for name in MODELS:
    subsets = make_objective(name).subsets(5)
    kept = sorted({tuple((s & observed).tolist()) for s in subsets if bool((s & observed).any())},
                  key=lambda r: (sum(r), [-v for v in r]))
    rows.append({"model": name, "components, complete tuple": len(subsets), "components, this tuple": len(kept),
                 "fused experts of each component": ", ".join(
                     "{" + ",".join(NAMES[m][:3] for m in range(5) if r[m]) + "}" for r in kept)})
display(pd.DataFrame(rows).set_index("model"))

# %% [markdown]
# **What the bound bounds.** With the modalities $A$ observed, each objective is a bound on
# $\log p(X_A)$, the marginal likelihood of what was observed, not of the complete tuple. On the exact
# linear-Gaussian model of chapter 1 (three modalities, the true decoders, the exact experts) we can check
# this row by row: the MVAE's product of the observed experts *is* the exact posterior of $z$ given $X_A$, so
# its bound equals $\log p(X_A)$ up to the Monte-Carlo error of one sample per tuple; the mixtures pay a gap,
# larger when more modalities are observed (a mixture of more components, most of them wider than the exact posterior
# given all of $A$).

# %%
toy = LinearGaussianToy.random(num_modalities=3, latent_dim=2, obs_dim=3, noise=0.6, seed=5)
N_TOY = 6000
_, xs = toy.sample(N_TOY, torch.Generator().manual_seed(SEED))
toy_mask = availability("complete:0.25", N_TOY, 3, seed=1)  # (tuples, modalities)
exact = toy.log_marginal_observed(xs, toy_mask)  # log p(X_A) of each tuple's observed modalities
observed_count = toy_mask.sum(dim=1)
gaps = {}
for name in MODELS:
    out = make_objective(name, unimodal_terms=False)(toy.model(OBJECTIVES[name].prior_expert), xs,
                                                     available=toy_mask.T.contiguous(),
                                                     generator=torch.Generator().manual_seed(SEED))
    gap = exact - out.per_row.detach()
    for k in (1, 2, 3):
        rows_k = gap[observed_count == k]
        gaps[(name, k)] = {"log p(X_A) - bound": float(rows_k.mean()),
                           "standard error": float(rows_k.std() / len(rows_k) ** 0.5), "tuples": len(rows_k)}
    record(f"toy_gap/{name}", float(gap.mean()))
gap_table = pd.DataFrame(gaps).T.rename_axis(["model", "observed modalities |A|"]).astype({"tuples": int})
display(gap_table.round(3))

# %% [markdown]
# ## 3. Train one yourself
#
# The missingness is a setting of any experiment. From the command line:
#
# ```bash
# python -m mopoe_lib.train polymnist-fast-mopoe --set missing=complete:0.2 --out runs/incomplete-0.2
# python -m mopoe_lib.evaluation runs/incomplete-0.2      # evaluated on the complete test tuples
# ```
#
# and `--set drop_incomplete=true` trains the baseline on the complete tuples only. Here, a short FAST run of
# the MoPoE with a fifth of the tuples complete (FULL: the study's runs of section 4 train instead). A run this
# short has not left the phase in which the latent code ignores the digit (chapter 2), so its coherence is near
# chance: it shows the machinery, section 4 shows the results.

# %%
demo = get_config("polymnist-fast-mopoe", missing="complete:0.2", epochs=2, eval_coherence=0, seed=SEED)
train_data, _ = load_training_data(demo)
print(f"training tuples: {len(train_data)}, complete: {int(train_data.available.all(dim=1).sum())}, "
      f"observed modality slots: {train_data.available.float().mean():.3f}")
if FAST:
    run = load_or_train(demo, use_pretrained=False, progress=False)
    test = load_polymnist("test", "fast").subset(torch.arange(300))
    demo_coherence = coherence_by_num_inputs(conditional_coherence(run.model, load_classifiers(), test, seed=SEED,
                                                                   progress=False))
    print("coherence on complete test tuples, by number of inputs:",
          {k: round(v, 3) for k, v in demo_coherence.items()})
    last = run.metrics[-1]
    print(f"test bound after {last['global_step']} steps: {last['test/elbo']:.0f} nats")

# %% [markdown]
# ## 4. The study
#
# Each of the three models (the compact networks and the CPU recipe of the shipped models, chapter 2) trained
# for the same number of optimiser steps, 7,500 (eight epochs of the 60,000 tuples; seed 0), with
#
# - all tuples complete (fraction 1.0);
# - half, or a fifth, of the tuples complete, every other tuple lacking a random non-empty proper subset of the
#   modalities, trained on all tuples (the objective uses what each has);
# - the baseline: the same data with the incomplete tuples dropped (a half or a fifth of the data, seen for
#   twice or five times as many epochs).
#
# Coherence is measured during training on 1,000 *complete* test tuples (the shipped classifiers judge the
# generations; the sampling error of each value is at most 0.016), next to the test bound (the ELBO on 2,000
# complete test tuples, in nats: a run that overfits its training tuples loses it). Where a model's run at fraction 1.0 is not in
# the study, its curve is the first 7,500 steps of the shipped model's training: the same configuration, seed and
# data order, run for more epochs (a constant learning rate, so its first eight epochs are an eight-epoch run;
# a mask of all ones trains exactly as no mask, weight for weight, which the tests check).
# Each finished run is also evaluated with the metric suite (coherence for every subset of inputs and linear
# probes of the latent). In FAST mode the chapter reads the shipped results (`data/results/incomplete/`: the three
# models at 20% complete tuples, on all tuples and on the complete ones only, and the MoPoE at 50% on all tuples;
# each run trained on one CPU thread beside another run, 15-25 minutes); in FULL mode it trains and evaluates
# every run of the design here.

# %%
STUDY = [(m, f, d) for m in MODELS for f in STUDY_FRACTIONS for d in (False, True) if not (d and f == 1.0)]
STEPS = 7_500
root = repo_root()
folder = root / ("data/results/incomplete" if FAST else "runs/incomplete")
if not FAST:
    for model, fraction, drop in STUDY:
        run = load_or_train(incomplete_study_config(model, fraction, drop, seed=SEED), use_pretrained=False,
                            run_dir=folder / study_tag(model, fraction, drop))
        evaluated(run.folder, SuiteOptions(test_samples=1000, likelihood_points=100, likelihood_samples=50),
                  progress=False)
curves = []
for model, fraction, drop in STUDY:
    run_folder = folder / study_tag(model, fraction, drop)
    rows = read_metrics(run_folder)
    source = "this study"
    if not rows and fraction == 1.0 and FAST and find_pretrained(f"polymnist-compact-{model}") is not None:
        rows = [r for r in read_metrics(find_pretrained(f"polymnist-compact-{model}")) if r["global_step"] <= STEPS]
        source = "the shipped model's first 7,500 steps"
    curves += [{"model": model, "fraction": fraction, "only_complete": drop, "source": source, "step": r["global_step"],
                "test bound": r["test/elbo"], **{k: r[f"test/coherence/{k}"] for k in (1, 2, 3, 4)}}
               for r in rows if "test/coherence/1" in r]
curves = pd.DataFrame(curves)
if curves.empty:
    raise MissingDataError(folder, "MOPOE_MODE=full python -m mopoe_lib.book 08   (trains and evaluates the study)")
final = curves.sort_values("step").groupby(["model", "fraction", "only_complete"]).tail(1)
present = set(zip(final.model, final.fraction, final.only_complete))
missing_runs = [study_tag(*key) for key in STUDY if key not in present]
print(f"{len(final)} of the study's {len(STUDY)} runs found in {folder.relative_to(root)}"
      + (f"; FULL mode trains the others ({', '.join(missing_runs)})" if missing_runs else ""))
TRAINED_ON = {False: "all tuples", True: "complete tuples only"}
final = final.assign(**{"trained on": final.only_complete.map(TRAINED_ON),
                         "test bound": final["test bound"].round(0).astype(int)})
display(final.set_index(["model", "trained on", "fraction"])[["step", 1, 2, 3, 4, "test bound", "source"]]
        .sort_index(ascending=[True, True, False]).round(3))
for _, row in final.iterrows():
    record(f"coherence1/{study_tag(row.model, row.fraction, row.only_complete)}", float(row[1]))

# %%
colors = {1.0: "black", 0.5: "C0", 0.2: "C3"}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained", sharey=True)
for ax, model in zip(axes, MODELS, strict=True):
    for (fraction, drop), rows in curves[curves.model == model].groupby(["fraction", "only_complete"]):
        ax.plot(rows.step, rows[1], "o--" if drop else "o-", color=colors[fraction], markersize=3,
                label=f"{fraction:.0%} complete{', those only' if drop else ''}")
    ax.axhline(0.1, color="0.6", linestyle=":")
    ax.set(title=model, xlabel="optimiser steps", ylim=(0, 1))
axes[0].set_ylabel("coherence from 1 input")
axes[-1].legend(fontsize=7, loc="upper left")
plt.show()

# %%
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained", sharey=True)
model_colors = {"mvae": "C0", "mmvae": "C1", "mopoe": "C2"}
for ax, k in zip(axes, (1, 4), strict=True):
    for (model, drop), rows in final.groupby(["model", "only_complete"]):
        if drop:  # the baseline at fraction 1.0 is the complete-data run itself
            rows = pd.concat([rows, final[(final.model == model) & (final.fraction == 1.0)]])
        rows = rows.sort_values("fraction")
        ax.plot(rows.fraction, rows[k], "o--" if drop else "o-", color=model_colors[model],
                label=f"{model}, {'complete tuples only' if drop else 'all tuples'}")
    ax.axhline(0.1, color="0.6", linestyle=":")
    ax.set(title=f"after {STEPS} steps, from {k} input{'s' if k > 1 else ''}", ylim=(0, 1),
           xlabel="fraction of complete training tuples", xticks=STUDY_FRACTIONS)
axes[0].set_ylabel("coherence")
axes[1].legend(fontsize=7)
plt.show()

# %% [markdown]
# **The metric suite on the finished runs**: the linear probe reads the digit from the posterior mean given one
# input (mean over the five) and given all five, and the coherence by number of inputs averages every subset.

# %%
found = result_folders([folder])
if not found:
    raise MissingDataError(folder / "<run>" / "evaluation",
                           "python -m mopoe_lib.evaluation <run folder> --test-samples 1000 --likelihood-points 100 "
                           "--likelihood-samples 50")


def study_rows(table: str) -> pd.DataFrame:
    """One table of the suite for every evaluated study run, with its fraction and training set."""
    rows = pd.DataFrame(collect_results(found, table=table))
    rows["fraction"] = rows.missing.str.split(":").str[1].astype(float)
    rows["trained on"] = rows.drop_incomplete.map(TRAINED_ON)
    return rows


summary = study_rows("summary")
picked = summary[(summary.metric.isin(["coherence", "latent_probe"]) & summary.num_inputs.isin([1, 4]))
                 | ((summary.metric == "latent_probe") & (summary.num_inputs == 5))]
display(picked.pivot_table(index=["model", "trained on", "fraction"], columns=["metric", "num_inputs"],
                           values="value").sort_index(ascending=[True, True, False]).round(3))

# %% [markdown]
# **Every subset, every fraction.** Pick the fraction of complete training tuples and tick the input
# modalities: the bars are the coherence of each generated modality outside the inputs (each model trained on
# all tuples, solid, and on the complete ones only, hatched).

# %%
coherence = study_rows("coherence")
coherence = coherence[~coherence.in_subset.astype(str).eq("True")]


def draw_subset(members, fraction=0.2):
    subset = "+".join(NAMES[m] for m in members)
    rows = coherence[(coherence.subset == subset) & (coherence.fraction == fraction)]
    targets = [n for m, n in enumerate(NAMES) if m not in members]
    fig, ax = plt.subplots(figsize=(9, 2.8), layout="constrained")
    if not targets:
        ax.text(0.5, 0.5, "all five ticked: nothing left to generate", ha="center", va="center")
        ax.set_axis_off()
        plt.show()
        return
    width = 0.8 / 6
    for j, (model, drop) in enumerate((m, d) for m in MODELS for d in (False, True)):
        mine = rows[(rows.model == model) & (rows.drop_incomplete == drop)].set_index("target")
        values = [float(mine.coherence.get(t, float("nan"))) for t in targets]
        ax.bar([i + (j - 2.5) * width for i in range(len(targets))], values, width, color=model_colors[model],
               hatch="///" if drop else None, edgecolor="white" if drop else None,
               label=f"{model}{', complete only' if drop else ''}")
    ax.set_xticks(range(len(targets)), targets)
    ax.set(ylim=(0, 1), ylabel="coherence",
           title=f"generated from {{{', '.join(NAMES[m] for m in members)}}}, trained with {fraction:.0%} complete")
    ax.axhline(0.1, color="0.6", linestyle=":")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    plt.show()


fractions = sorted({float(f) for f in coherence.fraction})
display(subset_picker(NAMES, draw_subset, selected=(0,),
                      controls={"fraction": widgets.ToggleButtons(
                          options=[(f"{f:.0%} complete", f) for f in fractions], value=min(fractions),
                          description="trained with")}))

# %% [markdown]
# ## 5. What the mean-function view predicts, and what happened
#
# **Predictions**, from section 2 alone. With `complete:0.2`, an incomplete tuple has $k$ of the five modalities
# with probability $\binom{5}{k}/30$: one in six has a single modality, and two thirds of the incomplete tuples
# have two or three. Three predictions follow.
#
# 1. *Mixtures keep their training signal.* What makes the MoPoE and the MMVAE coherent is reconstructing the
#    modalities of a tuple from its subsets. Every tuple with at least two modalities still does that, among the
#    modalities it has; only the one-modality tuples (about 13% of all tuples at 20% complete) teach nothing
#    across modalities. Training on all tuples should therefore lose little coherence against complete data in
#    the same number of steps, less than the fraction of observed modality slots (60% at 20% complete) suggests.
# 2. *The MVAE may even gain.* Its joint objective fuses all five experts, so on complete data only its unimodal
#    ELBO terms train the experts alone, and they never ask an expert to explain the other modalities: that is
#    why it is weakest from few inputs (chapter 4). On an incomplete tuple, the product runs over the observed
#    modalities only, which is the sub-sampling of ELBO terms that Wu & Goodman (2018) used on purpose: small
#    products must now generate what the tuple has. Its coherence from few inputs should not fall, and may rise.
# 3. *Dropping incomplete tuples costs data, not signal per step.* The baseline trains on complete tuples only,
#    so every step is as informative as on complete data, but it sees a fifth of the tuples five times as often:
#    it should do about as well as complete data early and fall behind as it starts to overfit the 12,000
#    tuples it has (chapter 2's test bound shows when).
#
# MultiVae's authors ran a related comparison on PolyMNIST with the paper's networks (missing-data levels of
# 0%, 20% and 50%, keeping or dropping incomplete samples; Senellart et al., MultiVae repository,
# `examples/case_studies/benchmarking_on_partial_polymnist/results.md`). Their coherences are published only as a
# figure; their summary is that the MoPoE, MMVAE and MVTCAE "hold surprisingly well to large percentages of
# missing data", in line with prediction 1.
#
# **What happened** in the shipped study (seed 0; the tables and figures of section 4), at 20% complete tuples
# and 7,500 steps:
#
# - *Prediction 1 holds only in part.* Trained on all tuples, the MoPoE reaches 0.46 from one input and 0.69 from
#   four (0.54 and 0.81 on complete data), the MMVAE 0.47 at every number of inputs (0.55). Both keep their shape
#   (the MoPoE rising with the inputs, the MMVAE flat) and lose about 15% of their coherence, less than the 40%
#   fewer observed modalities, and far less than the 61% fewer cross-modal pairs of observed modalities (7.7 per
#   tuple instead of 20), so the pairs a tuple has are used well; but the loss is real at this budget.
# - *Prediction 2 fails.* The MVAE trained on all tuples is neither better nor worse from one or two inputs (0.29
#   and 0.38 against 0.30 and 0.38) and slightly worse from four (0.49 against 0.51): within 7,500 steps, the
#   products over the random subsets that incomplete tuples leave do not teach its experts to generate the other
#   modalities. Without the incomplete tuples it does a little better than on complete data (0.31 / 0.41 / 0.48 /
#   0.54 from one to four inputs against 0.30 / 0.38 / 0.45 / 0.51; differences of one or two sampling errors).
# - *Prediction 3 holds early.* Dropping the incomplete tuples keeps the coherence of complete data: the MoPoE
#   0.53 and 0.80, the MMVAE 0.55, after 40 passes over the 12,000 complete tuples, so at this budget fewer but
#   complete tuples beat more but incomplete ones. With half the tuples complete, the MoPoE trained on all of them
#   lies in between (0.51 and 0.76).
# - *The likelihood tells another story for the MoPoE only.* At 20% complete its test bound is 2,790 nats without
#   the incomplete tuples, 2,832 on complete data and 2,845 with them (2,865 at 50% complete, the best of its
#   runs): the incomplete tuples hold two thirds of the observed images, and its decoders learn from every
#   observed one. The MMVAE's bound is the same either way (1,361; 1,373 on complete data), and the MVAE's is
#   lower either way (6,733 with the incomplete tuples, 6,759 without, 6,973 on complete data).
#
# So, on PolyMNIST with tuples missing completely at random and a fixed number of steps, dropping the incomplete
# tuples costs none of the three models coherence, and keeping them costs the mixtures about 15%; the
# mean-function view says which terms an incomplete tuple trains, not how much each is worth. Longer training,
# where the 12,000 complete tuples would start to be overfitted, and fewer complete tuples (say 5%) are where
# keeping the incomplete ones should pay off: both are one setting away (`incomplete_study_config(model,
# fraction, ...)`).

# %% [markdown]
# ## Summary
#
# - An incomplete tuple keeps the subsets inside what it has: the product of its experts (MVAE), the mixture of
#   them (MMVAE), the mixture of the products of its subsets (MoPoE). Its bound is a bound on the marginal
#   likelihood of what was observed.
# - `--set missing=complete:<fraction>` or `mcar:<rate>` trains any experiment on incomplete tuples, with a
#   recorded, checksummed mask; `--set drop_incomplete=true` is the baseline; evaluation is on complete test
#   tuples.
# - With a fifth of the tuples complete and 7,500 steps, the complete tuples alone gave the coherence of complete
#   data; keeping the incomplete ones as well cost the MoPoE and the MMVAE about 15% of it, left the MVAE where it
#   was, and gave the MoPoE its best test bound.
#
# **Exercises.** (1) Train with `mcar:0.5,0,0,0,0` (only the astronaut modality goes missing, half the time):
# which subsets' coherence suffers? (2) Which mechanism would *not* be missing completely at random in a data set
# you know, and what would a model fitted to the observed modalities then get wrong?
