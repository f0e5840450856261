"""Data of the example: the manifest (or the generated phantom), splits, data sets and loaders.

Paper II.B with NOTES.md's corrections: split by patient first (stratified by stage), augment only
the training part. Decoded ROI crops are resized once to the model input size and cached in memory
(:class:`mmfusion.data.PairedImageDataset` with ``size`` and ``cache``), so an epoch never decodes
a PNG after the first. Augmentation (``augment``):

* ``"paper"``: the paper's offline expansion (every pair x original/flip/shift -5/+5 px, then extra
  shifts of 0-10 px until the stages are balanced; :func:`mmfusion.data.balanced_augmentation_plan`),
  no online augmentation;
* ``"online"``: random flip, shift and B-mode intensity jitter per sample
  (:func:`mmfusion.data.train_transforms`);
* ``"none"``.

Every sample is augmented under its own seed (:class:`mmfusion.data.SeededSampler` hands out
``(index, seed)`` keys, :class:`mmfusion.data.SeededDataset` draws under them), so the
augmentation stream is the same with or without worker processes, on any number of processes and
after ``--resume``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from examples.liver_fibrosis.cli import CliError, say, warn
from examples.liver_fibrosis.config import TrainConfig
from examples.liver_fibrosis.distributed import DistInfo, barrier
from mmfusion.data import (
    Manifest,
    PairedImageDataset,
    PlannedAugmentationDataset,
    SeededDataset,
    SeededSampler,
    balanced_augmentation_plan,
    eval_transforms,
    image_split,
    patient_kfold,
    patient_split,
    read_manifest,
    train_transforms,
)
from mmfusion.liver import make_phantom_dataset


@dataclass(frozen=True)
class Split:
    """One train/test partition of the manifest.

    Attributes:
        name: Folder name of the run (``""`` for a single split, ``"fold-K"`` for a fold).
        train: Training pairs.
        test: Held-out pairs.
        description: How it was made, for ``metrics.json``'s ``split``.
        train_idx: Positions of the training pairs in the full manifest.
        test_idx: Positions of the test pairs in the full manifest.
    """

    name: str
    train: Manifest
    test: Manifest
    description: str
    train_idx: tuple[int, ...] = ()
    test_idx: tuple[int, ...] = ()


def _positions(full: Manifest, part: Manifest) -> tuple[int, ...]:
    where = {row.line: i for i, row in enumerate(full.rows)}
    return tuple(where[row.line] for row in part.rows)


def _split(full: Manifest, name: str, train: Manifest, test: Manifest, description: str) -> Split:
    return Split(name, train, test, description, _positions(full, train), _positions(full, test))


def is_phantom(cfg: TrainConfig) -> bool:
    """True when the run uses the generated phantom (no ``--data``)."""
    return not cfg.data


def load_manifest(cfg: TrainConfig, info: DistInfo, verify: str = "decode") -> Manifest:
    """Read ``cfg.data``, or generate the phantom once (rank 0) into ``cfg.phantom_dir``.

    Raises:
        CliError: Missing or malformed manifest, a manifest without a column for one of
            ``cfg.modalities``, or a phantom folder made with other parameters or by another
            version of the phantom generator.
    """
    if cfg.data:
        path = Path(cfg.data)
        if not path.is_file():
            raise CliError(f"--data: manifest {path} does not exist; pass the path of a CSV with "
                           "columns patient_id,us_path,swe_path,stage (or omit --data for the phantom)")
        try:
            manifest = read_manifest(path, verify=verify)
        except ValueError as err:
            raise CliError(f"--data: {' '.join(str(err).split())}") from err
        missing = [m for m in cfg.modalities if m not in manifest.modalities]
        if missing:
            raise CliError(f"--data: the model needs {missing} images, the manifest has "
                           f"{list(manifest.modalities)} columns (<name>_path); add them or "
                           "choose --modalities among those")
        return manifest
    root = Path(cfg.phantom_dir)
    if info.is_main:
        fresh = not (root / "manifest.csv").is_file()
        if fresh:
            say(f"generating the liver phantom ({cfg.phantom_patients} patients, seed "
                f"{cfg.phantom_seed}) into {root} (once; about 1-3 min on 2 cores)")
        try:
            make_phantom_dataset(root, cfg.phantom_patients, cfg.phantom_seed, workers=2)
        except FileExistsError as err:
            reason = str(err).split(" holds a phantom made with ", 1)[-1].split("; pass ", 1)[0]
            raise CliError(
                f"--phantom-dir: {root} holds a phantom made with {reason}; delete the folder "
                "(it is regenerated) or pass another --phantom-dir"
            ) from err
    barrier(info)
    return read_manifest(root / "manifest.csv", verify="exists")


def make_splits(manifest: Manifest, cfg: TrainConfig) -> list[Split]:
    """The patient split (or K folds), or the warned image-level split of the paper."""
    try:
        if cfg.split == "image":
            if cfg.folds:
                raise CliError("--folds: K-fold runs split by patient; drop --split image")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                train, test = image_split(manifest, cfg.test_size, cfg.seed)
            for w in caught:
                warn(f"--split image: {w.message}")
            return [_split(manifest, "", train, test, "image (paper protocol, leaks patients)")]
        if cfg.folds:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                folds = patient_kfold(manifest, cfg.folds, cfg.seed)
            for w in caught:
                warn(str(w.message))
            return [
                _split(manifest, f"fold-{k}", tr, te, f"patient {cfg.folds}-fold, fold {k}")
                for k, (tr, te) in enumerate(folds)
                if cfg.fold is None or k == cfg.fold
            ]
        train, test = patient_split(manifest, cfg.test_size, cfg.seed)
        return [_split(manifest, "", train, test, "patient")]
    except ValueError as err:
        raise CliError(f"--split: {' '.join(str(err).split())}") from err


_CROPS: dict[tuple[str, tuple[int, ...], int], PairedImageDataset] = {}


def crops(manifest: Manifest, image_size: int) -> PairedImageDataset:
    """Uint8 ROI crops of every pair, resized to the model input and cached in memory.

    Decoded once per process and manifest (before any worker forks, so workers share the cache);
    later runs in the same process (folds, ablation, evaluation) reuse it.

    Raises:
        CliError: An image cannot be decoded or has no detectable scan sector.
    """
    key = (manifest.source, tuple(r.line for r in manifest.rows), image_size)
    if key not in _CROPS:
        ds = PairedImageDataset(manifest, cache=True, size=image_size)
        try:
            ds.preload(num_threads=2)
        except ValueError as err:
            raise CliError(f"--data: {' '.join(str(err).split())}") from err
        _CROPS.clear()  # keep one data set in memory
        _CROPS[key] = ds
    return _CROPS[key]


class ModelInputs:
    """Turn a transformed sample into the model's inputs: plain tensors of ``modalities``, the label
    and the patient id (the other keys of the sample are dropped)."""

    def __init__(self, transform: Callable, modalities: tuple[str, ...]) -> None:
        self.transform, self.modalities = transform, modalities

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample = self.transform(sample)
        out: dict[str, Any] = {
            m: torch.as_tensor(sample[m]).as_subclass(torch.Tensor) for m in self.modalities
        }
        out.update(label=int(sample["label"]), patient_id=str(sample["patient_id"]))
        return out


def seeded(base: Dataset, modalities: tuple[str, ...], transform: Callable) -> SeededDataset:
    """``base`` behind :class:`mmfusion.data.SeededDataset`: items ``(index, seed)`` draw their
    augmentation under ``seed`` and carry ``"index"``."""
    return SeededDataset(base, ModelInputs(transform, modalities), return_index=True)


def eval_dataset(manifest: Manifest, cfg: TrainConfig, indices: tuple[int, ...] | None = None
                 ) -> SeededDataset:
    """Deterministic evaluation samples (cached crop -> normalise) of ``manifest[indices]``."""
    full = crops(manifest, cfg.image_size)
    part = full if indices is None else Subset(full, list(indices))
    return seeded(part, tuple(cfg.modalities), eval_transforms(cfg.image_size))


def train_dataset(manifest: Manifest, cfg: TrainConfig, indices: tuple[int, ...]) -> SeededDataset:
    """Training samples of ``manifest[indices]`` with the configured augmentation."""
    mods = tuple(cfg.modalities)
    full = crops(manifest, cfg.image_size)
    part = Subset(full, list(indices))
    shift = max(1, round(10 * cfg.image_size / 224))
    if cfg.augment == "paper":
        labels = full.labels[list(indices)]
        plan = balanced_augmentation_plan(labels, shift_px=max(1, shift // 2),
                                          max_extra_shift=shift, seed=cfg.seed)
        return seeded(PlannedAugmentationDataset(part, plan), mods, eval_transforms(cfg.image_size))
    if cfg.augment == "online":
        return seeded(part, mods, train_transforms(cfg.image_size, max_shift=shift))
    return seeded(part, mods, eval_transforms(cfg.image_size))


@dataclass
class Loaders:
    """Training and test loaders of one split."""

    train: DataLoader
    train_sampler: SeededSampler
    test: DataLoader
    test_dataset: SeededDataset


def make_loader(dataset: Dataset, sampler: SeededSampler, batch_size: int, cfg: TrainConfig,
                info: DistInfo, train: bool) -> DataLoader:
    """A loader with the speed defaults: pinned memory on CUDA, persistent workers."""
    workers = cfg.workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=workers > 0,
        drop_last=train and len(sampler) > batch_size,
        prefetch_factor=4 if workers > 0 else None,
    )


def build_loaders(manifest: Manifest, split: Split, cfg: TrainConfig, info: DistInfo) -> Loaders:
    """Datasets, samplers and loaders of ``split`` for this process."""
    train_ds = train_dataset(manifest, cfg, split.train_idx)
    test_ds = eval_dataset(manifest, cfg, split.test_idx)
    shard = dict(seed=cfg.seed, num_replicas=info.world_size, rank=info.rank)
    train_sampler = SeededSampler(train_ds, shuffle=True, **shard)
    test_sampler = SeededSampler(test_ds, shuffle=False, **shard)
    return Loaders(
        train=make_loader(train_ds, train_sampler, cfg.batch_size, cfg, info, train=True),
        train_sampler=train_sampler,
        test=make_loader(test_ds, test_sampler, max(cfg.batch_size, 32), cfg, info, train=False),
        test_dataset=test_ds,
    )
