"""The subset picker calls the drawing function with the ticked modalities and the extra controls' values, and
saves every state for the HTML edition; the plots' layout helpers."""

from __future__ import annotations

import base64
import io

import ipywidgets as widgets
import pytest

from mopoe_lib.viz import subset_picker
from mopoe_lib.viz.widgets import STATES_MIME, state_key


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


def _titled_figure(members, model="none"):
    """A figure whose size encodes the state (so the saved images can be told apart) and whose title names it."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1 + len(members), 1 + (model == "mopoe")), dpi=50)
    fig.suptitle(f"{model} {members}")


def test_subset_picker_saves_every_state_for_the_html_edition():
    from PIL import Image

    model = widgets.ToggleButtons(options=(("MVAE", "mvae"), ("MoPoE", "mopoe")), value="mopoe", description="model")
    box = subset_picker(["a", "b", "c"], _titled_figure, selected=(1,), controls={"model": model}, precompute=True)
    saved = box._repr_mimebundle_()[STATES_MIME]
    assert saved["names"] == ["a", "b", "c"] and saved["selected"] == [1]
    assert saved["controls"] == [{"name": "model", "description": "model", "labels": ["MVAE", "MoPoE"], "index": 1}]
    subsets = [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert sorted(saved["states"]) == sorted(state_key(s, (i,)) for s in subsets for i in (0, 1))
    for members in subsets:
        for index, name in enumerate(("mvae", "mopoe")):
            (item,) = saved["states"][state_key(members, (index,))]
            picture = Image.open(io.BytesIO(base64.b64decode(item["data"])))
            assert item["mime"] == "image/webp" and picture.format == "WEBP"
            # the figure drawn for this state: 50 dpi, (1 + |S|) x (1 + [mopoe]) inches
            assert (picture.width, picture.height) == (item["width"], item["height"]) \
                == (50 * (1 + len(members)), 50 * (1 + (name == "mopoe")))
    import matplotlib.pyplot as plt

    plt.close("all")


def test_subset_picker_saves_text_and_refuses_controls_without_options():
    box = subset_picker(["a", "b"], lambda members: print("ticked", members), precompute=True)
    assert box._repr_mimebundle_()[STATES_MIME]["states"]["0,1"] == [{"type": "text", "text": "ticked (0, 1)\n"}]
    assert STATES_MIME not in subset_picker(["a", "b"], lambda members: None, precompute=False)._repr_mimebundle_()
    with pytest.raises(ValueError, match="finite set of options"):
        subset_picker(["a"], lambda members, k: None, controls={"k": widgets.IntSlider(3)}, precompute=True)


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
    column_labels = [label.get_window_extent(renderer) for label in fig.axes[0].get_xticklabels()]
    first_row = fig.axes[0].get_window_extent(renderer)
    assert [label.get_text() for label in fig.axes[0].get_xticklabels()] == [str(c) for c in range(8)]
    assert all(not title.overlaps(label) for label in column_labels)
    assert all(label.y0 >= first_row.y1 - 1 for label in column_labels)
    # each column label is centred over its image: 8 cells of 28 pixels, 2 pixels apart
    centres = [(label.x0 + label.x1) / 2 for label in column_labels]
    expected = [first_row.x0 + first_row.width * (c * 30 + 14) / (8 * 30 - 2) for c in range(8)]
    assert max(abs(a - b) for a, b in zip(centres, expected, strict=True)) < 0.02 * first_row.width


def test_metric_curves_draw_one_line_per_run_and_split_against_epochs_or_minutes():
    from mopoe_lib.viz import metric_curves, with_minutes

    rows = [{"epoch": e, "seconds": 30.0, "train/kl": 10.0 + e, **({"test/kl": 9.0 + e} if e % 2 == 0 else {})}
            for e in range(1, 5)]
    assert [r["minutes"] for r in with_minutes(rows)] == [0.5, 1.0, 1.5, 2.0]
    fig = metric_curves({"a": rows, "b": rows[:2]}, ["kl"], x="minutes", xlabel="minutes")
    lines = fig.axes[0].get_lines()
    assert [len(line.get_xdata()) for line in lines] == [4, 2, 2, 1]  # a train, a test, b train, b test
    assert list(lines[1].get_xdata()) == [1.0, 2.0]


def test_time_to_coherence_plot_draws_the_committed_results_one_panel_per_experiment(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mopoe_lib.book import plot_time_to_coherence, time_to_coherence

    shown = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    lines = [("epyc-recipe", "polymnist-fast-mopoe", "C2", ":", "recipe"),
             ("epyc-opt-lr3", "polymnist-fast-mopoe", "C2", "-", "opt"),
             ("epyc-opt-lr3", "polymnist-fast-mmvae", "C1", "-", "mmvae"),
             ("no-such-label", "polymnist-fast-mvae", "C0", "-", "missing")]
    assert plot_time_to_coherence(lines, panels=True)
    axes = shown[0].axes
    assert [ax.get_title() for ax in axes] == ["polymnist-fast-mopoe", "polymnist-fast-mmvae"]
    drawn = {line.get_label(): line.get_ydata() for ax in axes for line in ax.get_lines()}
    result = time_to_coherence("epyc-opt-lr3", "polymnist-fast-mmvae")
    assert list(drawn["mmvae"]) == [p["coherence/shipped"]["1"] for p in result["points"]]
    assert set(drawn) == {"recipe", "opt", "mmvae", "chance"}
    assert not plot_time_to_coherence([("no-such-label", "polymnist-fast-mvae", "C0", "-", "missing")])
    plt.close("all")
