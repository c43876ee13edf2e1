"""The book's interactive control: one checkbox per modality, redrawing a figure for the ticked subset.

In JupyterLab the figure is drawn by the kernel on every change. For the static HTML edition, where there is no
kernel, the picker can also draw every state it can reach (each non-empty subset, for each option of each
control) once, when the chapter executes, and carry those figures in its output under :data:`STATES_MIME`; the
edition (:mod:`mopoe_lib.book.html`) turns them into a page element that switches between the saved figures in
the browser. The book's build sets :data:`STATIC_ENV`, so only built chapters pay for the extra drawing.
"""

from __future__ import annotations

import base64
import io
import itertools
import os
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as widgets

from ..settings import STATIC_ENV

#: the MIME type of a picker's saved states (JupyterLab has no renderer for it and shows the live widget)
STATES_MIME = "application/vnd.mopoe.subset-states+json"
#: what the picker shows for an empty subset (the same words in the kernel and in the HTML edition)
EMPTY_HINT = "tick at least one modality"
#: WebP quality of the saved figures: a quarter of the PNG's size; the plots stay sharp enough to read
WEBP_QUALITY = 70


class SubsetPicker(widgets.VBox):
    """The picker's box; when it carries saved states, its display bundle holds them next to the widget view."""

    def __init__(self, children: Sequence[widgets.Widget], states: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(children, **kwargs)
        self.saved_states = states

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None and self.saved_states is not None:
            bundle = {**bundle, STATES_MIME: self.saved_states}
        return bundle


def state_key(members: Sequence[int], option_indices: Sequence[int] = ()) -> str:
    """The key of one picker state: the option index of each control, then the ticked modalities
    (``"1|0,2"``: the second option of the one control, modalities 0 and 2). The page's script builds the same."""
    return "|".join([*(str(i) for i in option_indices), ",".join(str(m) for m in sorted(members))])


def _options(control: widgets.Widget, name: str) -> list[tuple[str, Any]]:
    options = getattr(control, "options", None)
    if not options:
        raise ValueError(f"control {name!r} ({type(control).__name__}) has no options: only controls with a finite "
                         "set of options (ToggleButtons, Dropdown, RadioButtons) can be saved for the HTML edition; "
                         "pass precompute=False")
    return [(str(o[0]), o[1]) if isinstance(o, tuple) and len(o) == 2 else (str(o), o) for o in options]


def _image(png: bytes) -> dict[str, Any]:
    from PIL import Image

    picture = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="WEBP", quality=WEBP_QUALITY, method=4)
    return {"type": "image", "mime": "image/webp", "data": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "width": picture.width, "height": picture.height}


def capture_draw(draw: Callable[..., None], members: tuple[int, ...], values: dict[str, Any]) -> list[dict[str, Any]]:
    """Run ``draw(members, **values)`` and return what it showed: printed text and figures (WebP images).

    Figures shown with ``plt.show()`` under the inline backend are captured from the display; figures still open
    afterwards (any other backend) are saved and closed, so nothing leaks into the cell's own output.
    """
    import matplotlib.pyplot as plt
    from IPython.utils.capture import capture_output

    before = set(plt.get_fignums())
    with capture_output(stdout=True, stderr=False, display=True) as captured:
        draw(members, **values)
    outputs: list[dict[str, Any]] = []
    if captured.stdout.strip():
        outputs.append({"type": "text", "text": captured.stdout})
    for output in captured.outputs:
        png = output.data.get("image/png")
        if png:
            outputs.append(_image(base64.b64decode(png) if isinstance(png, str) else png))
    for number in sorted(set(plt.get_fignums()) - before):
        figure = plt.figure(number)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        outputs.append(_image(buffer.getvalue()))
    return outputs


def save_states(names: Sequence[str], draw: Callable[..., None], selected: Sequence[int],
                controls: dict[str, widgets.Widget], hint: str = EMPTY_HINT) -> dict[str, Any]:
    """Every state a picker can reach, drawn once: ``{"names", "selected", "controls", "states", "empty"}``.

    ``states`` maps :func:`state_key` to the outputs of :func:`capture_draw`; there are
    ``(2**len(names) - 1) * prod(len(options))`` of them.
    """
    options = {key: _options(control, key) for key, control in controls.items()}
    described = [{"name": key, "description": getattr(control, "description", "") or key,
                  "labels": [label for label, _ in options[key]],
                  "index": [value for _, value in options[key]].index(control.value)}
                 for key, control in controls.items()]
    subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(range(len(names)), r)]
    states = {}
    for choice in itertools.product(*(range(len(o)) for o in options.values())):
        values = {key: options[key][i][1] for key, i in zip(options, choice, strict=True)}
        for members in subsets:
            states[state_key(members, choice)] = capture_draw(draw, members, values)
    return {"names": list(names), "selected": sorted(selected), "controls": described, "states": states,
            "empty": hint}


def subset_picker(names: Sequence[str], draw: Callable[..., None], selected: Sequence[int] = (0,),
                  controls: dict[str, Any] | None = None, precompute: bool | None = None,
                  hint: str = EMPTY_HINT) -> SubsetPicker:
    """Checkboxes for ``names`` above an output area; any change calls ``draw(members, **control_values)``.

    ``members`` is the tuple of ticked modality indices (an empty subset prints ``hint`` instead of drawing);
    ``controls`` are further widgets (e.g. a model chooser) whose values are passed by keyword. The returned box
    is drawn once already; display it with ``IPython.display.display``.

    With ``precompute`` (default: the environment variable :data:`STATIC_ENV` is ``1``, as in the book's build)
    every reachable state is also drawn once and saved with the box's output, for the HTML edition; the controls
    must then have a finite set of options.
    """
    controls = dict(controls or {})
    if precompute is None:
        precompute = os.environ.get(STATIC_ENV) == "1"
    states = save_states(names, draw, selected, controls, hint) if precompute else None
    checks = [widgets.Checkbox(value=m in selected, description=name, indent=False) for m, name in enumerate(names)]
    output = widgets.Output()

    def redraw(*_: object) -> None:
        members = tuple(m for m, box in enumerate(checks) if box.value)
        with output:
            output.clear_output(wait=True)
            if not members:
                print(hint)
                return
            draw(members, **{key: control.value for key, control in controls.items()})

    for control in [*controls.values(), *checks]:
        control.observe(redraw, names="value")
    redraw()
    box = SubsetPicker([*controls.values(), widgets.HBox(checks), output], states=states)
    box.add_class("mopoe-subset-picker")
    return box
