"""The static HTML edition: local scripts only, chapters linked in order, remote scripts refused."""

from __future__ import annotations

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from mopoe_lib.book.html import REMOTE_SCRIPT, VENDOR_URLS, export_html


def _notebook(path, title, extra_html=""):
    result = new_output("execute_result", {"text/plain": "2", "text/html": extra_html or "<b>2</b>"},
                        execution_count=1)
    cells = [new_markdown_cell(f"# {title}\n\nSome math: $\\beta$."),
             new_code_cell("1 + 1", execution_count=1, outputs=[result])]
    notebook = new_notebook(cells=cells)
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0, "state": {}}}
    nbformat.write(notebook, path)
    return path


def test_pages_use_only_vendored_scripts_and_the_index_keeps_the_order(tmp_path):
    first = _notebook(tmp_path / "00_data.ipynb", "0. Data")
    second = _notebook(tmp_path / "01_fusion.ipynb", "1. Fusion")
    index = export_html([first, second], tmp_path / "html")
    text = index.read_text()
    assert text.index("00_data.html") < text.index("01_fusion.html") and "1. Fusion" in text
    for page in ("00_data.html", "01_fusion.html"):
        body = (tmp_path / "html" / page).read_text()
        assert REMOTE_SCRIPT.search(body) is None
        assert all(url in body for url in VENDOR_URLS.values())
        assert "cdnjs" not in body and "unpkg" not in body


def test_remote_scripts_are_refused(tmp_path):
    page = _notebook(tmp_path / "02_bad.ipynb", "2. Bad", '<script src="https://cdn.example.org/x.js"></script>')
    with pytest.raises(RuntimeError, match="remote script"):
        export_html([page], tmp_path / "html")


def _elements(body: str) -> list[tuple[str, dict[str, str]]]:
    """(tag, attributes) of every start tag of a page, in order (nbconvert rewrites attribute order)."""
    from html.parser import HTMLParser

    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, {key: value or "" for key, value in attrs}))

    Parser().feed(body)
    return found


def test_saved_subset_pickers_become_offline_pickers_on_the_page(tmp_path):
    """A picker output (live widget view plus saved states) is replaced by our checkboxes, buttons and saved
    figures; the page loads our script from vendor/, shows the selected state's figure before any script runs,
    and the saved JSON cannot close its script element early."""
    import json
    import re

    from mopoe_lib.book.html import PICKER_URL
    from mopoe_lib.viz.widgets import STATES_MIME

    image = {"type": "image", "mime": "image/webp", "data": "QUJD", "width": 10, "height": 5}
    states = {"0|0": [image], "0|1": [{"type": "text", "text": "</script><b>x</b>"}],
              "0|0,1": [], "1|0": [], "1|1": [], "1|0,1": []}
    payload = {"names": ["a", "b"], "selected": [0], "states": states, "empty": "tick one",
               "controls": [{"name": "model", "description": "model", "labels": ["mvae", "mopoe"], "index": 0}]}
    output = new_output("display_data", {"text/plain": "SubsetPicker(...)", STATES_MIME: payload,
                                         "application/vnd.jupyter.widget-view+json": {"model_id": "abc"}})
    notebook = new_notebook(cells=[new_markdown_cell("# 3. Pick"), new_code_cell("picker", outputs=[output])])
    nbformat.write(notebook, tmp_path / "03_pick.ipynb")
    export_html([tmp_path / "03_pick.ipynb"], tmp_path / "html")
    body = (tmp_path / "html" / "03_pick.html").read_text()
    assert f'src="{PICKER_URL}"' in body and (tmp_path / "html" / PICKER_URL).is_file()
    assert body.count('class="mopoe-picker"') == 1 and '"model_id": "abc"' not in body
    elements = _elements(body)
    assert [(a["src"], a["width"]) for tag, a in elements if tag == "img" and a.get("alt", "").startswith("figure")] \
        == [("data:image/webp;base64,QUJD", "10")]  # the selected state, drawn before any script runs
    assert [(a["value"], "checked" in a) for tag, a in elements if tag == "input"] == [("0", True), ("1", False)]
    assert [(a["data-index"], a["aria-pressed"], a.get("class")) for tag, a in elements if tag == "button"] \
        == [("0", "true", "mopoe-active"), ("1", "false", None)]
    saved = re.search(r'<script[^>]*class="mopoe-states"[^>]*>(.*?)</script>', body, re.S).group(1)
    assert json.loads(saved) == payload
    index = (tmp_path / "html" / "index.html").read_text()
    assert 'href="run-it-yourself.html"' in index
    assert "make book" in (tmp_path / "html" / "run-it-yourself.html").read_text()
