"""End to end in a real browser: JupyterLab serves the chapters with subset pickers (1, 3 and 4, each up to its
picker), headless Chromium runs them and toggles a modality (and, in chapter 3, the model), and the figure the
kernel draws changes.

Chromium is Debian's ``chromium`` package (``make test`` installs it with apt when it is missing), driven by
Playwright through ``executable_path``; Playwright's own browser download does not work offline. The test
skips, saying why, only when no Chromium binary can be found on the machine. A screenshot is saved as a test
artifact in ``build/test-artifacts/``. The HTML edition's pickers, which switch between saved figures without a
kernel, are driven on the built pages by ``test_notebooks.py``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import jupytext
import nbformat
import pytest
from browser import ARTIFACTS, CHROMIUM, ROOT, SKIP_REASON, launch, local_only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


VISIBLE_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"
#: chapter -> the toggle button (if any) to click after the second modality's checkbox
LAB_PICKERS = {"01_mean_functions.py": None, "03_latent_spaces.py": "mmvae", "04_coherence.py": None}


def _up_to_picker(chapter: str):
    """The chapter's cells up to and including the first one that displays a subset picker."""
    notebook = jupytext.read(ROOT / "notebooks" / chapter)
    last = next(i for i, cell in enumerate(notebook.cells)
                if cell.cell_type == "code" and "subset_picker(" in cell.source and "display(" in cell.source)
    notebook.cells = notebook.cells[:last + 1]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a token, serving the chapters with pickers as .ipynb files."""
    tmp_path = tmp_path_factory.mktemp("lab")
    for chapter in LAB_PICKERS:
        nbformat.write(_up_to_picker(chapter), tmp_path / chapter.replace(".py", ".ipynb"))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "MOPOE_MODE": "fast", "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("JupyterLab did not start: " + server.stdout.read().decode()[-2000:])
    yield base, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _wait_for_new_src(page, figure, before: str | None, seconds: float = 120) -> str | None:
    after, deadline = before, time.monotonic() + seconds
    while after == before and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        if figure.count():
            after = figure.get_attribute("src")
    return after


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
@pytest.mark.parametrize("chapter", LAB_PICKERS)
def test_toggling_a_subset_checkbox_redraws_the_figure(lab, chapter):
    from playwright.sync_api import sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{chapter.replace('.py', '.ipynb')}?token={token}")
        panel = page.locator(VISIBLE_PANEL)  # earlier tests' notebooks stay open in hidden tabs
        panel.first.wait_for(timeout=60_000)
        select = page.locator(".jp-Dialog button:has-text('Select')")
        try:  # JupyterLab 4 may ask for a kernel first
            select.first.click(timeout=10_000)
        except Exception:  # noqa: BLE001 -- no dialog shown: the kernel from the metadata was started
            pass
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator, .jp-Toolbar", timeout=30_000)
        panel.first.click()
        page.keyboard.press("Control+Shift+C")
        page.keyboard.type("Run All Cells")
        page.keyboard.press("Enter")
        # wait until every code cell has run: a click queued behind busy cells would not redraw in time
        page.wait_for_function(
            f"() => {{ const prompts = [...document.querySelectorAll('{VISIBLE_PANEL} .jp-CodeCell .jp-InputPrompt')];"
            " return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent)); }",
            timeout=600_000)
        picker = panel.locator(".mopoe-subset-picker").first
        box = picker.locator(".widget-checkbox input[type=checkbox]").nth(1)
        box.wait_for(timeout=240_000)
        figure = picker.locator(".widget-output img").first
        figure.wait_for(timeout=120_000)
        before = figure.get_attribute("src")
        box.click()
        after = _wait_for_new_src(page, figure, before)
        changed = [before != after]
        button = LAB_PICKERS[chapter]
        if button is not None:  # another model: the figure changes again
            picker.locator(f".widget-toggle-button:text-is('{button}')").click()
            changed.append(_wait_for_new_src(page, figure, after) != after)
        page.screenshot(path=str(ARTIFACTS / f"browser_picker_{chapter.replace('.py', '.png')}"), full_page=False)
        browser.close()
    assert before and after and all(changed), changed


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=SKIP_REASON)
def test_static_html_edition_renders_widgets_and_math_offline(tmp_path):
    """The HTML edition opened from disk: the embedded widget state and the math render, and the page asks
    for nothing outside the build folder."""
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
    from playwright.sync_api import sync_playwright

    from mopoe_lib.book.html import export_html, vendor

    notebook = new_notebook(cells=[
        new_markdown_cell("# 9. A page\n\nThe bound: $\\log p(X) \\geq \\mathcal{L}$."),
        new_code_cell("import ipywidgets as w\nw.VBox([w.Checkbox(value=True, description='expert B'), "
                      "w.IntSlider(value=7, description='K')])"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    source = tmp_path / "09_page.ipynb"
    nbformat.write(notebook, source)
    out = tmp_path / "html"
    vendor(out, ROOT / "build" / "npm")
    export_html([source], out)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        outside, errors = local_only(page)
        page.goto((out / "09_page.html").as_uri())
        page.wait_for_selector(".widget-checkbox input[type=checkbox]", timeout=60_000)
        page.wait_for_selector("mjx-container", timeout=60_000)
        checked = page.locator(".widget-checkbox input[type=checkbox]").first.is_checked()
        slider = page.locator(".widget-readout").first.text_content()
        page.screenshot(path=str(ARTIFACTS / "html_edition.png"))
        index = browser.new_page()
        index.goto((out / "index.html").as_uri())
        link = index.locator("ol a").first.get_attribute("href")
        browser.close()
    assert checked and slider.strip() == "7"
    assert link == "09_page.html"
    assert outside == [] and errors == []
