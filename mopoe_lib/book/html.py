"""The static HTML edition of the book: executed chapters with figures and embedded widget state, offline.

nbconvert's HTML pages load require.js, the Jupyter widgets HTML manager and MathJax from CDNs by default, and
its lab template imports mermaid from a CDN. Here every script comes from a local ``vendor/`` folder next to the
pages, filled from the npm registry at build time (:func:`vendor`; needs ``npm``), and mermaid is left out
(the book has no mermaid diagrams).

Widgets render from the state saved during execution. The book's subset pickers
(:func:`mopoe_lib.viz.subset_picker`) stay interactive without a kernel: the build saves the figure of every
state they can reach (:data:`mopoe_lib.viz.widgets.STATES_MIME`), and :func:`static_picker` turns that output into
checkboxes and buttons that switch between the saved figures with a small script of ours
(``static/mopoe-picker.js``, copied to ``vendor/``). Other widgets (sliders) show their saved state only; open
the notebook in JupyterLab to move them.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: npm packages copied into ``vendor/`` (pinned: the pages reference files inside them)
VENDOR_PACKAGES = {"@jupyter-widgets/html-manager": "1.0.15", "requirejs": "2.3.8", "mathjax": "3.2.2"}
#: page-relative URLs of the vendored scripts
VENDOR_URLS = {
    "require_js_url": "vendor/requirejs/require.js",
    "widget_renderer_url": "vendor/html-manager/embed-amd.js",
    "mathjax_url": "vendor/mathjax/tex-chtml-full.js",
}
_COPIES = {  # node_modules path -> vendor path
    "requirejs/require.js": "requirejs/require.js",
    "@jupyter-widgets/html-manager/dist": "html-manager",
    "mathjax/es5": "mathjax",
}
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
#: our own page script for the subset pickers, and where the pages load it from
PICKER_SCRIPT = Path(__file__).resolve().parent / "static" / "mopoe-picker.js"
PICKER_URL = "vendor/mopoe-picker.js"
#: the README's two commands, repeated on the edition's "run this book yourself" page
RUN_COMMANDS = (("make book", "create the environment, prepare the data, execute every chapter (FAST) and write "
                              "this HTML edition"),
                ("make test", "lint and run the test suite"))
REMOTE_SCRIPT = re.compile(r"""<script[^>]*\bsrc\s*=\s*["'](?:https?:)?//|import\(\s*["'](?:https?:)?//"""
                           r"""|(?:Src|src|url)\s*=\s*["'](?:https?:)?//[^"']*\.(?:m?js)["']""", re.I)


def vendor(out_dir: Path, cache: Path) -> Path:
    """Install the pinned npm packages into ``cache`` (once) and copy what the pages need to ``out_dir/vendor``.

    Raises:
        FileNotFoundError: ``npm`` is not installed (the message says what to install).
        subprocess.CalledProcessError: npm failed (e.g. no access to the npm registry).
    """
    modules = cache / "node_modules"
    if not all((modules / name / "package.json").is_file() for name in VENDOR_PACKAGES):
        if shutil.which("npm") is None:
            raise FileNotFoundError("the HTML edition vendors its JavaScript with npm: install Node.js and npm "
                                    "(Debian: apt-get install nodejs npm), or build without --html")
        cache.mkdir(parents=True, exist_ok=True)
        specs = [f"{name}@{version}" for name, version in VENDOR_PACKAGES.items()]
        subprocess.run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--ignore-scripts",
                        "--prefix", str(cache), *specs], check=True, capture_output=True, text=True)
    target = out_dir / "vendor"
    for source, dest in _COPIES.items():
        src, dst = modules / source, target / dest
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.map"))
        else:
            shutil.copyfile(src, dst)
    return target


def static_picker(payload: dict) -> str:
    """The HTML of one subset picker for the edition: the controls, the checkboxes, the figure of the state
    saved as selected (so the page shows it before any script runs) and every saved state as JSON."""
    from ..viz.widgets import state_key

    rows = []
    for control in payload["controls"]:
        buttons = "".join(
            f'<button type="button" data-index="{i}" aria-pressed="{str(i == control["index"]).lower()}"'
            f'{ACTIVE if i == control["index"] else ""}>{html.escape(label)}</button>'
            for i, label in enumerate(control["labels"]))
        rows.append(f'<div class="mopoe-control" data-name="{html.escape(control["name"])}" '
                    f'data-index="{control["index"]}"><span>{html.escape(control["description"])}</span>{buttons}</div>')
    checks = "".join(f'<label><input type="checkbox" value="{m}"{" checked" if m in payload["selected"] else ""}> '
                     f'{html.escape(name)}</label>' for m, name in enumerate(payload["names"]))
    key = state_key(payload["selected"], [c["index"] for c in payload["controls"]])
    shown = []
    for item in payload["states"].get(key, []) if payload["selected"] else []:
        if item["type"] == "image":
            shown.append(f'<img src="data:{item["mime"]};base64,{item["data"]}" width="{item["width"]}" '
                         f'style="max-width:100%;height:auto" alt="figure for the chosen subset">')
        else:
            shown.append(f"<pre>{html.escape(item['text'])}</pre>")
    if not payload["selected"]:
        shown.append(f"<pre>{html.escape(payload['empty'])}</pre>")
    data = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    return (f'<div class="mopoe-picker" data-state="{key}">{"".join(rows)}<div class="mopoe-checks">{checks}</div>'
            f'<div class="mopoe-output">{"".join(shown)}</div>'
            f'<script type="application/json" class="mopoe-states">{data}</script></div>')


def static_pickers(notebook) -> int:
    """Replace every saved subset picker's output (live widget view plus saved states) by :func:`static_picker`'s
    HTML, in place; returns how many were replaced."""
    from ..viz.widgets import STATES_MIME

    count = 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            payload = output.get("data", {}).get(STATES_MIME)
            if payload is not None:
                output["data"] = {"text/html": static_picker(payload), "text/plain": "subset picker"}
                count += 1
    return count


def _run_page(out_dir: Path) -> Path:
    commands = "\n".join(f"<dt><code>{html.escape(command)}</code></dt><dd>{html.escape(what)}</dd>"
                         for command, what in RUN_COMMANDS)
    page = out_dir / "run-it-yourself.html"
    page.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run this book yourself</title>
<style>{_INDEX_CSS}</style></head>
<body><h1>Run this book yourself</h1>
<p>Clone the book's repository and run, in its folder, one of its two commands (they create a Python virtual
environment in <code>.venv</code> and install everything into it; no GPU needed):</p>
<dl>
{commands}
</dl>
<p>Then open the chapters in JupyterLab (<code>.venv/bin/jupyter lab notebooks/</code>): every widget is live there,
computed by the kernel. <code>make book MODE=full</code> trains at the paper's scale (a GPU is strongly advised).</p>
<p><a href="index.html">Back to the chapters</a></p>
</body></html>
""", encoding="utf-8")
    return page


ACTIVE = ' class="mopoe-active"'
_INDEX_CSS = "body{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5}"


def _title(notebook) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def export_html(notebooks: Sequence[Path], out_dir: Path) -> Path:
    """Write one HTML page per executed notebook and an ``index.html`` linking them in order; return the index.

    The pages reference only the local ``vendor/`` folder (see :func:`vendor`; our picker script is copied there
    too); a page that would load a remote script raises ``RuntimeError`` instead of being written. Subset pickers
    with saved states become offline-interactive (:func:`static_pickers`). The index also links a page with the
    commands to run the book yourself; all links are relative, so the folder can be published as a static site.
    """
    import nbformat
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PICKER_URL).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PICKER_SCRIPT, out_dir / PICKER_URL)
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATE_DIR)], template_name="mopoe", **VENDOR_URLS)
    entries = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        static_pickers(notebook)
        body, _ = exporter.from_notebook_node(notebook)
        if REMOTE_SCRIPT.search(body):
            raise RuntimeError(f"{path.name}: the HTML would load a remote script: "
                               f"{REMOTE_SCRIPT.search(body).group(0)!r}")
        page = out_dir / path.with_suffix(".html").name
        page.write_text(body, encoding="utf-8")
        entries.append((page.name, _title(notebook)))
    _run_page(out_dir)
    items = "\n".join(f'  <li><a href="{html.escape(name)}">{html.escape(title)}</a></li>' for name, title in entries)
    index = out_dir / "index.html"
    index.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Multimodal VAEs: the book</title>
<style>{_INDEX_CSS}</style></head>
<body><h1>Multimodal VAEs: MVAE, MMVAE and MoPoE-VAE</h1>
<p>The executed chapters, in reading order. Tick the modalities of a subset picker and its figure changes: every
subset's figure was drawn when the chapter ran, so the page needs no Python and no network. Sliders show the
value they had when the chapter ran; <a href="run-it-yourself.html">run the book yourself</a> to move them.</p>
<ol>
{items}
</ol></body></html>
""", encoding="utf-8")
    return index
