"""Checkpoints that survive a kill, a resume that refuses a broken one, and an epoch log.

- :class:`AtomicCheckpointIO`: Lightning's ``TorchCheckpointIO`` writing through
  :func:`mmfusion.files.atomic_write`: a kill or a full disk mid-write leaves the previous
  checkpoint (pass it as a Trainer plugin).
- :func:`check_checkpoint`: a checkpoint is checked (``weights_only=True``) before a resume; a
  broken one is moved aside, never loaded again.
- :class:`EpochLog`: ``log.jsonl`` (one line per completed epoch of
  :attr:`FusionModule.history <mmfusion.lightning.FusionModule>`, which a checkpoint carries over a
  resume) and one status line per epoch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmfusion.files import atomic_write, atomic_write_text

__all__ = ["AtomicCheckpointIO", "EpochLog", "check_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (:func:`mmfusion.files.atomic_write`)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        """Write ``checkpoint`` to the local ``path`` atomically (no ``storage_options``)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint: storage_options are not supported")
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))


def check_checkpoint(path: str | Path, move_aside: bool = True) -> Path:
    """``path`` once it loads (``weights_only=True``) as a Lightning training checkpoint.

    Args:
        path: The checkpoint (e.g. ``last.ckpt``).
        move_aside: Rename a broken one to ``<name>.corrupt-<time>`` (do it on one process only).

    Raises:
        ValueError: It does not load, or is no training checkpoint (no state dict or loop
            state); the message says why and where it was moved.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        problem = None if isinstance(data, dict) and "state_dict" in data and "loops" in data else (
            "not a Lightning training checkpoint (no state_dict or loop state)")
    except Exception as err:  # noqa: BLE001 - any failure to load means unusable
        problem = " ".join(f"{type(err).__name__}: {err}".split())[:200]
    if problem is None:
        return path
    if move_aside:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        problem += f"; moved to {aside}"
    raise ValueError(f"{path} is not a complete checkpoint ({problem})")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EpochLog(Callback):
    """Writes ``<folder>/log.jsonl`` from the module's ``history`` after every epoch and prints one
    line per epoch (loss, its components, learning rate, time, throughput), on rank 0 only.

    Args:
        folder: Where ``log.jsonl`` goes.
        epochs: The number of epochs, for the status line.
        say: Prints a status line (default: to stderr).
    """

    def __init__(self, folder: str | Path, epochs: int, say: Callable[[str], None] = _stderr) -> None:
        self.folder, self.epochs, self.say, self._said = Path(folder), epochs, say, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Log the epoch completed before this one."""
        self.on_train_end(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        """Write ``log.jsonl`` and print the last completed epoch once."""
        if not trainer.is_global_zero:
            return
        history = module.history
        atomic_write_text(self.folder / "log.jsonl", "".join(json.dumps(e) + "\n" for e in history))
        if history and history[-1]["epoch"] != self._said:
            e = history[-1]
            self._said = e["epoch"]
            self.say(", ".join([f"epoch {e['epoch']}/{self.epochs}", f"loss {e['loss']:.4f}"]
                               + [f"{k} {v:.3f}" for k, v in e.items() if k.startswith(("ce_", "consistency"))]
                               + [f"lr {e['lr']:.2e}", f"{e['seconds']:.0f} s", f"{e['pairs_per_s']:.1f} pairs/s"]))
