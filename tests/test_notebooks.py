"""Every chapter of the book executes top to bottom in FAST mode; the pairing rules hold.

GPflow-style: one parametrised test per chapter plus a test that the expected chapters were found, so an
empty or renamed folder fails instead of passing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mopoe_lib.book import chapters, execute_chapter

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_CHAPTERS = ["00_data.py", "01_mean_functions.py", "02_training.py"]


def test_expected_chapters_are_present():
    assert [p.name for p in chapters()] == EXPECTED_CHAPTERS


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED_CHAPTERS)
def test_chapter_executes_in_fast_mode(name):
    notebook = execute_chapter(ROOT / "notebooks" / name, mode="fast", timeout=900)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells)
    assert any("image/png" in o.get("data", {}) for c in code_cells for o in c.outputs), "no figure drawn"


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.name)
def test_chapter_is_paired_py_percent(path):
    head = path.read_text().splitlines()[:12]
    assert "#   jupytext:" in head and "#     formats: ipynb,py:percent" in head


def test_no_notebook_outputs_are_committed():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked == []
