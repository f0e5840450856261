"""Whole-model persistence: ``config.json`` (architecture) + ``model.safetensors`` (weights).

Nothing is pickled: the configuration is JSON, the tensors are safetensors. The format::

    config.json        {"format": "mmfusion.model/1", "mmfusion_version": "...",
                        "model": {<ModelConfig fields>},
                        "normalization": {"mean": [...], "std": [...]}, ...}
                        (other keys are kept and ignored)
    model.safetensors  the model's state dict (frozen BatchNorm statistics included); its
                       metadata records what the weights were trained with: "modalities" (JSON
                       list, in fusion order), "image_size", "num_classes",
                       "normalization_mean" and "normalization_std" (JSON lists)

Loading checks, before any model is built, that ``config.json`` agrees with that record and that
its sizes fit the tensor shapes of the weights file (read from its header, without loading the
tensors), and refuses weights that hold NaN or Inf. Files saved before the record existed (their
metadata holds only the format) still load; for them only the tensor shapes are checked.

A training run folder of the liver fibrosis example has the same two files, so
``from_pretrained("runs/liver_fibrosis")`` loads a trained run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mmfusion.files import atomic_save_tensors, atomic_write_text
from mmfusion.models.builder import build_model
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig, config_from_dict

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "TrainedWith", "from_pretrained", "load_weights",
           "read_model_config", "read_trained_with", "save_pretrained"]

FORMAT = "mmfusion.model/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

_DIVERGED = ("the model diverged during training: train again with a lower learning rate (and "
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


def save_pretrained(
    model: FusionClassifier,
    directory: str | Path,
    *,
    overwrite: bool = False,
    extra: Mapping[str, Any] | None = None,
    normalization: tuple[Sequence[float], Sequence[float]] | None = None,
) -> Path:
    """Save ``model`` (architecture + weights) into ``directory``.

    The weights file records what the weights were trained with (modality order, image size,
    class count, input normalisation) in its metadata; :func:`from_pretrained` refuses a
    ``config.json`` that disagrees with it.

    Args:
        model: A model built from a :class:`ModelConfig` (wrappers such as DDP or
            ``torch.compile`` are looked through).
        directory: Folder to write.
        overwrite: Replace a model already saved there.
        extra: More JSON keys for ``config.json`` (e.g. a training run's settings).
        normalization: ``(mean, std)`` per input channel that the training images were
            normalised with; ``None``: ImageNet's (:data:`mmfusion.data.IMAGENET_MEAN` /
            ``IMAGENET_STD``, the default of :mod:`mmfusion.data`'s transforms).

    Returns:
        The folder.

    Raises:
        TypeError: ``model`` is not a :class:`FusionClassifier`.
        ValueError: The model's parameters or buffers hold NaN or Inf (nothing is written), or
            ``normalization`` is malformed.
        FileExistsError: ``directory`` already holds a saved model and ``overwrite`` is false.
    """
    model = _unwrap(model)
    if not isinstance(model, FusionClassifier):
        raise TypeError(
            f"model: expected a FusionClassifier (built by mmfusion.models.create_model or "
            f"build_model), got {type(model).__name__}; a hand-assembled MultiModalClassifier has "
            "no configuration to save: save its state_dict with safetensors instead"
        )
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
    bad = _non_finite(state)
    if bad:
        raise ValueError(f"model: {len(bad)} tensor(s) hold NaN/Inf values (first: {', '.join(bad[:3])})"
                         f"; {_DIVERGED}. Nothing was saved to {folder}")
    config = model.config
    record = TrainedWith(config.modalities, config.image_size, config.num_classes, mean, std)
    document = {"format": FORMAT, "mmfusion_version": _version(), **dict(extra or {}),
                "model": config.to_dict(), "normalization": {"mean": list(mean), "std": list(std)}}
    atomic_save_tensors(state, folder / WEIGHTS_FILE, {"format": FORMAT, **record.to_metadata()})
    atomic_write_text(folder / CONFIG_FILE, json.dumps(document, indent=2) + "\n")
    return folder


def read_model_config(directory: str | Path) -> ModelConfig:
    """The :class:`ModelConfig` saved in ``directory/config.json``.

    Raises:
        FileNotFoundError: No ``config.json`` there.
        ValueError: Not a model configuration of this format (no ``"model"`` key, unreadable or
            too deeply nested JSON, fields of the wrong type).
    """
    path, document = _read_document(directory)
    return _model_config(document, path)


def read_trained_with(directory: str | Path) -> TrainedWith | None:
    """What the weights in ``directory/model.safetensors`` were trained with.

    Reads the file's header only (no tensors).

    Returns:
        The record, or ``None`` for a file saved by a version of mmfusion that did not write it.

    Raises:
        FileNotFoundError: No weights file there.
        ValueError: Not a readable safetensors file, or an unreadable record.
    """
    path = Path(directory) / WEIGHTS_FILE
    metadata, _ = _read_header(path)
    return TrainedWith.from_metadata(metadata, path)


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a safetensors state dict into ``model``, strictly, with one error naming any mismatch.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: Unreadable file, tensors holding NaN or Inf (the first ones named), or tensors
            of another architecture (missing, unexpected or differently shaped names, with an
            example of each).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: no {path.name} at {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"weights: {path} is not a readable safetensors file ({err})") from err
    bad = _non_finite(tensors)
    if bad:
        raise ValueError(f"weights: {path} holds NaN/Inf values in {len(bad)} tensor(s) (first: "
                         f"{', '.join(bad[:3])}); {_DIVERGED}")
    target = _unwrap(model)
    _check_shapes({k: tuple(v.shape) for k, v in target.state_dict().items()},
                  {k: tuple(v.shape) for k, v in tensors.items()}, path)
    target.load_state_dict(tensors, strict=True)


def from_pretrained(directory: str | Path, *, map_location: str | torch.device = "cpu") -> FusionClassifier:
    """Rebuild a model saved by :func:`save_pretrained` (no ImageNet weights are needed or fetched).

    Before any model is built, ``config.json`` is checked against the weights file: against the
    record of what the weights were trained with (modality order, image size, class count,
    normalisation), and its sizes against the file's tensor shapes (read from the header, by
    building a shape-only model on the ``meta`` device, which allocates nothing). Weights files
    saved by older versions carry no record; they still load, with the shapes checked only (a
    swapped modality order or another image size under pooled heads cannot be seen there).

    Args:
        directory: Folder holding ``config.json`` and ``model.safetensors``.
        map_location: Device of the returned model.

    Returns:
        The model in eval mode; its outputs equal the saved model's exactly.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: Another format; a ``config.json`` without its ``"model"`` key, or one that
            disagrees with what the weights were trained with (each field named: config says X,
            weights were saved with Y); weights that do not fit the configuration; weights that
            hold NaN or Inf.
    """
    path, document = _read_document(directory)
    config = _model_config(document, path)
    weights = Path(directory) / WEIGHTS_FILE
    metadata, shapes = _read_header(weights)
    _check_trained_with(config, document.get("normalization"), TrainedWith.from_metadata(metadata, weights),
                        path, weights)
    _check_fits_weights(config, shapes, weights)
    state = torch.random.get_rng_state()
    try:  # random initialisation is overwritten; do not disturb the caller's generator
        model = build_model(config, weights=None)
    finally:
        torch.random.set_rng_state(state)
    load_weights(model, weights)
    return model.to(map_location).eval()


# ---------------------------------------------------------------------------------------------


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


def _non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or Inf, in order."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _read_document(directory: str | Path) -> tuple[Path, dict[str, Any]]:
    """``config.json`` of ``directory`` as a dict of this format.

    Raises:
        FileNotFoundError: No ``config.json``.
        ValueError: Unreadable, too deeply nested or not this format.
    """
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"directory: no {CONFIG_FILE} in {Path(directory)}; pass a folder "
                                "written by save_pretrained (or a training run's folder)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: not a model configuration: its JSON is nested too deeply") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ValueError(f"{path}: expected format {FORMAT!r}, found {found!r}; not a saved mmfusion model")
    return path, document


def _model_config(document: Mapping[str, Any], path: Path) -> ModelConfig:
    """The ``"model"`` section as a :class:`ModelConfig` (never a default one)."""
    if "model" not in document:
        raise ValueError(f'{path}: no "model" key (the architecture, a mapping of ModelConfig '
                         "fields); not a complete saved model: save it again with save_pretrained")
    return config_from_dict(ModelConfig, document["model"], f'{path} "model"')


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """Metadata and tensor shapes of a safetensors file, from its header (no tensor is read)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights: no {path.name} at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"weights: {path} is not a readable safetensors file ({err})") from err
    return metadata, shapes


def _check_trained_with(
    config: ModelConfig,
    normalization: object,
    record: TrainedWith | None,
    config_path: Path,
    weights: Path,
) -> None:
    """Refuse a configuration that disagrees with what the weights were trained with."""
    if record is None:  # saved before the record existed
        return
    pairs: list[tuple[str, object, object]] = [
        ("modalities", list(config.modalities), list(record.modalities)),
        ("image_size", config.image_size, record.image_size),
        ("num_classes", config.num_classes, record.num_classes),
    ]
    if isinstance(normalization, Mapping):
        for key in ("mean", "std"):
            if key in normalization:
                pairs.append((f"normalization {key}", normalization[key], list(getattr(record, key))))
    wrong = [f"{name}: config says {mine}, weights were saved with {theirs}"
             for name, mine, theirs in pairs if mine != theirs]
    if wrong:
        raise ValueError(f"{config_path} does not match what the weights {weights} were trained with: "
                         f"{'; '.join(wrong)}. Restore the saved values in {config_path.name}")


def _check_fits_weights(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], path: Path) -> None:
    """Compare the tensor shapes ``config`` builds with the file's, allocating nothing.

    A shape-only model is built on the ``meta`` device; a backbone that cannot be built there is
    checked after the real build instead (by :func:`load_weights`).
    """
    state = torch.random.get_rng_state()
    try:
        with torch.device("meta"):
            skeleton = build_model(config, weights=None)
    except (NotImplementedError, RuntimeError):
        return
    finally:
        torch.random.set_rng_state(state)
    _check_shapes({k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, shapes, path)


def _check_shapes(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], path: Path
) -> None:
    """One error naming the missing, unexpected and differently shaped tensors, if any."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: file {found[k]}, model {expected[k]})")
    raise ValueError(f"weights: {path} was saved from another architecture: {'; '.join(parts)} tensors")


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
