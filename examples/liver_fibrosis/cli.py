"""Command-line errors: a problem a user can fix is one ``error:`` line and exit code 2 (``MMFUSION_DEBUG=1``: traceback)."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

#: The extra that provides what the example needs beyond the library.
EXTRA = 'pip install "mmfusion[example]"'
#: ``OSError`` numbers a user fixes by choosing another folder or freeing space: one line.
USER_OS_ERRORS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM})


class CliError(Exception):
    """A problem with the command line or its inputs; the message names it and the fix."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    if isinstance(err, FloatingPointError) and "lr" not in text:
        text += "; training diverged: lower --lr or check the data (no model was saved)"
    return text


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; known problems become one line and exit code 2, Ctrl-C 130."""
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch is kept: rerun with --resume", file=sys.stderr)
        return 130
    except Exception as err:
        known = isinstance(err, (CliError, ValueError, FileNotFoundError, NotADirectoryError,
                                 PermissionError, FloatingPointError)) or (
            isinstance(err, OSError) and err.errno in USER_OS_ERRORS)
        if os.environ.get("MMFUSION_DEBUG", "") not in ("", "0") or not known:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2


def say(message: str) -> None:
    """Print a status line to stderr (stdout stays free for machine-readable output)."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print a warning line to stderr."""
    say(f"warning: {message}")
