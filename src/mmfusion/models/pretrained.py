"""Whole-model persistence: ``config.json`` (architecture) + ``model.safetensors`` (weights).

Nothing is pickled: the configuration is JSON, the tensors are safetensors. The format::

    config.json        {"format": "mmfusion.model/1", "mmfusion_version": "...",
                        "model": {<ModelConfig fields>}, ...}   (other keys are kept and ignored)
    model.safetensors  the model's state dict (frozen BatchNorm statistics included)

A training run folder of the liver fibrosis example has the same two files, so
``from_pretrained("runs/liver_fibrosis")`` loads a trained run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from mmfusion.files import atomic_save_tensors, atomic_write_text
from mmfusion.models.builder import build_model
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig, config_from_dict

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "from_pretrained", "load_weights", "read_model_config",
           "save_pretrained"]

FORMAT = "mmfusion.model/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def save_pretrained(
    model: FusionClassifier,
    directory: str | Path,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` (architecture + weights) into ``directory``.

    Args:
        model: A model built from a :class:`ModelConfig` (wrappers such as DDP or
            ``torch.compile`` are looked through).
        directory: Folder to write.
        overwrite: Replace a model already saved there.
        extra: More JSON keys for ``config.json`` (e.g. a training run's settings).

    Returns:
        The folder.
    """
    model = _unwrap(model)
    if not isinstance(model, FusionClassifier):
        raise TypeError(
            f"model: expected a FusionClassifier (built by mmfusion.models.create_model or "
            f"build_model), got {type(model).__name__}; a hand-assembled MultiModalClassifier has "
            "no configuration to save: save its state_dict with safetensors instead"
        )
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"directory: {folder} exists and is not a folder")
    taken = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if (folder / n).exists()]
    if taken and not overwrite:
        raise FileExistsError(
            f"directory: {folder} already holds {', '.join(taken)}; pass overwrite=True to replace it"
        )
    document = {"format": FORMAT, "mmfusion_version": _version(), **dict(extra or {}),
                "model": model.config.to_dict()}
    atomic_save_tensors(model.state_dict(), folder / WEIGHTS_FILE, {"format": FORMAT})
    atomic_write_text(folder / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
    return folder


def read_model_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` saved in ``directory/config.json``.

    Raises:
        FileNotFoundError: No ``config.json`` there.
        ValueError: Not a model configuration of this format.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"directory: no {CONFIG_FILE} in {Path(directory)}; pass a folder "
                                "written by save_pretrained (or a training run's folder)")
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"{path}: expected format {FORMAT!r}, found {found!r}; not a saved mmfusion model")
    return config_from_dict(ModelConfig, document.get("model", {}), str(path))


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``model``, strictly, with one error naming any mismatch.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: Unreadable file, or tensors of another architecture (missing, unexpected or
            differently shaped names, with an example of each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no {path.name} at {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"weights: {path} is not a readable safetensors file ({err})") from err
    target = _unwrap(model)
    expected = target.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(k for k in set(expected) & set(tensors)
                    if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: file "
                         f"{tuple(tensors[k].shape)}, model {tuple(expected[k].shape)})")
        raise ValueError(f"weights: {path} was saved from another architecture: {'; '.join(parts)} tensors")
    target.load_state_dict(tensors, strict=True)


def from_pretrained(directory: str | Path, *, map_location: str | torch.device = "cpu") -> FusionClassifier:
    """Rebuild a model saved by :func:`save_pretrained` (no ImageNet weights are needed or fetched).

    Args:
        directory: Folder holding ``config.json`` and ``model.safetensors``.
        map_location: Device of the returned model.

    Returns:
        The model in eval mode; its outputs equal the saved model's exactly.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: Another format, or weights that do not fit the saved configuration.
    """
    config = read_model_config(directory)
    state = torch.random.get_rng_state()
    try:  # random initialisation is overwritten; do not disturb the caller's generator
        model = build_model(config, weights=None)
    finally:
        torch.random.set_rng_state(state)
    load_weights(model, Path(directory) / WEIGHTS_FILE)
    return model.to(map_location).eval()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _version() -> str:
    from mmfusion import __version__

    return __version__
