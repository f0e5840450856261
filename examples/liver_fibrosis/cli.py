"""Command-line error handling: a known problem becomes one line on stderr and exit code 2.

Every entry point of the example runs its ``main`` through :func:`run`. Problems a user can fix
(a missing or malformed manifest, a checkpoint of another configuration, a weights file with other
keys, an unknown preset or backbone, CUDA asked for where there is none, an occupied run folder)
are raised as :class:`CliError` or as the library's ``ValueError``/``FileNotFoundError`` and are
printed as ``error: <what> <fix>``, without a traceback; so are a training that diverged
(``FloatingPointError``: a non-finite loss) and a folder that cannot be written (read-only
filesystem, full disk). Anything else is a bug and keeps its
traceback. Set ``MMFUSION_DEBUG=1`` to get tracebacks for everything.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence

#: Exit code for a usage or input problem (argparse uses the same).
EXIT_USAGE = 2
#: Exit code after Ctrl-C.
EXIT_INTERRUPTED = 130
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


def _known(err: BaseException) -> bool:
    """Whether ``err`` is a problem the user can fix (printed as one line)."""
    if isinstance(err, (CliError, ValueError, FileNotFoundError, NotADirectoryError,
                        PermissionError, FloatingPointError)):
        return True
    return isinstance(err, OSError) and err.errno in USER_OS_ERRORS


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` and turn known problems into one line and exit code 2.

    Args:
        main: The entry point; returns an exit code or ``None`` (0).
        argv: Arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    debug = os.environ.get("MMFUSION_DEBUG", "") not in ("", "0")
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch is kept: rerun with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug or not _known(err):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE


def say(message: str) -> None:
    """Print a status line to stderr (stdout stays free for machine-readable output)."""
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Print a warning line to stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
