"""From a manifest to model-ready data sets: cached crops, augmentation modes, per-sample seeds.

The glue between :mod:`mmfusion.data`'s pieces that every training or evaluation loop needs
(:class:`mmfusion.lightning.FusionDataModule` uses it; so can a plain PyTorch loop):

* :func:`cached_crops` decodes every pair once (ROI crop, resize to the model input) and keeps the
  uint8 crops in memory, so an epoch never decodes an image after the first;
* :func:`train_dataset` applies one of the augmentation modes of
  :class:`~mmfusion.models.TrainingConfig` (``"paper"``: the offline balanced flip/shift expansion
  of section II.B; ``"online"``: random flips, shifts and B-mode intensity jitter; ``"none"``);
* :func:`eval_dataset` is the deterministic pipeline (crop -> normalise);
* :func:`planned_dataset` serves items of an augmentation plan (:func:`paper_plan`), e.g. both
  sides of the paper's augment-then-split protocol (:func:`~mmfusion.data.augmented_image_split`).

Every function takes an optional ``crop={modality: crop}`` (crop objects of
:mod:`mmfusion.data.crops`; see :class:`~mmfusion.data.PairedImageDataset`), whose keys are part
of the crop cache's key.

Items are ``{modality: float [3, H, W] (image) or [F] (tabular, NaN = missing), "label": int,
"patient_id": str, "index": int}`` plus ``"available"`` where the data set yields availability
masks. Every sample is drawn under its own
seed (:class:`~mmfusion.data.SeededSampler` hands out ``(index, seed)`` keys), so the augmentation
stream does not depend on worker processes, the number of processes or where a run was resumed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from mmfusion.data.augmentation import (
    AugmentationItem,
    PlannedAugmentationDataset,
    balanced_augmentation_plan,
)
from mmfusion.data.crops import DEFAULT_CROP, Crop, check_crops
from mmfusion.data.dataset import PairedImageDataset
from mmfusion.data.manifest import Manifest
from mmfusion.data.seeded import SeededDataset
from mmfusion.data.transforms import (
    default_intensity_transforms,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "AUGMENT_MODES",
    "ModelInputs",
    "cached_crops",
    "eval_dataset",
    "paper_plan",
    "planned_dataset",
    "train_dataset",
]

#: Training augmentation modes of :func:`train_dataset`.
AUGMENT_MODES = ("paper", "online", "none")

_CROPS: dict[tuple[Any, ...], PairedImageDataset] = {}


def _file_state(path: Path) -> tuple[str, int, int, int, int] | tuple[str]:
    """What identifies a file's content without reading it: its absolute path and, where it
    exists, ``(st_dev, st_ino, st_size, st_mtime_ns)`` of what the path points to (a symlink is
    followed, so a re-pointed link or a file replaced by a rename is a new key)."""
    name = os.path.abspath(path)
    try:
        st = os.stat(name)
    except OSError:
        return (name,)  # missing now: never matches a decoded file's key
    return (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _content_key(manifest: Manifest) -> tuple[Any, ...]:
    """The part of the crop cache's key that a manifest contributes: per row, its label and
    patient (served with the crops), its extra columns (frames and whatever else a crop reads
    from a row), its tabular values, and per image modality the file's state
    (:func:`_file_state`)."""
    rows = tuple(
        (row.line, row.patient_id, row.label, tuple(sorted(row.extra.items())),
         tuple((m, tuple(map(repr, v))) for m, v in row.tabular.items()),
         tuple((m, None if p is None else _file_state(p)) for m, p in row.paths.items()))
        for row in manifest.rows
    )  # fmt: skip
    return manifest.source, manifest.modalities, rows


def cached_crops(
    manifest: Manifest,
    image_size: int,
    num_threads: int = 2,
    *,
    crop: Mapping[str, Crop] | None = None,
    crop_fallback: bool = False,
) -> PairedImageDataset:
    """Uint8 ROI crops of every pair of ``manifest``, resized to ``image_size`` and cached in memory.

    Decoded once per process and manifest (call it before DataLoader workers fork, so that they
    share the cache); later calls in the same process (folds, ablations, evaluation) reuse it. One
    manifest's crops are kept at a time.

    The cache key identifies what is cached: for every row its label, patient, extra columns
    (its frames and whatever else a crop reads from a row) and tabular values, and per image
    modality the file (absolute path, device, inode, size and modification time in ns); the
    manifest's modalities; ``image_size``; and the crops (the ``key`` of each modality's crop,
    which names every parameter of the crop, and ``crop_fallback``, passed to
    :class:`~mmfusion.data.PairedImageDataset`; crops with equal keys are the same crop:
    ``{"swe": ROICrop()}`` and None share crops, two crops with other parameters never do). So
    one-row manifests of different files never share crops, whatever their ``source`` and line
    numbers, and an image rewritten at the same path is decoded again. Costs one ``stat`` per
    file and call.

    Raises:
        ValueError: A file cannot be decoded or cropped; the message names the manifest line
            (where it has one), the modality and the file.
    """
    images = tuple(m for m in manifest.modalities if m not in manifest.tabular)
    crops = check_crops(crop, images)
    crop_key = tuple(sorted((m, c.key) for m, c in crops.items() if c.key != DEFAULT_CROP.key))
    key = (_content_key(manifest), image_size, crop_key,
           bool(crop_fallback) and bool(crop_key))  # fmt: skip
    if key not in _CROPS:
        cached = PairedImageDataset(
            manifest, cache=True, size=image_size, crop=crops, crop_fallback=crop_fallback
        ).preload(num_threads)
        _CROPS.clear()
        _CROPS[key] = cached
    return _CROPS[key]


class ModelInputs:
    """Turn a transformed sample into model inputs: plain tensors of ``modalities``, ``label``,
    ``patient_id`` and, where present, ``available`` (other keys are dropped)."""

    def __init__(self, transform: Callable[[dict[str, Any]], dict[str, Any]], modalities: Sequence[str]) -> None:
        self.transform, self.modalities = transform, tuple(modalities)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample = self.transform(sample)
        out: dict[str, Any] = {m: torch.as_tensor(sample[m]).as_subclass(torch.Tensor) for m in self.modalities}
        out.update(label=int(sample["label"]), patient_id=str(sample["patient_id"]))
        if "available" in sample:
            out["available"] = {m: bool(sample["available"][m]) for m in self.modalities}
        return out


def _seeded(base: Dataset, modalities: Sequence[str], transform: Callable) -> SeededDataset:
    return SeededDataset(base, ModelInputs(transform, modalities), return_index=True)


def eval_dataset(
    manifest: Manifest,
    modalities: Sequence[str],
    image_size: int,
    indices: Sequence[int] | None = None,
    *,
    crop: Mapping[str, Crop] | None = None,
    crop_fallback: bool = False,
) -> SeededDataset:
    """Deterministic samples (cached crop -> normalise) of ``manifest`` (or its rows ``indices``).

    ``crop`` / ``crop_fallback``: see :func:`cached_crops`.
    """
    full = cached_crops(manifest, image_size, crop=crop, crop_fallback=crop_fallback)
    part = full if indices is None else Subset(full, list(indices))
    return _seeded(part, modalities, eval_transforms(image_size))


def train_dataset(
    manifest: Manifest,
    modalities: Sequence[str],
    image_size: int,
    indices: Sequence[int],
    augment: str = "online",
    seed: int = 0,
    *,
    crop: Mapping[str, Crop] | None = None,
    crop_fallback: bool = False,
) -> SeededDataset:
    """Training samples of ``manifest``'s rows ``indices`` with the augmentation mode ``augment``.

    Shifts scale with the image: at most 10 px at 224 px (paper II.B), ``round(10 * size / 224)``.
    ``crop`` / ``crop_fallback``: see :func:`cached_crops`.

    Raises:
        ValueError: Unknown ``augment``.
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment: expected one of {AUGMENT_MODES}, got {augment!r}")
    full = cached_crops(manifest, image_size, crop=crop, crop_fallback=crop_fallback)
    part = Subset(full, list(indices))
    shift = max(1, round(10 * image_size / 224))
    if augment == "paper":
        plan = paper_plan(full.labels[list(indices)], image_size, seed)
        return _seeded(PlannedAugmentationDataset(part, plan), modalities, eval_transforms(image_size))
    if augment == "online":
        # the default intensity jitter of the modalities this data set has (none for "ct" alone)
        intensity = {m: t for m, t in default_intensity_transforms().items() if m in modalities}
        transform = train_transforms(image_size, max_shift=shift, intensity=intensity)
        return _seeded(part, modalities, transform)
    return _seeded(part, modalities, eval_transforms(image_size))


def paper_plan(
    labels: Sequence[int] | np.ndarray, image_size: int, seed: int = 0
) -> list[AugmentationItem]:
    """The paper's balanced flip/shift plan (II.B) with shifts scaled to ``image_size``.

    :func:`~mmfusion.data.balanced_augmentation_plan` with ``max_extra_shift = round(10 * size /
    224)`` (at least 1; 10 px at 224 px, as in the paper) and ``shift_px`` half of it (5 px at 224
    px); the plan of ``train_dataset(augment="paper")``.

    Args:
        labels: ``[N]`` class label of each pair the plan indexes (e.g. ``manifest.labels``).
        image_size: Model input side in pixels (the shifts are in these pixels).
        seed: Seed of the extra items.

    Returns:
        The plan; item indices index ``labels``.
    """
    shift = max(1, round(10 * image_size / 224))
    return balanced_augmentation_plan(
        np.asarray(labels), shift_px=max(1, shift // 2), max_extra_shift=shift, seed=seed
    )


def planned_dataset(
    manifest: Manifest,
    modalities: Sequence[str],
    image_size: int,
    items: Sequence[AugmentationItem],
    *,
    crop: Mapping[str, Crop] | None = None,
    crop_fallback: bool = False,
) -> SeededDataset:
    """Deterministic samples of plan ``items`` whose indices are rows of ``manifest``.

    Item ``k`` is row ``items[k].index``'s cached crop, flipped and shifted as planned, then
    normalised (:func:`~mmfusion.data.transforms.eval_transforms`); its ``"index"`` is ``k``. For
    the paper's protocol, both sides of :func:`~mmfusion.data.augmented_image_split`::

        plan = paper_plan(manifest.labels, image_size, seed)
        train_items, test_items = augmented_image_split(manifest, plan, 0.2, seed)
        train_set = planned_dataset(manifest, modalities, image_size, train_items)
        test_set = planned_dataset(manifest, modalities, image_size, test_items)

    ``crop`` / ``crop_fallback``: see :func:`cached_crops`.
    """
    full = cached_crops(manifest, image_size, crop=crop, crop_fallback=crop_fallback)
    return _seeded(PlannedAugmentationDataset(full, items), modalities, eval_transforms(image_size))
