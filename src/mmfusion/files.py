"""Writing files safely: atomic replacement, folder locks, and never overwriting a run unasked.

Every file is written to a temporary name in the destination's own folder (``.<name>.<random>.tmp``,
so on the same filesystem), flushed and fsynced, given the mode the umask allows (as ``open``
would), renamed into place (:func:`os.replace` is atomic on POSIX and Windows) and the folder
fsynced, so a process killed mid-write (or a full disk) leaves the previous version intact.
Temporary files a killed process left behind are found by :func:`stale_temporary_files`.
:func:`replace_checked` writes a file that must pass a check before it replaces the old one.
Used by :mod:`mmfusion.models` (``save_pretrained``), the example's run folders and the benchmarks.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "FolderLocked",
    "atomic_save_tensors",
    "atomic_write",
    "atomic_write_text",
    "file_mode",
    "lock_folder",
    "occupied",
    "remove_stale_candidates",
    "replace_checked",
    "stale_temporary_files",
]

#: Name of the lock file :func:`lock_folder` takes inside a folder.
LOCK_FILE = ".lock"
#: The temporary names of :func:`atomic_write`: ``.<name>.<mkstemp's 8 characters>.tmp``.
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux ``/proc``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()``: ``0o666 & ~umask`` (``0o644`` under umask 022)."""
    return 0o666 & ~_umask()


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(handle)`` on a temporary file in the same folder, then rename.

    The temporary file is flushed and fsynced, given :func:`file_mode`, renamed over ``path`` and
    the folder fsynced; on any error (or interruption) it is removed and ``path`` is untouched.

    Args:
        path: Destination file (its folder is created if needed).
        write: Writes the content to the binary handle it gets (e.g. ``torch.save(obj, handle)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_save_tensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors (moved to CPU, made contiguous) via a temporary file and a rename."""
    import safetensors.torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                    tmp, metadata=dict(metadata or {}))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def stale_temporary_files(folder: str | Path, older_than: float) -> list[Path]:
    """Temporary files of :func:`atomic_write` under ``folder`` (recursively) last modified before
    ``older_than`` (a :func:`time.time` value): left behind by a process killed while writing.

    Only call this while holding the folder's :func:`lock_folder`, so no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob(".*.tmp"):
        with contextlib.suppress(OSError):
            if _TEMPORARY.match(path.name) and path.is_file() and path.stat().st_mtime < older_than:
                found.append(path)
    return sorted(found)


class FolderLocked(BlockingIOError):
    """Another process holds the folder's lock; :attr:`pid` is its process id (or ``None``)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"{folder}: another process ({holder}) holds {folder / LOCK_FILE}")
        self.folder, self.pid = folder, pid


@contextlib.contextmanager
def lock_folder(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive, non-blocking lock on ``folder`` (``flock`` on ``folder/.lock``).

    The folder is created if needed; the lock file keeps the holder's pid and stays after release
    (removing it would let two processes lock two different files). Released when the block ends,
    or by the OS when the process dies. Where ``fcntl`` is missing (Windows) nothing is locked.

    Yields:
        The folder.

    Raises:
        FolderLocked: Another process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield folder
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, file_mode())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            raise FolderLocked(folder, int(text) if text.isdigit() else None) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock


def occupied(folder: str | Path, names: Iterable[str]) -> list[str]:
    """Which of ``names`` (files, folders or glob patterns) already exist in ``folder``, sorted.

    The one rule for "this folder holds a previous run": callers refuse to write unless the user
    passed ``--overwrite`` (or ``--resume``), and say which names were found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: set[str] = set()
    for name in names:
        found.update(p.name for p in folder.glob(name))
    return sorted(found)


def remove_stale_candidates(path: str | Path) -> list[Path]:
    """Delete the candidates of :func:`replace_checked` for ``path`` (``.<name>.*.tmp`` beside it)
    that no process holds locked (those of killed processes); returns the files deleted."""
    import fcntl

    path, removed = Path(path), []
    for candidate in sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
        try:
            fd = os.open(candidate, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it
            continue
        else:
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def replace_checked(path: str | Path) -> Iterator[Path]:
    """A candidate file beside ``path`` to write and check in the block: it replaces ``path``
    atomically (and the folder is fsynced) when the block ends without error, and is deleted
    otherwise, so a failed write or check leaves ``path`` as it was.

    The candidate (``.<name>.<random>.tmp``) is locked (``flock``) while the block runs: a
    :func:`remove_stale_candidates` of another process keeps it; the candidates of killed processes
    are deleted first. Needs ``fcntl`` (POSIX).

    Yields:
        The candidate's path (an empty file).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_candidates(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    candidate = Path(name)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until the end: marks the candidate as in use
        yield candidate
        os.replace(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)
        os.close(fd)
    _fsync_folder(path.parent)
