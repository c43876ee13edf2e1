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
