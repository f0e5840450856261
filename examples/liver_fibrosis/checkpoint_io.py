"""Checkpoints that survive a kill: atomic writes, and a resume that finds a complete checkpoint.

Lightning's ``TorchCheckpointIO`` writes ``last.ckpt`` in place: a process killed during the write
(or a full disk) leaves it truncated. :class:`AtomicCheckpointIO` writes every checkpoint through
:func:`mmfusion.files.atomic_write` (a temporary file in the checkpoint's own folder, fsynced,
renamed), so ``last.ckpt`` is always either the previous complete epoch or the new one.
:func:`usable_checkpoint` checks a checkpoint before ``--resume`` uses it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmfusion.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (temporary file in place, fsync, rename)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to ``path`` (a local path) atomically.

        Raises:
            TypeError: ``storage_options`` given (not supported, as in ``TorchCheckpointIO``).
        """
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint: storage_options are not supported")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint (``None``: it loads with ``weights_only=True``
    and has the model's weights and the loop state)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to load means unusable
        return " ".join(f"{type(err).__name__}: {err}".split())[:200]
    if not isinstance(data, dict) or "state_dict" not in data or "loops" not in data:
        return "not a Lightning training checkpoint (no state_dict or loop state)"
    return None


def usable_checkpoint(path: Path, quarantine: bool = True) -> tuple[Path | None, str | None]:
    """``(path, None)`` when ``path`` is a complete checkpoint; ``(None, reason)`` when it is not
    (it is then renamed to ``<name>.corrupt-<time>`` when ``quarantine``, so that it is kept for
    inspection and never loaded again); ``(None, None)`` when there is none."""
    if not path.is_file():
        return None, None
    problem = checkpoint_problem(path)
    if problem is None:
        return path, None
    if quarantine:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        problem += f"; moved to {aside}"
    return None, problem
