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
