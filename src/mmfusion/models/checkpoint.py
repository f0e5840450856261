"""The saved-model format: ``config.json`` (architecture) + ``model.safetensors`` (weights).

Nothing is pickled: the configuration is JSON, the tensors are safetensors. The format::

    config.json        {"format": "mmfusion.model/1", "mmfusion_version": "...",
                        "model": {<ModelConfig fields>},
                        "normalization": {"mean": [...], "std": [...]}, ...}
                        (other keys are kept and ignored)
    model.safetensors  the model's state dict (frozen BatchNorm statistics included); its
                       metadata records what the weights were trained with: "modalities" (JSON
                       list, in fusion order), "image_size", "num_classes",
                       "normalization_mean" and "normalization_std" (JSON lists)
    README.md          only in what ``FusionClassifier.push_to_hub`` uploads: the Hub's model card

This module writes it (:func:`~mmfusion.models.checkpoint.write_model`, behind :func:`mmfusion.models.save_pretrained` and
:meth:`mmfusion.models.FusionClassifier.save_pretrained`); :mod:`mmfusion.models.pretrained`
reads it back. It knows the configuration, not the model classes, so that the classifier can
save itself without an import cycle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmfusion.files import atomic_save_tensors, atomic_write_text
from mmfusion.models.config import ModelConfig

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "TrainedWith", "write_model"]

FORMAT = "mmfusion.model/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

DIVERGED = ("the model diverged during training: train again with a lower learning rate (and "
            "watch the training loss)")


@dataclass(frozen=True)
class TrainedWith:
    """What a model's weights were trained with, as recorded in the weights file's metadata.

    Attributes:
        modalities: Modality names in fusion order.
        image_size: Input side in pixels.
        num_classes: Number of classes.
        mean: Per-channel normalisation mean of the input images.
        std: Per-channel normalisation standard deviation.
    """

    modalities: tuple[str, ...]
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_metadata(self) -> dict[str, str]:
        """The safetensors metadata entries (strings; lists as JSON)."""
        return {
            "modalities": json.dumps(list(self.modalities)),
            "image_size": str(self.image_size),
            "num_classes": str(self.num_classes),
            "normalization_mean": json.dumps(list(self.mean)),
            "normalization_std": json.dumps(list(self.std)),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], path: Path) -> TrainedWith | None:
        """Read :meth:`to_metadata`'s entries; ``None`` for a file saved without them.

        Raises:
            ValueError: The entries are there but unreadable.
        """
        keys = ("modalities", "image_size", "num_classes", "normalization_mean", "normalization_std")
        if not any(k in metadata for k in keys):
            return None
        try:
            values = {k: json.loads(metadata[k]) for k in keys}
            return cls(
                modalities=tuple(str(m) for m in values["modalities"]),
                image_size=int(values["image_size"]),
                num_classes=int(values["num_classes"]),
                mean=tuple(float(v) for v in values["normalization_mean"]),
                std=tuple(float(v) for v in values["normalization_std"]),
            )
        except (KeyError, TypeError, ValueError, RecursionError) as err:
            raise ValueError(f"weights: {path} holds an unreadable record of its training in its "
                             f"metadata ({type(err).__name__}: {err}); expected the entries {list(keys)}"
                             ) from err


def write_model(
    model: torch.nn.Module,
    config: ModelConfig,
    directory: str | Path,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Path:
    """Write ``model``'s weights and ``config`` into ``directory`` (atomically, file by file).

    Args:
        model: The module whose state dict is saved (already unwrapped from DDP / compile).
        config: The architecture it was built from.
        directory: Folder to write (created if needed).
        overwrite: Replace a model already saved there.
        extra: More JSON keys for ``config.json``.
        normalization: ``(mean, std)`` of the training images; ``None``: ImageNet's.

    Returns:
        The folder.

    Raises:
        ValueError: The parameters or buffers hold NaN or Inf (nothing is written), or
            ``normalization`` is malformed.
        FileExistsError: ``directory`` already holds a saved model and ``overwrite`` is false.
        NotADirectoryError: ``directory`` is a file.
    """
    mean, std = _check_normalization(normalization)
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"directory: {folder} exists and is not a folder")
    taken = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if (folder / n).exists()]
    if taken and not overwrite:
        raise FileExistsError(
            f"directory: {folder} already holds {', '.join(taken)}; pass overwrite=True to replace it"
        )
    state = model.state_dict()
    bad = non_finite(state)
    if bad:
        raise ValueError(f"model: {len(bad)} tensor(s) hold NaN/Inf values (first: {', '.join(bad[:3])})"
                         f"; {DIVERGED}. Nothing was saved to {folder}")
    record = TrainedWith(config.modalities, config.image_size, config.num_classes, mean, std)
    document = {"format": FORMAT, "mmfusion_version": _version(), **dict(extra or {}),
                "model": config.to_dict(), "normalization": {"mean": list(mean), "std": list(std)}}
    atomic_save_tensors(state, folder / WEIGHTS_FILE, {"format": FORMAT, **record.to_metadata()})
    atomic_write_text(folder / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
    return folder


def _check_normalization(
    normalization: tuple[Sequence[float], Sequence[float]] | None,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` as float tuples (ImageNet's for ``None``)."""
    if normalization is None:
        from mmfusion.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    expected = "normalization: expected (mean, std), two equally long sequences of finite numbers " \
               "with std > 0"
    try:
        mean, std = (tuple(float(v) for v in values) for values in normalization)
    except (TypeError, ValueError):
        raise ValueError(f"{expected}, got {normalization!r}") from None
    finite = all(math.isfinite(v) for v in (*mean, *std))
    if not (mean and len(mean) == len(std) and finite and min(std) > 0):
        raise ValueError(f"{expected}, got {normalization!r}")
    return mean, std


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or Inf, in order."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _version() -> str:
    from mmfusion import __version__

    return __version__
