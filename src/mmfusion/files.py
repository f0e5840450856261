"""Writing files safely: atomic replacement, and never overwriting another run's outputs unasked.

Every file is written to a temporary name in the same folder and renamed into place
(:func:`os.replace` is atomic on POSIX and Windows), so a process killed mid-write leaves the
previous version intact. Used by :mod:`mmfusion.models` (``save_pretrained``), the example's run
folders and the benchmarks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["atomic_save_tensors", "atomic_write_text", "occupied"]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors (moved to CPU, made contiguous) via a temporary file and a rename."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata or {}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
