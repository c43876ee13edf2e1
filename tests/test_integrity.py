"""Atomic writes and settings: interrupted work never replaces good data; bad settings list the choices."""

from __future__ import annotations

import pytest

from mopoe_lib.integrity import atomic_dir, atomic_write_bytes
from mopoe_lib.settings import MODE_ENV, run_mode


def test_atomic_dir_keeps_previous_contents_on_failure(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (final / "a.txt").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left behind


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and len(list(tmp_path.iterdir())) == 1
    assert path.stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_run_mode_validates(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "FULL")
    assert run_mode() == "full"
    monkeypatch.setenv(MODE_ENV, "turbo")
    with pytest.raises(ValueError, match="fast, full"):
        run_mode()
