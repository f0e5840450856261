"""From a manifest to model-ready data sets: cached crops, augmentation modes, per-sample seeds.

The glue between :mod:`mmfusion.data`'s pieces that every training or evaluation loop needs
(:class:`mmfusion.lightning.FusionDataModule` uses it; so can a plain PyTorch loop):

* :func:`cached_crops` decodes every pair once (ROI crop, resize to the model input) and keeps the
  uint8 crops in memory, so an epoch never decodes an image after the first;
* :func:`train_dataset` applies one of the augmentation modes of
  :class:`~mmfusion.models.TrainingConfig` (``"paper"``: the offline balanced flip/shift expansion
  of section II.B; ``"online"``: random flips, shifts and B-mode intensity jitter; ``"none"``);
* :func:`eval_dataset` is the deterministic pipeline (crop -> normalise).

Items are ``{modality: float [3, H, W], "label": int, "patient_id": str, "index": int}`` plus
``"available"`` where the data set yields availability masks. Every sample is drawn under its own
seed (:class:`~mmfusion.data.SeededSampler` hands out ``(index, seed)`` keys), so the augmentation
stream does not depend on worker processes, the number of processes or where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from mmfusion.data.augmentation import PlannedAugmentationDataset, balanced_augmentation_plan
from mmfusion.data.dataset import PairedImageDataset
from mmfusion.data.manifest import Manifest
from mmfusion.data.seeded import SeededDataset
from mmfusion.data.transforms import eval_transforms, train_transforms

__all__ = ["AUGMENT_MODES", "ModelInputs", "cached_crops", "eval_dataset", "train_dataset"]

AUGMENT_MODES = ("paper", "online", "none")

_CROPS: dict[tuple[str, tuple[int, ...], int], PairedImageDataset] = {}


def cached_crops(manifest: Manifest, image_size: int, num_threads: int = 2) -> PairedImageDataset:
    """Uint8 ROI crops of every pair of ``manifest``, resized to ``image_size`` and cached in memory.

    Decoded once per process and manifest (call it before DataLoader workers fork, so that they
    share the cache); later calls in the same process (folds, ablations, evaluation) reuse it. One
    manifest's crops are kept at a time.
    """
    key = (manifest.source, tuple(r.line for r in manifest.rows), image_size)
    if key not in _CROPS:
        crops = PairedImageDataset(manifest, cache=True, size=image_size).preload(num_threads)
        _CROPS.clear()
        _CROPS[key] = crops
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
    manifest: Manifest, modalities: Sequence[str], image_size: int, indices: Sequence[int] | None = None
) -> SeededDataset:
    """Deterministic samples (cached crop -> normalise) of ``manifest`` (or its rows ``indices``)."""
    full = cached_crops(manifest, image_size)
    part = full if indices is None else Subset(full, list(indices))
    return _seeded(part, modalities, eval_transforms(image_size))


def train_dataset(
    manifest: Manifest,
    modalities: Sequence[str],
    image_size: int,
    indices: Sequence[int],
    augment: str = "online",
    seed: int = 0,
) -> SeededDataset:
    """Training samples of ``manifest``'s rows ``indices`` with the augmentation mode ``augment``.

    Shifts scale with the image: at most 10 px at 224 px (paper II.B), ``round(10 * size / 224)``.

    Raises:
        ValueError: Unknown ``augment``.
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment: expected one of {AUGMENT_MODES}, got {augment!r}")
    full = cached_crops(manifest, image_size)
    part = Subset(full, list(indices))
    shift = max(1, round(10 * image_size / 224))
    if augment == "paper":
        plan = balanced_augmentation_plan(full.labels[list(indices)], shift_px=max(1, shift // 2),
                                          max_extra_shift=shift, seed=seed)
        return _seeded(PlannedAugmentationDataset(part, plan), modalities, eval_transforms(image_size))
    if augment == "online":
        return _seeded(part, modalities, train_transforms(image_size, max_shift=shift))
    return _seeded(part, modalities, eval_transforms(image_size))
