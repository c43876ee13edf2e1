"""The subset picker calls the drawing function with the ticked modalities and the extra controls' values."""

from __future__ import annotations

import ipywidgets as widgets

from mopoe_lib.viz import subset_picker


def test_subset_picker_redraws_for_the_ticked_subset():
    calls = []
    model = widgets.ToggleButtons(options=("mvae", "mopoe"), value="mopoe")
    box = subset_picker(["a", "b", "c"], lambda members, model: calls.append((members, model)), selected=(0, 2),
                        controls={"model": model})
    checks = box.children[1].children
    assert calls == [((0, 2), "mopoe")]  # drawn once on creation
    checks[1].value = True
    model.value = "mvae"
    checks[0].value = checks[1].value = checks[2].value = False  # empty: a hint, no draw
    assert calls == [((0, 2), "mopoe"), ((0, 1, 2), "mopoe"), ((0, 1, 2), "mvae"), ((1, 2), "mvae"), ((2,), "mvae")]


def test_coherence_heatmap_orders_subsets_by_size_whatever_their_names():
    """Labels joined with "+" (m10 sorts before m2 alphabetically): rows go by number of inputs, then in the
    library's subset order."""
    import torch

    from mopoe_lib.fusion import powerset, subset_labels
    from mopoe_lib.viz import coherence_heatmap

    names = ["m10", "m2", "astronaut"]
    subsets = powerset(3)
    labels = subset_labels(subsets, names)
    rows = [{"subset": label, "num_inputs": int(subset.sum()), "target": t, "in_subset": bool(subset[m]),
             "coherence": 0.1 * int(subset.sum())}
            for label, subset in zip(reversed(labels), torch.flip(subsets, [0]), strict=True)
            for m, t in enumerate(names)]
    fig = coherence_heatmap(rows, names)
    shown = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert shown == labels  # m10, m2, astronaut, then pairs, then the full set
    assert [label.count("+") + 1 for label in shown] == sorted(label.count("+") + 1 for label in shown)
    image = fig.axes[0].images[0].get_array()
    assert image[0, 0] == 0.1 and image[-1, 0] == 0.1 * 3


def test_image_grid_title_and_labels_do_not_overlap():
    """The suptitle, the column labels and the images are laid out apart (a reader saw them overlap)."""
    import torch

    from mopoe_lib.viz import image_grid

    images = [[torch.rand(3, 28, 28) for _ in range(8)] for _ in range(6)]
    fig = image_grid(images, row_labels=[f"row {r}" for r in range(6)], col_labels=[str(c) for c in range(8)],
                     title="generated from {astronaut, chelsea}")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    column_labels = [ax.title.get_window_extent(renderer) for ax in fig.axes[:8]]
    first_row = [ax.get_window_extent(renderer) for ax in fig.axes[:8]]
    assert all(not title.overlaps(label) for label in column_labels)
    assert all(label.y0 >= box.y1 - 1 for label, box in zip(column_labels, first_row, strict=True))


def test_metric_curves_draw_one_line_per_run_and_split_against_epochs_or_minutes():
    from mopoe_lib.viz import metric_curves, with_minutes

    rows = [{"epoch": e, "seconds": 30.0, "train/kl": 10.0 + e, **({"test/kl": 9.0 + e} if e % 2 == 0 else {})}
            for e in range(1, 5)]
    assert [r["minutes"] for r in with_minutes(rows)] == [0.5, 1.0, 1.5, 2.0]
    fig = metric_curves({"a": rows, "b": rows[:2]}, ["kl"], x="minutes", xlabel="minutes")
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [4, 2, 2, 1]  # a train, a test, b train, b test
    assert list(lines[1].get_xdata()) == [1.0, 2.0]
