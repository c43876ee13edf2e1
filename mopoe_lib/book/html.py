"""The static HTML edition of the book: executed chapters with figures and embedded widget state, offline.

nbconvert's HTML pages load require.js, the Jupyter widgets HTML manager and MathJax from CDNs by default, and
its lab template imports mermaid from a CDN. Here every script comes from a local ``vendor/`` folder next to the
pages, filled from the npm registry at build time (:func:`vendor`; needs ``npm``), and mermaid is left out
(the book has no mermaid diagrams). Widgets render from the state saved during execution (static: moving a
slider in the HTML does not re-run Python; open the notebook in JupyterLab for that).
"""

from __future__ import annotations

import html
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


def _title(notebook) -> str:
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def export_html(notebooks: Sequence[Path], out_dir: Path) -> Path:
    """Write one HTML page per executed notebook and an ``index.html`` linking them in order; return the index.

    The pages reference only the local ``vendor/`` folder (see :func:`vendor`); a page that would load a remote
    script raises ``RuntimeError`` instead of being written.
    """
    import nbformat
    from nbconvert import HTMLExporter

    out_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATE_DIR)], template_name="mopoe", **VENDOR_URLS)
    entries = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(notebook)
        if REMOTE_SCRIPT.search(body):
            raise RuntimeError(f"{path.name}: the HTML would load a remote script: "
                               f"{REMOTE_SCRIPT.search(body).group(0)!r}")
        page = out_dir / path.with_suffix(".html").name
        page.write_text(body, encoding="utf-8")
        entries.append((page.name, _title(notebook)))
    items = "\n".join(f'  <li><a href="{html.escape(name)}">{html.escape(title)}</a></li>' for name, title in entries)
    index = out_dir / "index.html"
    index.write_text(f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Multimodal VAEs: the book</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:3em auto;line-height:1.5}}</style></head>
<body><h1>Multimodal VAEs: MVAE, MMVAE and MoPoE-VAE</h1>
<p>The executed chapters, in reading order. Widgets show the state saved when the chapter ran; open the
notebooks in JupyterLab to interact with them.</p>
<ol>
{items}
</ol></body></html>
""", encoding="utf-8")
    return index
