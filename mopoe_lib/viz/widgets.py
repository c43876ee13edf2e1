"""The book's interactive control: one checkbox per modality, redrawing a figure for the ticked subset."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets


def subset_picker(names: Sequence[str], draw: Callable[..., None], selected: Sequence[int] = (0,),
                  controls: dict[str, Any] | None = None) -> widgets.VBox:
    """Checkboxes for ``names`` above an output area; any change calls ``draw(members, **control_values)``.

    ``members`` is the tuple of ticked modality indices (an empty subset prints a hint instead of drawing);
    ``controls`` are further widgets (e.g. a model chooser) whose values are passed by keyword. The returned box
    is drawn once already; display it with ``IPython.display.display``.
    """
    controls = dict(controls or {})
    checks = [widgets.Checkbox(value=m in selected, description=name, indent=False) for m, name in enumerate(names)]
    output = widgets.Output()

    def redraw(*_: object) -> None:
        members = tuple(m for m, box in enumerate(checks) if box.value)
        with output:
            output.clear_output(wait=True)
            if not members:
                print("tick at least one modality")
                return
            draw(members, **{key: control.value for key, control in controls.items()})

    for control in [*controls.values(), *checks]:
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([*controls.values(), widgets.HBox(checks), output])
