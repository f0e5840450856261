"""Whole-model persistence: save a :class:`FusionClassifier`, load it back, read what it was trained with.

The format (``config.json`` + ``model.safetensors``, nothing pickled) is described in
:mod:`mmfusion.models.checkpoint`. Loading checks, before any model is built, that
``config.json`` agrees with the weights file's record of what the weights were trained with and
that its sizes fit the tensor shapes of the weights file (read from its header, without loading the
tensors), and refuses weights that hold NaN or Inf. Files saved before the record existed (their
metadata holds only the format) still load; for them only the tensor shapes are checked. A
configuration that names a fusion or an encoder that is not registered is refused with one error
naming it: import the module that registers it first.

A training run folder written with :func:`save_pretrained` has the same two files, so
``from_pretrained("runs/my_run")`` loads a trained run. A Hugging Face Hub repository id
(``from_pretrained("user/repo")``, what ``model.push_to_hub("user/repo")`` uploads) is fetched by
``huggingface_hub.snapshot_download`` (only those two files; from the cache alone when offline)
and goes through the same checks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from mmfusion.models.builder import build_model
from mmfusion.models.checkpoint import (
    CONFIG_FILE,
    DIVERGED,
    FORMAT,
    WEIGHTS_FILE,
    TrainedWith,
    non_finite,
    write_model,
)
from mmfusion.models.classifier import FusionClassifier
from mmfusion.models.config import ModelConfig, config_from_dict

__all__ = ["CONFIG_FILE", "FORMAT", "WEIGHTS_FILE", "TrainedWith", "from_pretrained", "load_weights",
           "read_model_config", "read_trained_with", "save_pretrained"]


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
    return write_model(model, model.config, directory, overwrite=overwrite, extra=extra,
                       normalization=normalization)


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
    bad = non_finite(tensors)
    if bad:
        raise ValueError(f"weights: {path} holds NaN/Inf values in {len(bad)} tensor(s) (first: "
                         f"{', '.join(bad[:3])}); {DIVERGED}")
    target = _unwrap(model)
    _check_shapes({k: tuple(v.shape) for k, v in target.state_dict().items()},
                  {k: tuple(v.shape) for k, v in tensors.items()}, path)
    target.load_state_dict(tensors, strict=True)


def from_pretrained(
    directory: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    token: str | bool | None = None,
) -> FusionClassifier:
    """Rebuild a model saved by :func:`save_pretrained`, from a folder or a Hub repository id.

    No ImageNet weights are needed or fetched, and no random number is drawn (the caller's
    generator state is left as it was).

    Before any model is built, ``config.json`` is checked against the weights file: against the
    record of what the weights were trained with (modality order, image size, class count,
    normalisation), and its sizes against the file's tensor shapes (read from the header, by
    building a shape-only model on the ``meta`` device, which allocates nothing). Weights files
    saved by older versions carry no record; they still load, with the shapes checked only (a
    swapped modality order or another image size under pooled heads cannot be seen there).

    Args:
        directory: Folder holding ``config.json`` and ``model.safetensors`` (a :class:`~pathlib.Path`
            is always a folder), or, when no such folder exists, a Hub repository id
            (``"user/repo"``) whose two files are fetched into the Hugging Face cache.
        map_location: Device of the returned model.
        revision: Hub only: branch, tag or commit (default: ``main``).
        cache_dir: Hub only: the cache (default: huggingface_hub's, ``HF_HUB_CACHE``).
        local_files_only: Hub only: use the cache, never the network (as ``HF_HUB_OFFLINE=1``).
        force_download: Hub only: fetch again even if cached.
        token: Hub only: access token for a private repository.

    Returns:
        The model in eval mode; its outputs equal the saved model's exactly.

    Raises:
        FileNotFoundError: A file is missing; a repository id that is neither a folder nor on the
            Hub (or, offline, not in the cache: the message names the fixes).
        ValueError: Another format; a ``config.json`` without its ``"model"`` key, or one that
            disagrees with what the weights were trained with (each field named: config says X,
            weights were saved with Y); weights that do not fit the configuration; weights that
            hold NaN or Inf.
    """
    folder = _resolve(directory, revision=revision, cache_dir=cache_dir, token=token,
                      local_files_only=local_files_only, force_download=force_download)
    path, document = _read_document(folder)
    config = _model_config(document, path)
    weights = folder / WEIGHTS_FILE
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


def _resolve(
    source: str | Path,
    *,
    revision: str | None,
    cache_dir: str | Path | None,
    token: str | bool | None,
    local_files_only: bool,
    force_download: bool,
) -> Path:
    """The local folder holding the two files: ``source`` itself, or a Hub snapshot of it.

    ``source`` is a Hub repository id only if it is a string, no such path exists and it has a
    repository id's form; otherwise it is a folder (a missing one fails in :func:`_read_document`).
    """
    if isinstance(source, Path) or Path(source).exists() or not _is_repo_id(source):
        return Path(source)
    cache = cache_dir or constants.HF_HUB_CACHE
    offline = local_files_only or constants.is_offline_mode()
    try:
        return Path(snapshot_download(source, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only, force_download=force_download,
                                      allow_patterns=[CONFIG_FILE, WEIGHTS_FILE]))
    except LocalEntryNotFoundError:
        how = ("offline (HF_HUB_OFFLINE is set or local_files_only=True)" if offline
               else "the Hub could not be reached")
        raise FileNotFoundError(
            f"directory: {source!r} is not a folder, and the Hub repository {source!r} is not in the "
            f"Hugging Face cache {str(cache)!r} while {how}. Download it once with network access "
            f"(`hf download {source}`, or from_pretrained({source!r}) online), set HF_HUB_CACHE (or "
            "HF_HOME) to a cache that holds it, or pass a folder written by save_pretrained"
        ) from None
    except HfHubHTTPError as err:  # no such repository, revision or file, or access refused
        raise FileNotFoundError(f"directory: {source!r} is neither a folder nor a Hub repository "
                                f"that can be read ({type(err).__name__}: {err})") from err


def _is_repo_id(source: str) -> bool:
    """``source`` has the form ``"user/repo"`` (one slash, names the Hub accepts)."""
    if source.count("/") != 1:
        return False
    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


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
