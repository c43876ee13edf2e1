"""The library's shape: imports run one way (leaves first), and every function fits on a screen.

Layers, bottom to top: what a module may import is its own package and anything in a lower layer, never a
higher one (in particular evaluation never imports training, and nothing below the book imports the book).
Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mopoe_lib"
LAYERS = {
    "mopoe_lib": 0, "settings": 0, "integrity": 0,  # the package root holds only the version
    "data": 1, "fusion": 1, "likelihoods": 1, "viz": 1,
    "networks": 2, "model": 2,
    "objectives": 3, "toy": 3, "sampler": 3,
    "config": 4,
    "runs": 5,
    "evaluation": 6,
    "train": 7,
    "pretrained": 8, "book": 8,
}
MAX_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _top(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "mopoe_lib" if parts == ("__init__",) else parts[0]


def _package_of(path: Path) -> list[str]:
    """The dotted package a module belongs to, as parts (``mopoe_lib/train/trainer.py`` -> mopoe_lib, train)."""
    return list(path.relative_to(PACKAGE.parent).with_suffix("").parts)[:-1]


def _imported_tops(source: str, package: list[str]) -> set[str]:
    """The top-level library modules a module's ``source`` imports (relative and absolute, at any depth)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            # names imported from a package root may be modules: `from mopoe_lib import viz`, `from . import runs`
            names = [target + [a.name] for a in node.names] if target == ["mopoe_lib"] else [target]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        for name in names:
            if name and name[0] == "mopoe_lib":
                found.add(name[1] if len(name) > 1 else "mopoe_lib")
    return found


def test_every_module_has_a_layer():
    assert {_top(p) for p in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_never_run_upward(path):
    own = _top(path)
    imported = _imported_tops(path.read_text(), _package_of(path)) - {own}
    upward = sorted(t for t in imported if t in LAYERS and LAYERS[t] >= LAYERS[own])
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {LAYERS[own]}) imports {upward} (layers " \
                       f"{[LAYERS[t] for t in upward]})"


def test_the_layer_check_sees_every_form_of_import():
    evaluation = ["mopoe_lib", "evaluation"]
    assert _imported_tops("def f():\n    from ..train import train\n", evaluation) == {"train"}
    assert _imported_tops("from .coherence import x\nfrom ..runs import y\n", evaluation) == {"evaluation", "runs"}
    assert _imported_tops("import mopoe_lib.book.html\nfrom mopoe_lib import viz\n", evaluation) == {"book", "viz"}
    assert _imported_tops("from . import runs\n", ["mopoe_lib"]) == {"runs"}


def test_every_function_fits_on_a_screen():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == [], f"functions over {MAX_LINES} lines: {long}"
