"""Patient-level train/test splits, stratified by stage (NOTES.md "Where the paper is weak").

Each patient contributes several image pairs; a random image-level split (the paper's, II.B and
IV.B) puts near-copies of test images into training and overstates accuracy. :func:`patient_split`
and :func:`patient_kfold` keep all of a patient's pairs on one side, using scikit-learn's
``StratifiedGroupKFold``. :func:`image_split` reproduces the paper's split and warns.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from mmfusion.data.manifest import Manifest
from mmfusion.liver.stages import STAGE_NAMES

__all__ = ["LeakageWarning", "image_split", "patient_kfold", "patient_split"]


class LeakageWarning(UserWarning):
    """Warned by :func:`image_split`: pairs of one patient land on both sides of the split."""


def _check_manifest(manifest: Manifest) -> None:
    if not isinstance(manifest, Manifest):
        raise TypeError(f"manifest: expected a Manifest, got {type(manifest).__name__}")


def _patients_per_stage(manifest: Manifest) -> dict[int, int]:
    per_stage: dict[int, set[str]] = {}
    for row in manifest:
        per_stage.setdefault(row.stage, set()).add(row.patient_id)
    return {stage: len(p) for stage, p in sorted(per_stage.items())}


def _folds(manifest: Manifest, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    dummy = np.zeros(len(manifest))
    with warnings.catch_warnings():  # small stages are checked and reported by the callers
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(dummy, manifest.labels, manifest.groups))


def patient_split(
    manifest: Manifest, test_size: float = 0.2, seed: int = 0
) -> tuple[Manifest, Manifest]:
    """Split by patient into train and test, stratified by stage.

    Implemented as one fold of scikit-learn's ``StratifiedGroupKFold`` with
    ``k = round(1 / test_size)`` folds (test_size 0.2 -> 5 folds, one fold for test), so the test
    share is ``1 / k`` of the pairs, approximately. The first fold (in seeded order) that has every
    stage on both sides is used; a stage needs at least 2 patients (``k`` to be safe).

    Args:
        manifest: The validated manifest.
        test_size: Fraction of pairs for the test side, in (0, 0.5].
        seed: Seed of the fold assignment.

    Returns:
        ``(train, test)`` manifests; no patient appears in both.

    Raises:
        ValueError: If ``test_size`` is out of range or no fold keeps every stage on both sides
            (the message lists the patients per stage).
    """
    _check_manifest(manifest)
    if not 0.0 < test_size <= 0.5:
        raise ValueError(f"test_size: expected a fraction in (0, 0.5], got {test_size}")
    k = max(2, int(round(1.0 / test_size)))
    counts = _patients_per_stage(manifest)
    stages = set(counts)
    if len(set(manifest.groups)) < k:
        raise ValueError(
            f"manifest: expected at least {k} patients for test_size={test_size}, "
            f"got {len(set(manifest.groups))}"
        )
    for train_idx, test_idx in _folds(manifest, k, seed):
        labels = manifest.labels
        if set(labels[train_idx]) == stages and set(labels[test_idx]) == stages:
            return manifest.subset(train_idx), manifest.subset(test_idx)
    listed = ", ".join(f"{STAGE_NAMES[s]}: {n}" for s, n in counts.items())
    raise ValueError(
        f"manifest: cannot keep every stage on both sides of a {k}-fold patient split; "
        f"patients per stage: {listed} (each stage needs at least 2, {k} to be safe)"
    )


def patient_kfold(manifest: Manifest, k: int = 5, seed: int = 0) -> list[tuple[Manifest, Manifest]]:
    """K-fold cross-validation by patient, stratified by stage (``StratifiedGroupKFold``).

    Every pair is in exactly one test fold; no patient is on both sides of any fold. A stage with
    at least ``k`` patients appears in every test fold.

    Args:
        manifest: The validated manifest.
        k: Number of folds (>= 2).
        seed: Seed of the fold assignment.

    Returns:
        ``k`` pairs of ``(train, test)`` manifests.

    Raises:
        ValueError: If ``k < 2`` or there are fewer patients than folds.
    """
    _check_manifest(manifest)
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k: expected an int >= 2, got {k!r}")
    n_patients = len(set(manifest.groups))
    if n_patients < k:
        raise ValueError(f"manifest: expected at least k={k} patients, got {n_patients}")
    small = {STAGE_NAMES[s]: n for s, n in _patients_per_stage(manifest).items() if n < k}
    if small:
        warnings.warn(
            f"patient_kfold: stages with fewer than k={k} patients will be missing from some "
            f"test folds: {small}",
            UserWarning,
            stacklevel=2,
        )
    return [(manifest.subset(tr), manifest.subset(te)) for tr, te in _folds(manifest, k, seed)]


def image_split(
    manifest: Manifest, test_size: float = 0.2, seed: int = 0
) -> tuple[Manifest, Manifest]:
    """Image-level random split stratified by stage: the paper's protocol, which LEAKS.

    Pairs of one patient end up on both sides, so test accuracy is optimistic. Use only to
    reproduce the paper; prefer :func:`patient_split`. Always warns with :class:`LeakageWarning`.

    Args:
        manifest: The validated manifest.
        test_size: Fraction of pairs for the test side, in (0, 1).
        seed: Seed.

    Returns:
        ``(train, test)`` manifests.
    """
    _check_manifest(manifest)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size: expected a fraction in (0, 1), got {test_size}")
    train_idx, test_idx = train_test_split(
        np.arange(len(manifest)), test_size=test_size, random_state=seed, stratify=manifest.labels
    )
    shared = set(manifest.groups[train_idx]) & set(manifest.groups[test_idx])
    warnings.warn(
        f"image_split: {len(shared)} patient(s) have pairs on both sides; test accuracy will be "
        "optimistic (the paper's protocol). Use patient_split for honest estimates.",
        LeakageWarning,
        stacklevel=2,
    )
    return manifest.subset(np.sort(train_idx)), manifest.subset(np.sort(test_idx))
