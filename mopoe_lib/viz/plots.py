"""A few plotting helpers, used everywhere in the book (one look, no per-notebook styling)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure


def set_style() -> None:
    """The book's figure style: clean axes, readable fonts, a colour-blind-safe palette."""
    plt.rcParams.update({
        "figure.dpi": 100,
        "figure.autolayout": True,
        "savefig.dpi": 120,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.prop_cycle": plt.cycler(color=plt.get_cmap("tab10").colors),
    })


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """One image ``(C, H, W)`` (uint8 or float in [0, 1]) as an ``(H, W, C)`` or ``(H, W)`` array for imshow."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0.0, 1.0)
    if array.ndim == 3:
        array = array.transpose(1, 2, 0)
        if array.shape[2] == 1:
            array = array[:, :, 0]
    return array


def _as_rgb(array: np.ndarray) -> np.ndarray:
    """A display array (see :func:`to_display`) as float RGB in [0, 1]."""
    array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array[:, :, :3]


def image_grid(
    images: Sequence[Sequence[torch.Tensor | np.ndarray]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    cell_size: float = 0.9,
    title: str | None = None,
    gap: int = 2,
) -> Figure:
    """A grid of images: ``images[r][c]`` is drawn in row ``r``, column ``c`` (e.g. modality x sample).

    Each row is one mosaic (its images side by side, ``gap`` white pixels apart) on one axes, so a grid of
    17 x 8 images draws in a fraction of the time of one axes per image; every cell is ``cell_size`` inches
    square. Column labels sit above the first row, row labels to the left of each row.
    """
    rows, cols = len(images), max(len(r) for r in images)
    extra = (0.3 if col_labels is not None else 0.0) + (0.35 if title else 0.0)  # room for the labels and title
    fig, axes = plt.subplots(rows, 1, figsize=(cols * cell_size + 0.8, rows * cell_size + 0.3 + extra),
                             squeeze=False, layout="constrained")
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, hspace=0.02)
    for r, ax in enumerate(axes[:, 0]):
        cells = [_as_rgb(to_display(image)) for image in images[r]]
        height, width = max(c.shape[0] for c in cells), max(c.shape[1] for c in cells)
        mosaic = np.ones((height, cols * (width + gap) - gap, 3), dtype=np.float32)
        for c, cell in enumerate(cells):
            mosaic[:cell.shape[0], c * (width + gap): c * (width + gap) + cell.shape[1]] = cell
        ax.imshow(mosaic, aspect="auto", interpolation="nearest")
        ax.set_yticks([])
        ax.grid(False)
        for spine in ax.spines.values():
            spine.set_visible(False)
        if r == 0 and col_labels is not None:
            ax.xaxis.tick_top()
            ax.set_xticks([c * (width + gap) + (width - 1) / 2 for c in range(len(col_labels))], list(col_labels),
                          fontsize=9)
            ax.tick_params(axis="x", length=0, pad=2)
        else:
            ax.set_xticks([])
        if row_labels is not None:
            ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def learning_curves(metrics: Sequence[dict], title: str = "") -> Figure:
    """Three panels against the epoch: the bound (train and test), the KL term, and, when the run logged it,
    test coherence by number of input modalities. ``metrics`` are the rows of a run's ``metrics.jsonl``."""
    fig = Figure(figsize=(11, 3.2))
    panels = fig.subplots(1, 3)

    def series(name: str) -> list[tuple[float, float]]:
        """(epoch, value) of the rows that logged ``name``."""
        return [(float(row["epoch"]), row[name]) for row in metrics if name in row]

    for ax, key, label in [(panels[0], "elbo", "bound (ELBO)"), (panels[1], "kl", "KL term")]:
        for split, style in [("train", "-"), ("test", "o--")]:
            rows = series(f"{split}/{key}")
            if rows:
                ax.plot(*zip(*rows, strict=True), style, markersize=2, label=split)
        ax.set_title(label)
        ax.legend(fontsize=8)
    inputs = sorted({int(k.rsplit("/", 1)[1]) for row in metrics for k in row if k.startswith("test/coherence/")})
    for k in inputs:
        panels[2].plot(*zip(*series(f"test/coherence/{k}"), strict=True), "o-", markersize=2,
                       label=f"{k} input{'s' if k > 1 else ''}")
    panels[2].set_title("test coherence" if inputs else "no per-epoch coherence logged")
    panels[2].set_ylim(0, 1)
    if inputs:
        panels[2].legend(fontsize=8)
    for ax in panels:
        ax.set_xlabel("epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def coherence_heatmap(rows: Sequence[dict], names: Sequence[str], title: str = "") -> Figure:
    """Coherence per input subset (rows, by number of inputs, then in the library's subset order:
    :func:`~mopoe_lib.fusion.powerset`) and target modality (columns), from the rows of
    :func:`~mopoe_lib.evaluation.conditional_coherence`; cells whose target is an input (reconstructions) are
    outlined."""

    def position(label: str) -> tuple[int, int]:  # (size, binary code of the members), as powerset() orders
        members = [list(names).index(part) for part in label.split("+")]
        return len(members), sum(2**m for m in members)

    order = sorted({row["subset"] for row in rows}, key=position)
    value = {(row["subset"], row["target"]): row["coherence"] for row in rows}
    grid = np.array([[value[(s, t)] for t in names] for s in order])
    fig = Figure(figsize=(1.0 * len(names) + 2.6, 0.22 * len(order) + 1.6))
    ax = fig.subplots()
    image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for r, s in enumerate(order):
        for c, t in enumerate(names):
            if t in s.split("+"):
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="white", lw=0.8))
    ax.set_yticks(range(len(order)), order, fontsize=6)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.grid(False)
    fig.colorbar(image, ax=ax, label="coherence", fraction=0.05, pad=0.03)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def metric_curves(runs: dict[str, Sequence[dict]], keys: Sequence[str], titles: Sequence[str] | None = None,
                  x: str = "epoch", xlabel: str = "epoch", splits: Sequence[str] = ("train", "test")) -> Figure:
    """One panel per metric ``key`` (e.g. ``"recon"``, ``"kl"``), one colour per run, train solid and test dashed
    (test where a row was evaluated). ``runs`` maps a label to the rows of its ``metrics.jsonl``; ``x`` is the
    row field on the horizontal axis (``epoch``, or ``minutes`` for cumulative training time)."""
    fig = Figure(figsize=(4.6 * len(keys), 3.4), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False)[0]
    for i, (label, rows) in enumerate(runs.items()):
        rows = with_minutes(rows) if x == "minutes" else list(rows)
        for ax, key in zip(axes, keys, strict=True):
            for split, style in zip(splits, ("-", "--"), strict=False):
                points = [(r[x], r[f"{split}/{key}"]) for r in rows if f"{split}/{key}" in r]
                if points:
                    ax.plot(*zip(*points, strict=True), style, color=f"C{i}", marker="o" if split == "test" else None,
                            markersize=3, label=f"{label} {split}")
    for ax, title in zip(axes, titles or keys, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
    axes[-1].legend(fontsize=7, loc="best")
    return fig


def with_minutes(rows: Sequence[dict]) -> list[dict]:
    """The rows with ``minutes``: training time summed over the epochs so far (evaluations not counted, resumed
    runs added up), the time axis of a run's learning curves."""
    total, out = 0.0, []
    for row in rows:
        total += row.get("seconds", 0.0)
        out.append({**row, "minutes": total / 60})
    return out
