"""Every chapter of the book executes top to bottom in FAST mode; the pairing rules hold.

GPflow-style: one parametrised test per chapter plus a test that the expected chapters were found, so an
empty or renamed folder fails instead of passing. Each chapter runs through the book's own command in a
separate process (exactly what ``make book`` runs), with stdin closed: a Jupyter kernel started from inside
pytest's captured process intermittently stalled here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from browser import ARTIFACTS, CHROMIUM, drive_pickers, screenshot_page

from mopoe_lib.book import read_records
from mopoe_lib.book.build import chapters, records_path
from mopoe_lib.viz.widgets import STATES_MIME

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_CHAPTERS = ["00_data.py", "01_mean_functions.py", "02_training.py", "03_latent_spaces.py", "04_coherence.py",
                     "05_likelihood.py", "06_mnist_svhn_text.py", "07_paper_figures.py",
                     "08_incomplete_data.py"]


#: the chapters' subset pickers (each saves every state for the HTML edition) and the largest page we accept: the
#: pickers' saved figures are most of a page's weight (chapter 3: three models x 31 subsets)
PICKERS = {"01_mean_functions.py": 1, "03_latent_spaces.py": 1, "04_coherence.py": 1, "06_mnist_svhn_text.py": 1,
           "08_incomplete_data.py": 1}
PAGE_BYTES = 8_000_000


def test_expected_chapters_are_present():
    assert [p.name for p in chapters()] == EXPECTED_CHAPTERS


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED_CHAPTERS)
def test_chapter_executes_in_fast_mode(name, tmp_path):
    result = subprocess.run([sys.executable, "-m", "mopoe_lib.book", "--mode", "fast", "--out", str(tmp_path),
                             name[:2]], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    notebook = nbformat.read(tmp_path / name.replace(".py", ".ipynb"), as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert code_cells and all(c.get("execution_count") for c in code_cells)
    assert any("image/png" in o.get("data", {}) for c in code_cells for o in c.outputs), "no figure drawn"
    assert stray_outputs(notebook) == []
    if CHROMIUM is not None:  # the chapter as a reader of the HTML edition sees it, kept as a test artifact
        from mopoe_lib.book.html import export_html, vendor

        executed = tmp_path / name.replace(".py", ".ipynb")
        vendor(tmp_path / "html", ROOT / "build" / "npm")
        export_html([executed], tmp_path / "html")
        page = screenshot_page(tmp_path / "html" / executed.with_suffix(".html").name,
                               ARTIFACTS / f"html_{name.replace('.py', '.png')}")
        assert page["errors"] == [] and page["outside"] == [], page
        assert page["load_seconds"] < 2.0, page
        assert page["bytes"] < PAGE_BYTES, page
        report = ARTIFACTS / "html_pages.jsonl"
        with report.open("a") as handle:
            handle.write(json.dumps({"page": executed.with_suffix(".html").name, **page}) + "\n")
        # the subset pickers respond in the page itself: each click shows the figure saved for that state
        payloads = [o["data"][STATES_MIME] for c in code_cells for o in c.outputs if STATES_MIME in o.get("data", {})]
        assert len(payloads) == PICKERS.get(name, 0), f"{name}: {len(payloads)} saved subset pickers"
        if payloads:
            drive_pickers(tmp_path / "html" / executed.with_suffix(".html").name, payloads,
                          ARTIFACTS / f"html_picker_{name.replace('.py', '.png')}")
    check = LIBRARY_CHECKS.get(name)
    if check is not None:
        check(read_records(records_path(tmp_path, Path(name))))


#: what a reader should never see in an executed chapter: warnings, and the repr of an object instead of a
#: number or a figure (a function, numpy scalars, unrounded floats, matplotlib objects)
STRAY = re.compile(r"Warning|<function |np\.float\d*\(|\d\.\d{9,}|<matplotlib\.|^\[<|^Text\(", re.M)
PROGRESS = re.compile(r"\d+%\||it/s|s/it")


def stray_outputs(notebook) -> list[str]:
    """``cell N: text`` for each output of an executed notebook that is a warning or a stray repr."""
    found = []
    for number, cell in enumerate(notebook.cells, start=1):
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if output.output_type == "stream":
                text = output.text if output.name == "stdout" or not PROGRESS.search(output.text) else ""
            elif output.output_type == "execute_result":
                text = output.get("data", {}).get("text/plain", "") if "text/html" not in output.get("data", {}) \
                    and "image/png" not in output.get("data", {}) else ""
            else:
                text = ""
            if STRAY.search(text):
                found.append(f"cell {number}: {text.strip()[:160]}")
    return found


def test_the_stray_output_check_finds_warnings_and_reprs():
    cell = nbformat.v4.new_code_cell("x")
    notebook = nbformat.v4.new_notebook(cells=[cell])
    for text, kind in [("UserWarning: tight_layout", "stderr"), ("[np.float64(0.532)]", "stdout"),
                       ("0.9894000000000001", "stdout")]:
        cell.outputs = [nbformat.v4.new_output("stream", name=kind, text=text)]
        assert len(stray_outputs(notebook)) == 1, text
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "<function show at 0x1>"})]
    assert len(stray_outputs(notebook)) == 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="epoch 1:  50%|##   | 2/4 [1.2it/s]"),
                    nbformat.v4.new_output("stream", name="stdout", text="coherence 0.53")]
    assert stray_outputs(notebook) == []


def _conditional_likelihood_comes_from_the_library(records: dict) -> None:
    """Chapter 5's conditional log-likelihoods of the MMVAE are the library's (its proposal given S is the
    mixture of S's experts, not their product)."""
    from mopoe_lib.book import book_models
    from mopoe_lib.data import load_polymnist
    from mopoe_lib.evaluation import conditional_by_num_inputs

    run = book_models("fast", models=("mmvae",), progress=False)["mmvae"]
    points = load_polymnist("test", "fast").get_batch(torch.arange(24))  # the chapter's FAST N_COND, K, seed
    rows = [r for r in conditional_by_num_inputs(run.model, points.x, 64, seed=0) if r["num_inputs"] == 2]
    assert records["conditional/mmvae/2"] == pytest.approx(sum(r["value"] for r in rows) / len(rows), rel=1e-6)


def _fast_mopoe_learns_the_digit(records: dict) -> None:
    """Chapter 2's own FAST MoPoE (FAST recipe, 4,185 steps) has left chance: about 0.5 coherence from one input
    on the machines measured (0.50 / 0.51 for two seeds; chance is 0.1), rising with every added input."""
    coherence = [records[f"fast/mopoe/coherence/{k}"] for k in range(1, 5)]
    assert coherence[0] > 0.35, coherence
    assert coherence == sorted(coherence) and len(set(coherence)) == 4, coherence


#: checks that a chapter's numbers are the library's, run on the records the executed chapter kept
LIBRARY_CHECKS = {"02_training.py": _fast_mopoe_learns_the_digit,
                  "05_likelihood.py": _conditional_likelihood_comes_from_the_library}


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.py")), ids=lambda p: p.name)
def test_chapter_is_paired_py_percent(path):
    head = path.read_text().splitlines()[:12]
    assert "#   jupytext:" in head and "#     formats: ipynb,py:percent" in head


def test_opening_and_saving_chapters_in_jupyterlab_leaves_them_byte_identical(tmp_path):
    """What JupyterLab does on "Open With > Notebook" and autosave: jupytext's contents manager reads the paired
    chapter and writes it back (the first save creates the .ipynb, the second goes through the pair), after a
    kernel has added its language_info, execution counts and cell timing metadata."""
    import asyncio
    import shutil

    from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
    from jupytext import build_async_jupytext_contents_manager_class

    shutil.copy(ROOT / "jupytext.toml", tmp_path / "jupytext.toml")
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    manager = build_async_jupytext_contents_manager_class(AsyncLargeFileManager)(root_dir=str(tmp_path))

    async def open_run_and_save(name: str) -> None:
        for _ in range(2):
            model = await manager.get(f"notebooks/{name}", content=True, type="notebook")
            model["content"]["metadata"]["language_info"] = {"name": "python", "version": "3.11.7"}
            for cell in model["content"]["cells"]:
                if cell["cell_type"] == "code":
                    cell["execution_count"] = 1
                    cell["metadata"]["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
            await manager.save(model, f"notebooks/{name}")

    changed = []
    for name in EXPECTED_CHAPTERS:
        before = (ROOT / "notebooks" / name).read_bytes()
        asyncio.run(open_run_and_save(name))
        assert (tmp_path / "notebooks" / name.replace(".py", ".ipynb")).is_file(), "the pair was not written"
        if (tmp_path / "notebooks" / name).read_bytes() != before:
            changed.append(name)
    assert changed == [], f"saving rewrote {changed}: check jupytext.toml's metadata filters"


def test_no_notebook_outputs_are_committed():
    tracked = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert tracked == []


@pytest.mark.slow
def test_the_book_stops_at_the_first_failing_cell_and_names_it(tmp_path):
    from mopoe_lib.book.build import ChapterError, execute_chapter

    chapter = tmp_path / "99_broken.py"
    chapter.write_text("# %% [markdown]\n# # Broken\n\n# %%\nx = 1\n\n# %%\nraise ValueError('boom')\n\n"
                       "# %%\nprint('never')\n")
    with pytest.raises(ChapterError) as error:
        execute_chapter(chapter, "fast", timeout=120)
    message = str(error.value)
    assert "99_broken.py" in message and "cell 3 of 4" in message and "raise ValueError('boom')" in message
    assert "FAST" in message and "boom" in message
