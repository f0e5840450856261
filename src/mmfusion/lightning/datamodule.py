"""A LightningDataModule over a manifest: patient split, the paper's augmentation, seeded samples.

:class:`FusionDataModule` reads a manifest (CSV path or :class:`~mmfusion.data.Manifest`), splits it
by patient (stratified by class, paper II.B with the correction in docs/paper_map.rst; or the warned image-level
split, or patient K-fold, or leave-one-site-out), decodes every pair once into an in-memory crop
cache (:func:`mmfusion.data.pipeline.cached_crops`), and serves training samples with one of the
augmentation modes (``"paper"``: the offline balanced flip/shift plan; ``"online"``; ``"none"``)
and deterministic evaluation samples. Sampling is :class:`~mmfusion.data.SeededSampler`, sharded
over the trainer's processes, so each sample's augmentation depends only on ``(seed, epoch,
index)``: the same on any number of processes, with or without workers, and after a resume.
Build the Trainer with ``use_distributed_sampler=False`` (the sampler is already distributed).

``prepare_data`` calls ``prepare`` (e.g. generating a phantom) once per node, before any process
reads the manifest.

The labels are whatever the manifest's :class:`~mmfusion.labels.LabelSpec` says (``labels=``, as
for :func:`~mmfusion.data.read_manifest`): any number of classes, named in the split messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mmfusion.data.crops import Crop
from mmfusion.data.manifest import Manifest, read_manifest
from mmfusion.data.pipeline import (
    AUGMENT_MODES,
    eval_dataset,
    paper_plan,
    planned_dataset,
    train_dataset,
)
from mmfusion.data.seeded import SeededSampler
from mmfusion.data.splits import (
    augmented_image_split,
    image_split,
    patient_kfold,
    patient_split,
    site_splits,
)
from mmfusion.labels import LabelSpec
from mmfusion.models.config import TrainingConfig

__all__ = ["FusionDataModule", "Split", "make_splits"]

SPLITS = ("patient", "image", "paper", "site")


@dataclass(frozen=True)
class Split:
    """One train/test partition of a manifest.

    Attributes:
        name: ``""`` for a single split, ``"fold-K"`` for a fold, ``"site-<name>"`` for a
            held-out site.
        train_idx: Positions of the training pairs in the manifest.
        test_idx: Positions of the held-out pairs in the manifest.
        description: How it was made (for reports), e.g. ``"patient"``.
    """

    name: str
    train_idx: tuple[int, ...]
    test_idx: tuple[int, ...]
    description: str


def _check_manifest_file(manifest: str | Path) -> None:
    """Refuse a manifest path that is not a file, before anything else happens."""
    path = Path(manifest)
    if path.is_dir():
        raise FileNotFoundError(f"manifest: expected a CSV file, got a folder: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"manifest: no such file: {path}")


def _positions(full: Manifest, part: Manifest) -> tuple[int, ...]:
    where = {row.line: i for i, row in enumerate(full.rows)}
    return tuple(where[row.line] for row in part.rows)


def make_splits(manifest: Manifest, split: str = "patient", test_size: float = 0.2, seed: int = 0,
                folds: int = 0) -> list[Split]:
    """The patient split (or ``folds`` patient folds), the image-level split that leaks, or one
    split per site.

    ``split="site"`` is leave-one-site-out (:func:`~mmfusion.data.site_splits` over the manifest's
    ``site`` column): one :class:`Split` per site, in sorted order, named ``"site-<name>"``, whose
    test side is every pair of that site; ``test_size`` and ``seed`` do not apply.
    ``split="paper"`` (augment every pair first, then split the augmented images) cannot be
    expressed as pair indices alone; :class:`FusionDataModule` builds it from the augmentation plan.

    Raises:
        ValueError: Unknown ``split``, K-fold with the image or site split, or a manifest that
            cannot be split so (e.g. a class with fewer patients than folds; no ``site`` column,
            a patient at two sites or fewer than 2 sites).
    """
    if split not in SPLITS or split == "paper":
        raise ValueError(f"split: expected 'patient', 'image' or 'site' here, got {split!r}"
                         + (" (the paper's protocol is built by FusionDataModule)" if split == "paper" else ""))
    if split == "site":
        if folds:
            raise ValueError("folds: not with split='site' (one split per site)")
        parts = []
        for train, test in site_splits(manifest):
            site = test[0].extra["site"].strip()
            parts.append(Split(f"site-{site}", _positions(manifest, train), _positions(manifest, test),
                               f"leave-one-site-out, test site {site}"))
        return parts
    if split == "image":
        if folds:
            raise ValueError("folds: K-fold runs split by patient; use split='patient'")
        train, test = image_split(manifest, test_size, seed)
        return [Split("", _positions(manifest, train), _positions(manifest, test),
                      "image (split before augmentation; leaks patients)")]
    if folds:
        return [Split(f"fold-{k}", _positions(manifest, tr), _positions(manifest, te),
                      f"patient {folds}-fold, fold {k}")
                for k, (tr, te) in enumerate(patient_kfold(manifest, folds, seed))]
    train, test = patient_split(manifest, test_size, seed)
    return [Split("", _positions(manifest, train), _positions(manifest, test), "patient")]


class FusionDataModule(pl.LightningDataModule):
    """Training and held-out data of one split of a manifest.

    Args:
        manifest: A manifest CSV path or a :class:`~mmfusion.data.Manifest` (which carries its
            label spec and tabular modalities).
        modalities: The modalities the model takes (each must be a manifest modality).
        image_size: Model input side in pixels.
        batch_size: Training pairs per step and process (evaluation uses ``max(batch_size, 32)``).
        augment: ``"paper"``, ``"online"`` or ``"none"``.
        split: ``"patient"`` (default); ``"image"``: pairs split at random before augmentation
            (patients leak; warned); ``"paper"``: the paper's protocol as stated, every pair
            augmented by the offline plan first and the augmented images then split at random
            (near-copies of test images in training; warned; ``augment`` does not apply, the
            training side is the plan's items); ``"site"``: leave-one-site-out, the held-out pairs
            are one site's (the manifest's ``site`` column; see :func:`make_splits`), ``fold``
            picks the site.
        test_size: Held-out fraction (not with ``split="site"``: a site is held out whole).
        folds: ``0`` for one split, ``K >= 2`` for patient K-fold; then ``fold`` picks one.
        fold: The fold to serve (with ``folds``); with ``split="site"``, the held-out site's index
            in the sorted site names (checked against the number of sites by :meth:`setup`).
        seed: Split, shuffling and augmentation seed.
        workers: DataLoader worker processes.
        prepare: Called once per node by ``prepare_data`` (e.g. to generate a data set).
        pin_memory: Pin host memory (use on CUDA).
        val_size: Fraction of the *training* patients held out as a validation split (stratified
            by class; e.g. to fit a calibration temperature, or to select a checkpoint), served by
            :meth:`val_dataloader`; 0 (default): no validation split, ``trainer.fit`` runs no
            validation and ``trainer.validate`` is refused (the held-out test patients are never
            served under the validation name).
        crop: Modality -> crop (:mod:`mmfusion.data.crops`; e.g. a domain's crop to an SWE
            colour box), passed to :class:`~mmfusion.data.PairedImageDataset`; ``None``: every
            image is cropped to its scan sector (:class:`~mmfusion.data.ROICrop`).
        labels: The :class:`~mmfusion.labels.LabelSpec` to read a manifest path with (e.g. the
            liver's METAVIR stages); ``None``: a ``label`` column of class indices (see
            :func:`~mmfusion.data.read_manifest`). Not with a :class:`~mmfusion.data.Manifest`
            of another spec.
        columns: Column -> parser of extra columns to validate when reading a manifest path
            (``read_manifest(columns=)``); not with a :class:`~mmfusion.data.Manifest`.
        tabular: Tabular modality -> its numeric columns, for a manifest path
            (``read_manifest(tabular=)``); not with a :class:`~mmfusion.data.Manifest`.

    Raises:
        ValueError: An argument out of range (the message names it), or ``labels``,
            ``columns`` or ``tabular`` that a given :class:`~mmfusion.data.Manifest` contradicts.
        FileNotFoundError: ``manifest`` is a path that is not a file (checked here, unless
            ``prepare`` is to write it).

    :meth:`from_model` takes the modalities and image size from the model (and the batch size and
    augmentation from a :class:`~mmfusion.models.TrainingConfig`).

    Example:
        >>> import tempfile, cv2, numpy as np
        >>> from pathlib import Path
        >>> from mmfusion.data import write_manifest
        >>> from mmfusion.labels import LabelSpec
        >>> root, rows = Path(tempfile.mkdtemp()), []
        >>> for p in range(8):  # 8 patients, one pair each: a bright fan on black per image
        ...     for m in ("us", "swe"):
        ...         image = np.zeros((96, 128, 3), np.uint8)
        ...         _ = cv2.ellipse(image, (64, 4), (88, 88), 0, 40, 140, (90 + 20 * p,) * 3, -1)
        ...         _ = cv2.imwrite(str(root / f"P{p}_{m}.png"), image)
        ...     rows.append({"patient_id": f"P{p}", "us_path": f"P{p}_us.png",
        ...                  "swe_path": f"P{p}_swe.png", "label": ("benign", "malignant")[p % 2]})
        >>> csv = write_manifest(root / "manifest.csv", rows)
        >>> dm = FusionDataModule(csv, ("us", "swe"), image_size=64, batch_size=4, test_size=0.5,
        ...                       labels=LabelSpec(("benign", "malignant")))
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["us"].shape, sorted(batch)[:3]
        (torch.Size([4, 3, 64, 64]), ['available', 'index', 'label'])
    """

    def __init__(
        self,
        manifest: str | Path | Manifest,
        modalities: Sequence[str],
        image_size: int,
        batch_size: int,
        *,
        augment: str = "online",
        split: str = "patient",
        test_size: float = 0.2,
        folds: int = 0,
        fold: int = 0,
        seed: int = 0,
        workers: int = 0,
        prepare: Callable[[], object] | None = None,
        pin_memory: bool = False,
        crop: Mapping[str, Crop] | None = None,
        val_size: float = 0.0,
        labels: LabelSpec | None = None,
        columns: Mapping[str, Callable[[str], object]] | None = None,
        tabular: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        checks = [
            (augment in AUGMENT_MODES, f"augment: expected one of {AUGMENT_MODES}, got {augment!r}"),
            (split in SPLITS, f"split: expected one of {SPLITS}, got {split!r}"),
            (0.0 < test_size < 1.0, f"test_size: expected a fraction in (0, 1), got {test_size!r}"),
            (folds == 0 or folds >= 2, f"folds: expected 0 (one split) or K >= 2, got {folds!r}"),
            (folds == 0 or 0 <= fold < folds, f"fold: expected 0 <= fold < {folds}, got {fold!r}"),
            (not (split == "site" and folds), "folds: not with split='site' (one split per site; "
             "fold picks the held-out site)"),
            (split != "site" or fold >= 0, f"fold: expected the held-out site's index >= 0, got {fold!r}"),
            (batch_size >= 1, f"batch_size: expected >= 1, got {batch_size!r}"),
            (0.0 <= val_size < 1.0, f"val_size: expected a fraction in [0, 1), got {val_size!r}"),
            (not (val_size and split == "paper"), "val_size: not with split='paper' (it splits images)"),
            (workers >= 0, f"workers: expected >= 0, got {workers!r}"),
            (bool(modalities), f"modalities: expected at least one name, got {modalities!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if labels is not None and not isinstance(labels, LabelSpec):
            raise ValueError(f"labels: expected a LabelSpec (mmfusion.labels) or None, got "
                             f"{type(labels).__name__}")
        if isinstance(manifest, Manifest):
            if labels is not None and labels != manifest.label_spec:
                raise ValueError(f"labels: the Manifest carries its own label spec "
                                 f"{manifest.label_spec}, got another {labels}; read the manifest "
                                 "with read_manifest(path, labels=...) or pass the path")
            if columns is not None or tabular is not None:
                raise ValueError(f"{'columns' if columns is not None else 'tabular'}: applies when "
                                 "a manifest path is read; a Manifest was read already (pass it "
                                 "to read_manifest instead)")
        elif prepare is None:
            _check_manifest_file(manifest)
        self._manifest_source = manifest
        self.labels = labels
        self._columns, self._tabular = columns, tabular
        self.modalities = tuple(modalities)
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.augment, self.split_kind, self.test_size = augment, split, float(test_size)
        self.folds, self.fold, self.seed, self.workers = int(folds), int(fold), int(seed), int(workers)
        self._prepare, self.pin_memory = prepare, bool(pin_memory)
        self.crop = dict(crop) if crop else None
        self.val_size = float(val_size)
        if not self.val_size:  # no validation loader at all (see _NoValidationLoader)
            self.val_dataloader = _NoValidationLoader(self)  # type: ignore[method-assign]
        self.val_idx: tuple[int, ...] = ()
        self.val_set: Dataset | None = None
        if split == "paper" and folds:
            raise ValueError("folds: K-fold runs split by patient; use split='patient'")
        self._prepared = False
        self.manifest: Manifest | None = None
        self.split: Split | None = None
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @classmethod
    def from_model(
        cls,
        manifest: str | Path | Manifest,
        model: nn.Module,
        *,
        training: TrainingConfig | None = None,
        batch_size: int | None = None,
        image_size: int | None = None,
        **kwargs: Any,
    ) -> FusionDataModule:
        """The data module of ``model``: its modalities, in its order, and its image size.

        Args:
            manifest: A manifest CSV path or a :class:`~mmfusion.data.Manifest`.
            model: A :class:`~mmfusion.nn.MultiModalClassifier`; its ``config`` (a
                :class:`~mmfusion.models.FusionClassifier`'s) gives the image size.
            training: Takes ``batch_size`` and ``augment`` from it (unless given here).
            batch_size: Training pairs per step and process (overrides ``training``'s).
            image_size: Only for a model without a ``config``; else it must be the config's.
            **kwargs: The other arguments of :class:`FusionDataModule` (``test_size``, ``seed``,
                ``augment``, ...).

        Raises:
            ValueError: No batch size, no image size for a model without a config, or an image
                size other than the model's.
        """
        config = getattr(model, "config", None)
        built_for = getattr(config, "image_size", None)
        if built_for is None and image_size is None:
            raise ValueError("image_size: the model has no config (not built from a ModelConfig); "
                             "pass image_size=")
        if built_for is not None and image_size is not None and image_size != built_for:
            raise ValueError(f"image_size: the model was built for {built_for} px, got {image_size}")
        if batch_size is None and training is None:
            raise ValueError("batch_size: expected batch_size= or training= (a TrainingConfig), "
                             "got neither")
        if training is not None:
            kwargs.setdefault("augment", training.augment)
        return cls(manifest, tuple(model.modalities), int(built_for or image_size),
                   int(batch_size if batch_size is not None else training.batch_size), **kwargs)

    def prepare_data(self) -> None:
        """Run ``prepare`` (once per node, before ``setup`` on any process of the node; once per
        data module: ``fit`` then ``test`` do not prepare twice)."""
        if self._prepare is not None and not self._prepared:
            self._prepare()
            self._prepared = True

    def load_manifest(self) -> Manifest:
        """Read (once) and check the manifest: every model modality must be a column."""
        if self.manifest is None:
            source = self._manifest_source
            manifest = (source if isinstance(source, Manifest)
                        else read_manifest(source, verify="exists", labels=self.labels,
                                           columns=self._columns, tabular=self._tabular))
            missing = [m for m in self.modalities if m not in manifest.modalities]
            if missing:
                raise ValueError(
                    f"manifest: the model needs {missing} images, the manifest has "
                    f"{list(manifest.modalities)} columns (<name>_path)"
                )
            self.manifest = manifest
        return self.manifest

    def setup(self, stage: str | None = None) -> None:
        """Split the manifest and build the data sets (decoding every pair once)."""
        if self.split is not None:
            return
        manifest = self.load_manifest()
        mods, size, crop = self.modalities, self.image_size, self.crop
        if self.split_kind == "paper":
            plan = paper_plan(manifest.labels, size, self.seed)
            train_items, test_items = augmented_image_split(manifest, plan, self.test_size, self.seed)
            self.split = Split("", tuple(sorted({i.index for i in train_items})),
                               tuple(sorted({i.index for i in test_items})),
                               "paper (augmented first, then images split; leaks near-copies)")
            self._warn_absent(manifest, {"training": self.split.train_idx,
                                         "held-out": self.split.test_idx})
            self.train_set = planned_dataset(manifest, mods, size, train_items, crop=crop)
            self.test_set = planned_dataset(manifest, mods, size, test_items, crop=crop)
            return
        splits = make_splits(manifest, self.split_kind, self.test_size, self.seed, self.folds)
        if self.split_kind == "site" and self.fold >= len(splits):
            sites = ", ".join(s.name.removeprefix("site-") for s in splits)
            raise ValueError(f"fold: expected 0 <= fold < {len(splits)} (the sites {sites}, in "
                             f"order), got {self.fold}")
        self.split = splits[self.fold if self.folds or self.split_kind == "site" else 0]
        train_idx = self.split.train_idx
        if self.val_size:
            training = manifest.subset(list(train_idx))
            kept, held = patient_split(training, self.val_size, self.seed)
            train_idx = tuple(train_idx[i] for i in _positions(training, kept))
            self.val_idx = tuple(self.split.train_idx[i] for i in _positions(training, held))
            self.val_set = eval_dataset(manifest, mods, size, self.val_idx, crop=crop)
        self._warn_absent(manifest, {"training": train_idx, "validation": self.val_idx,
                                     "held-out": self.split.test_idx})
        self.train_set = train_dataset(manifest, mods, size, train_idx, self.augment, self.seed,
                                       crop=crop)
        self.test_set = eval_dataset(manifest, mods, size, self.split.test_idx, crop=crop)

    def _warn_absent(self, manifest: Manifest, parts: Mapping[str, Sequence[int]]) -> None:
        """Warn about each model modality that no pair of the manifest (or of one side of the
        split) has: the model would see only its placeholder there."""
        present = manifest.availability  # [N, M] bool, manifest column order
        column = {m: i for i, m in enumerate(manifest.modalities)}
        for m in self.modalities:
            if not present[:, column[m]].any():
                others = tuple(x for x in self.modalities if x != m)
                hint = (f"drop it from the model's modalities (modalities={others!r})" if others
                        else "give the manifest its images")
                rank_zero_warn(
                    f"modality {m!r}: no pair of the manifest has an image (every {m}_path is "
                    f"empty), so the model's {m} input is a placeholder everywhere; {hint}",
                    category=UserWarning)
                continue
            for side, idx in parts.items():
                if len(idx) and not present[list(idx), column[m]].any():
                    rank_zero_warn(
                        f"modality {m!r}: no {side} pair has an image ({len(idx)} pairs), so the "
                        f"model sees only its placeholder there", category=UserWarning)

    def _shard(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None:
            return {"num_replicas": 1, "rank": 0}
        return {"num_replicas": trainer.world_size, "rank": trainer.global_rank}

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = SeededSampler(dataset, seed=self.seed, shuffle=train, **self._shard())
        batch = self.batch_size if train else max(self.batch_size, 32)
        return DataLoader(
            dataset, batch_size=batch, sampler=sampler, num_workers=self.workers,
            pin_memory=self.pin_memory, persistent_workers=self.workers > 0,
            drop_last=train and len(sampler) > batch,
            prefetch_factor=4 if self.workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented, sharded over the trainer's processes."""
        self.setup()
        assert self.train_set is not None
        return self._loader(self.train_set, train=True)

    def test_dataloader(self) -> DataLoader:
        """The held-out pairs, in order (each process takes its share; predictions are merged)."""
        self.setup()
        assert self.test_set is not None
        return self._loader(self.test_set, train=False)

    def val_dataloader(self) -> DataLoader:
        """The validation split of training patients (``val_size > 0``).

        Without one (``val_size=0``) the data module has no validation loader: ``trainer.fit``
        runs no validation (Lightning notes "no `val_dataloader`. Skipping val loop"), and
        ``trainer.validate`` or a direct call is refused. The held-out test patients are never
        served under the validation name.

        Raises:
            ValueError: No validation split (``val_size=0``).
        """
        self.setup()
        if self.val_set is None:
            raise _no_validation_split()
        return self._loader(self.val_set, train=False)


def _no_validation_split() -> ValueError:
    return ValueError("val_size: no validation split (val_size=0); pass val_size > 0 (e.g. 0.1 of "
                      "the training patients) to validate, or use trainer.test for the held-out "
                      "patients")


class _NoValidationLoader:
    """Stands in for :meth:`FusionDataModule.val_dataloader` when ``val_size=0``.

    Lightning counts a hook whose ``__wrapped__`` is the base class's as not overridden, so
    ``trainer.fit`` skips validation without calling it; ``trainer.validate`` calls it and gets
    the error. (Should a later Lightning call it during ``fit``, it returns no loader.)
    """

    __wrapped__ = pl.LightningDataModule.val_dataloader

    def __init__(self, datamodule: FusionDataModule) -> None:
        self.datamodule = datamodule

    def __call__(self) -> list[DataLoader]:
        trainer = self.datamodule.trainer
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            return []
        raise _no_validation_split()
