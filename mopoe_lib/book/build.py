"""Execute the book: every ``notebooks/NN_*.py`` chapter in order, in FAST or FULL mode.

``python -m mopoe_lib.book --mode fast`` reads each py:percent chapter with jupytext, executes it with
nbclient in a fresh kernel (``MOPOE_MODE`` set for the kernel), and writes the executed notebook to
``build/book/<chapter>.ipynb``. It stops at the first failing cell with the chapter, the cell number and the
error. With ``--html`` it then writes the static HTML edition to ``build/book/html/`` (:mod:`mopoe_lib.book.html`:
every script vendored from npm, nothing loaded from a CDN). The tests run the chapters through this command
too, so CI runs exactly what the book runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..settings import MODE_ENV, MODES, STATIC_ENV, repo_root

#: the environment variable :func:`mopoe_lib.book.record` writes to (kept here so building needs no model code)
RECORD_ENV = "MOPOE_RECORD"

#: Chapters are the notebooks named ``NN_name.py``; anything else in ``notebooks/`` is ignored.
CHAPTER_GLOB = "[0-9][0-9]_*.py"


class ChapterError(RuntimeError):
    """A chapter failed to execute; the message names the chapter and the failing cell."""


class ChapterStalled(ChapterError):
    """A cell exceeded its time limit or the kernel died (not an error raised by the chapter's code)."""


def notebooks_dir() -> Path:
    root = repo_root()
    if root is None:
        raise FileNotFoundError("the book's notebooks live in a checkout of the project; run from there")
    return root / "notebooks"


def chapters(folder: Path | None = None) -> list[Path]:
    """The chapter sources in reading order."""
    return sorted((folder or notebooks_dir()).glob(CHAPTER_GLOB))


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _slice_waits(channel, step: float = 0.5) -> None:
    """Make ``channel.get_msg(timeout)`` wait in short slices.

    Seen here with nbclient 0.11 / pyzmq: a reply that arrives while nbclient awaits it is sometimes not
    noticed until the wait's whole timeout (600 s) has passed: the asyncio wake-up for the socket is missed
    (edge-triggered notification). Polling again every ``step`` seconds finds the queued message at once.
    """
    if getattr(channel, "_mopoe_sliced", False):
        return
    from queue import Empty

    from jupyter_core.utils import ensure_async

    original = channel.get_msg

    async def get_msg(timeout: float | None = None, **kwargs):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = step if deadline is None else max(0.0, min(step, deadline - time.monotonic()))
            try:
                return await ensure_async(original(timeout=wait, **kwargs))
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg
    channel._mopoe_sliced = True


def _client_class():
    from nbclient import NotebookClient

    class SlicedWaitClient(NotebookClient):
        """nbclient's client with short, repeated waits on the kernel's shell and iopub channels."""

        async def async_execute_cell(self, *args, **kwargs):
            _slice_waits(self.kc.shell_channel)
            _slice_waits(self.kc.iopub_channel)
            return await super().async_execute_cell(*args, **kwargs)

    return SlicedWaitClient


def execute_chapter(path: Path, mode: str = "fast", timeout: int | None = 1800,
                    records: Path | None = None):  # -> nbformat.NotebookNode
    """Execute one chapter top to bottom in a fresh kernel and return the executed notebook.

    The kernel runs in the chapter's folder with ``MOPOE_MODE=mode``, the MPLBACKEND set for inline
    figures and ``MOPOE_STATIC_WIDGETS=1`` (subset pickers save every state for the HTML edition). Raises
    :class:`ChapterError` at the first failing cell.
    """
    import jupytext
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    notebook = jupytext.read(path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = _client_class()(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    if records is not None:
        records.unlink(missing_ok=True)
    with _env(MODE_ENV, mode), _env("MPLBACKEND", "module://matplotlib_inline.backend_inline"), \
            _env(RECORD_ENV, str(records) if records is not None else ""), _env(STATIC_ENV, "1"):
        try:
            client.execute()
        except CellExecutionError as exc:
            index = next((i for i, cell in enumerate(notebook.cells)
                          if cell.cell_type == "code" and any(o.get("output_type") == "error"
                                                              for o in cell.get("outputs", []))), None)
            where = "a cell"
            if index is not None:
                first = notebook.cells[index].source.strip().splitlines()[0][:80]
                where = f"cell {index + 1} of {len(notebook.cells)} (`{first}`)"
            raise ChapterError(f"{path.name}: {where} failed in {mode.upper()} mode:\n{exc}") from exc
        except (CellTimeoutError, DeadKernelError) as exc:
            raise ChapterStalled(f"{path.name}: a cell timed out after {timeout} s or the kernel died in "
                               f"{mode.upper()} mode: {exc}") from exc
    return notebook


def records_path(out_dir: Path, chapter: Path) -> Path:
    """Where the numbers a chapter keeps with :func:`mopoe_lib.book.record` go: next to the executed notebook."""
    return out_dir / f"{chapter.stem}.records.jsonl"


#: Per-cell time limits: FAST cells take seconds to minutes on an idle 2-core machine (the longest, chapter 6's
#: training cell, about 3 minutes) but took over 10 on a loaded one (two training runs beside the book); the
#: limit only catches a stalled kernel. FULL cells may train for hours.
CELL_TIMEOUT = {"fast": 1800, "full": None}


def build(mode: str = "fast", out_dir: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """Execute every chapter (or those whose name starts with an entry of ``only``) and save them.

    A chapter whose kernel stalls (a cell exceeds the mode's time limit) or dies is retried once in a fresh
    kernel, with a message; a cell that raises an error stops the book at once.
    """
    import nbformat

    out_dir = out_dir or (notebooks_dir().parent / "build" / "book")
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = [p for p in chapters() if not only or any(p.name.startswith(o) for o in only)]
    if not selected:
        raise FileNotFoundError(f"no chapters matching {only or CHAPTER_GLOB} in {notebooks_dir()}")
    written = []
    for number, path in enumerate(selected, start=1):
        print(f"[{number}/{len(selected)}] {path.name} ({mode.upper()}) ...", flush=True)
        start = time.perf_counter()
        try:
            notebook = execute_chapter(path, mode, CELL_TIMEOUT[mode], records_path(out_dir, path))
        except ChapterStalled as exc:
            print(f"    {exc}\n    retrying {path.name} once in a fresh kernel", flush=True)
            notebook = execute_chapter(path, mode, CELL_TIMEOUT[mode], records_path(out_dir, path))
        target = out_dir / path.with_suffix(".ipynb").name
        nbformat.write(notebook, target)
        written.append(target)
        print(f"    done in {time.perf_counter() - start:.0f} s -> {target}", flush=True)
    return written
