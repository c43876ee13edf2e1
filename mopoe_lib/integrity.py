"""Checksums, atomic and durable writes, and the errors a user can act on: a leaf module (no imports from the
rest of the library), used by the data layer, the run folders and the evaluation.

Rules every writer follows:

- a file whose checksum does not match is never used, and nothing else is deleted because of it;
- outputs are written into a temporary sibling and renamed into place, so an interrupted run never leaves a
  half-written file or folder under its final name;
- every "missing" error names the file and the command that creates it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_CHUNK = 1 << 22


class UserError(RuntimeError):
    """An error the user can act on: the message says what is wrong, which file or field, and what fixes it.
    Command lines print it as one line (:func:`guarded`); anything else is a bug and keeps its traceback."""


class DataError(UserError):
    """Data problems the user has to fix (missing, corrupt or inconsistent files)."""


class MissingDataError(DataError, FileNotFoundError):
    """A required file is absent. The message names the file and the command that creates it."""

    def __init__(self, path: Path | str, command: str, what: str = "") -> None:
        self.path = Path(path)
        self.command = command
        detail = f" ({what})" if what else ""
        super().__init__(f"missing {self.path}{detail}. Create it with:\n    {command}")


class ChecksumError(DataError):
    """A file's sha256 differs from the expected one (corrupt, truncated or tampered)."""

    def __init__(self, path: Path | str, expected: str, actual: str, command: str = "") -> None:
        self.path = Path(path)
        self.expected, self.actual = expected, actual
        hint = f" Delete it and recreate it with:\n    {command}" if command else ""
        super().__init__(
            f"checksum mismatch for {self.path}: expected sha256 {expected}, got {actual}. "
            f"The file is corrupt or truncated and was not used.{hint}"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_bytes(data: bytes | memoryview) -> str:
    """Hex sha256 of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path | str, expected: str, command: str = "") -> None:
    """Raise :class:`MissingDataError` or :class:`ChecksumError` unless ``path`` has sha256 ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path, command or "(no command known)")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(path, expected, actual, command)


def fsync_dir(path: Path | str) -> None:
    """Flush a folder's entries (renames, new files) to disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _seal(folder: Path) -> None:
    """Give every file in ``folder`` the usual permissions (safetensors and mkstemp write 0600) and flush the
    files and the folder itself to disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            os.chmod(path, 0o666 & ~_umask())
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    os.chmod(folder, 0o777 & ~_umask())  # mkdtemp creates 0700
    fsync_dir(folder)


@contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success it replaces ``final`` in one rename.

    Before the rename every file and the folder are flushed to disk, and after it the parent folder, so a
    power loss leaves either the old ``final`` or the complete new one. On an exception the temporary folder is
    removed and ``final`` (if it existed) is left untouched. Replacing an existing ``final`` takes two renames
    (old out of the way, new in): a kill between them leaves no ``final``, only ``.<name>.old-<pid>``; callers
    that cannot afford that (checkpoints) write each folder under a new name.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        _seal(tmp)
        if final.exists():
            backup = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(backup)
            tmp.rename(final)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def exclusive(lock_file: Path | str, busy: str) -> Iterator[None]:
    """Hold an exclusive lock (``flock`` on ``lock_file``) for the block; if another process holds it, raise
    :class:`DataError` with ``busy`` at once. On systems without ``flock`` (Windows) nothing is locked."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as handle:
        try:
            import fcntl
        except ImportError:
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DataError(busy) from None
        yield


def remove_temporaries(folder: Path | str, name: str = "*") -> list[Path]:
    """Delete what interrupted atomic writes of ``name`` left in ``folder`` (``.<name>.tmp-*`` and
    ``.<name>.old-*``); call it only while holding the folder's lock. Returns what was removed."""
    folder = Path(folder)
    found = [*folder.glob(f".{name}.tmp-*"), *folder.glob(f".{name}.old-*")] if folder.is_dir() else []
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    return found


def write_json(path: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as indented, key-sorted JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path | str, command: str = "") -> Any:
    """Read JSON, raising :class:`MissingDataError` (with ``command``) when the file is absent."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(path, command or "(no command known)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); recreate it with:\n    {command}") from exc


# ------------------------------------------------------------------------------------------- command lines

#: Exit status for an expected error, and for an interrupt (the shell's convention for SIGINT).
ERROR, INTERRUPTED = 1, 130


def describe(exc: BaseException) -> str:
    """One line (or a few, for a command to run) for an expected error."""
    if isinstance(exc, OSError) and not isinstance(exc, (FileExistsError, FileNotFoundError)):
        where = f" ({exc.filename})" if exc.filename else ""
        reason = {28: "the disk is full", 13: "permission denied", 30: "the file system is read-only"}.get(
            exc.errno or 0, exc.strerror or str(exc))
        return f"cannot write or read{where}: {reason}"
    return str(exc)


def guarded(main: Callable[[], int], interrupted: str = "") -> int:
    """Run a command line's ``main``: expected errors (:class:`UserError`, a bad value's ``ValueError``, an
    ``OSError`` such as a full disk or a read-only folder, an unreadable safetensors file) are printed as
    ``error: ...`` with exit status 1; an interrupt says how to continue. ``MOPOE_DEBUG=1`` shows tracebacks."""
    from safetensors import SafetensorError

    try:
        return main()
    except KeyboardInterrupt:
        print(f"\ninterrupted{'; ' + interrupted if interrupted else ''}", file=sys.stderr)
        return INTERRUPTED
    except (UserError, ValueError, OSError, SafetensorError) as exc:
        if os.environ.get("MOPOE_DEBUG"):
            raise
        print(f"error: {describe(exc)}", file=sys.stderr)
        return ERROR
