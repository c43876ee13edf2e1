"""What every command line of the library shares: expected errors become one line and a non-zero exit.

An *expected* error is one the user can act on: a bad config value, missing or corrupt data, a damaged or
edited run folder, a full disk or a read-only folder, a NaN loss. The message says what is wrong, which file or
field, and the command that fixes it. Anything else is a bug and keeps its traceback. Set ``MOPOE_DEBUG=1`` to
see the traceback of an expected error too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from safetensors import SafetensorError

from .integrity import DataError
from .runs import CheckpointError, NonFiniteError

#: Exit status for an expected error, and for an interrupt (the shell's convention for SIGINT).
ERROR, INTERRUPTED = 1, 130
EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError, DataError, CheckpointError, NonFiniteError,
                                             SafetensorError)


def describe(exc: BaseException) -> str:
    """One line (or a few, for a command to run) for an expected error."""
    if isinstance(exc, OSError) and not isinstance(exc, (DataError, FileExistsError, FileNotFoundError)):
        where = f" ({exc.filename})" if exc.filename else ""
        reason = {28: "the disk is full", 13: "permission denied", 30: "the file system is read-only"}.get(
            exc.errno or 0, exc.strerror or str(exc))
        return f"cannot write or read{where}: {reason}"
    return str(exc)


def guarded(main: Callable[[], int], interrupted: str = "") -> int:
    """Run ``main``; print expected errors as ``error: ...`` and return a non-zero status for them."""
    try:
        return main()
    except KeyboardInterrupt:
        print(f"\ninterrupted{'; ' + interrupted if interrupted else ''}", file=sys.stderr)
        return INTERRUPTED
    except EXPECTED as exc:
        if os.environ.get("MOPOE_DEBUG"):
            raise
        print(f"error: {describe(exc)}", file=sys.stderr)
        return ERROR
