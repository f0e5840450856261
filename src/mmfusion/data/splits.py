"""Patient-level train/test splits, stratified by class (docs/paper_map.rst "Decisions").

Each patient contributes several image pairs; a random image-level split puts other views of a
test patient into training and overstates accuracy. :func:`patient_split` and
:func:`patient_kfold` keep all of a patient's pairs on one side, using scikit-learn's
``StratifiedGroupKFold``. :func:`site_splits` holds out one site (hospital, scanner) at a time,
with scikit-learn's ``LeaveOneGroupOut``, to measure whether a model transfers to another site.
Two leaking splits are kept to measure the leak, and warn:

- :func:`image_split` splits the pairs at random *before* augmentation (then augment the training
  side only): patients are shared, pairs are not.
- :func:`augmented_image_split` is the paper's protocol (II.B, IV.B): augment every pair first,
  then split the augmented items at random 80/20, so most test items have a flipped or shifted
  copy of the same pair in training.

Messages and warnings name the classes with the manifest's :attr:`~mmfusion.data.Manifest.label_spec`
(``F0`` ... ``F4`` for a liver manifest read with ``labels=METAVIR``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, train_test_split

from mmfusion.data.augmentation import AugmentationItem
from mmfusion.data.manifest import Manifest

__all__ = [
    "LeakageWarning",
    "augmented_image_split",
    "image_split",
    "patient_kfold",
    "patient_split",
    "site_splits",
]


class LeakageWarning(UserWarning):
    """Warned by :func:`image_split` and :func:`augmented_image_split`: one patient's pairs (or
    augmented copies of one pair) land on both sides of the split."""


def _check_manifest(manifest: Manifest) -> None:
    if not isinstance(manifest, Manifest):
        raise TypeError(f"manifest: expected a Manifest, got {type(manifest).__name__}")


def _names(manifest: Manifest) -> tuple[str, ...]:
    """The class names of the manifest's label spec."""
    spec = manifest.label_spec
    assert spec is not None  # Manifest sets one
    return spec.names


def _noun(manifest: Manifest) -> tuple[str, str]:
    """What messages call a class, singular and plural: the label spec's column (``"stage"``,
    ``"stages"`` for the liver), or ``"class"``, ``"classes"`` for the generic ``label``."""
    spec = manifest.label_spec
    column = "label" if spec is None else spec.column
    one = "class" if column == "label" else column.replace("_", " ")
    return one, one + ("es" if one.endswith(("s", "x", "sh", "ch")) else "s")


def _patients_per_class(manifest: Manifest) -> dict[int, int]:
    per_class: dict[int, set[str]] = {}
    for row in manifest:
        per_class.setdefault(row.label, set()).add(row.patient_id)
    return {label: len(p) for label, p in sorted(per_class.items())}


def _folds(manifest: Manifest, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    dummy = np.zeros(len(manifest))
    with warnings.catch_warnings():  # small classes are checked and reported by the callers
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(splitter.split(dummy, manifest.labels, manifest.groups))


def _fold_problem(manifest: Manifest, k: int) -> str | None:
    """Why scikit-learn's ``StratifiedGroupKFold`` cannot make ``k`` folds, or None: it needs
    ``k`` patients, and a class with at least ``k`` pairs."""
    n_patients = len(set(manifest.groups))
    if n_patients < k:
        return f"{k} folds need at least {k} patients, the manifest has {n_patients}"
    largest = int(np.bincount(manifest.labels).max()) if len(manifest) else 0
    if largest < k:
        one, _ = _noun(manifest)
        return f"{k} folds need a {one} with at least {k} pairs, the largest {one} has {largest}"
    return None


def _split_fold(manifest: Manifest, k: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The first ``k``-fold fold (in seeded order) with every class on both sides, or None."""
    if _fold_problem(manifest, k) is not None:
        return None
    classes = set(manifest.labels)
    labels = manifest.labels
    for train_idx, test_idx in _folds(manifest, k, seed):
        if set(labels[train_idx]) == classes and set(labels[test_idx]) == classes:
            return train_idx, test_idx
    return None


def _fraction_for(k: int) -> float:
    """A ``test_size`` that :func:`patient_split` turns into ``k`` folds (``round(1 / f) == k``)."""
    for digits in (2, 3, 6):
        fraction = round(1.0 / k, digits)
        if round(1.0 / fraction) == k and fraction <= 0.5:
            return fraction
    return 1.0 / k


def _counts(manifest: Manifest) -> str:
    names = _names(manifest)
    patients = ", ".join(f"{names[c]}: {n}" for c, n in _patients_per_class(manifest).items())
    pairs = np.bincount(manifest.labels) if len(manifest) else np.zeros(0, np.int64)
    listed = ", ".join(f"{names[c]}: {int(n)}" for c, n in enumerate(pairs) if n)
    one, _ = _noun(manifest)
    return f"patients per {one}: {patients}; pairs per {one}: {listed}"


def patient_split(
    manifest: Manifest, test_size: float = 0.2, seed: int = 0, *, name: str = "test_size"
) -> tuple[Manifest, Manifest]:
    """Split by patient into train and test, stratified by class.

    Implemented as one fold of scikit-learn's ``StratifiedGroupKFold`` with
    ``k = round(1 / test_size)`` folds (test_size 0.2 -> 5 folds, one fold for test), so the test
    share is ``1 / k`` of the pairs, approximately. The first fold (in seeded order) that has every
    class on both sides is used; a class needs at least 2 patients (``k`` to be safe), and some
    class needs ``k`` pairs.

    Args:
        manifest: The validated manifest.
        test_size: Fraction of pairs for the test side, in (0, 0.5].
        seed: Seed of the fold assignment.
        name: What ``test_size`` is called in error messages (e.g. ``"val_size"`` when the
            split holds out validation patients).

    Returns:
        ``(train, test)`` manifests; no patient appears in both.

    Raises:
        ValueError: If ``test_size`` is out of range, or no fold keeps every class on both sides
            (also when there are too few patients or pairs for ``k`` folds): the message names
            ``name``, lists the patients and pairs per class, and gives a larger ``test_size``
            that works, or says that none does.
    """
    _check_manifest(manifest)
    if not 0.0 < test_size <= 0.5:
        raise ValueError(f"{name}: expected a fraction in (0, 0.5], got {test_size}")
    k = max(2, int(round(1.0 / test_size)))
    found = _split_fold(manifest, k, seed)
    if found is not None:
        return manifest.subset(found[0]), manifest.subset(found[1])
    one, many = _noun(manifest)
    why = _fold_problem(manifest, k) or f"no fold keeps every {one} on both sides"
    works = next((j for j in range(k - 1, 1, -1) if _split_fold(manifest, j, seed) is not None), 0)
    hint = (
        f"{name}={_fraction_for(works)} ({works} folds) works"
        if works
        else f"no test share works: each {one} needs at least 2 patients (to be on both sides), "
        f"so add patients of the small {many}"
    )
    raise ValueError(
        f"{name}: {name}={test_size} splits by patient as one fold of {k} "
        f"(StratifiedGroupKFold), but {why}; {_counts(manifest)}; {hint}"
    )


def patient_kfold(
    manifest: Manifest, k: int = 5, seed: int = 0, *, name: str = "k"
) -> list[tuple[Manifest, Manifest]]:
    """K-fold cross-validation by patient, stratified by class (``StratifiedGroupKFold``).

    Every pair is in exactly one test fold; no patient is on both sides of any fold. A class with
    at least ``k`` patients appears in every test fold.

    Args:
        manifest: The validated manifest.
        k: Number of folds (>= 2).
        seed: Seed of the fold assignment.
        name: What ``k`` is called in error messages (e.g. ``"folds"``).

    Returns:
        ``k`` pairs of ``(train, test)`` manifests.

    Raises:
        ValueError: If ``k < 2``, there are fewer patients than folds, or no class has ``k``
            pairs; the message names ``name`` and the largest number of folds that works.
    """
    _check_manifest(manifest)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"{name}: expected an int >= 2, got {k!r}")
    problem = _fold_problem(manifest, k)
    if problem is not None:
        largest = int(np.bincount(manifest.labels).max()) if len(manifest) else 0
        most = min(largest, len(set(manifest.groups)))
        hint = f"use {name} <= {most}" if most >= 2 else "add patients"
        raise ValueError(f"{name}: {problem}; {_counts(manifest)}; {hint}")
    names = _names(manifest)
    small = {names[c]: n for c, n in _patients_per_class(manifest).items() if n < k}
    if small:
        warnings.warn(
            f"patient_kfold: {_noun(manifest)[1]} with fewer than {name}={k} patients will be "
            f"missing from some test folds: {small}",
            UserWarning,
            stacklevel=2,
        )
    return [(manifest.subset(tr), manifest.subset(te)) for tr, te in _folds(manifest, k, seed)]


def _lines(lines: Sequence[int], most: int = 10) -> str:
    shown = ", ".join(map(str, lines[:most]))
    return shown + (f" (and {len(lines) - most} more)" if len(lines) > most else "")


def _sites(manifest: Manifest, column: str) -> np.ndarray:
    """``[N]`` site of each pair (object array), validated: the column exists, no value is empty,
    each patient is at one site."""
    if not isinstance(column, str) or not column:
        raise ValueError(f"column: expected a column name, got {column!r}")
    if manifest.rows and not any(column in row.extra for row in manifest):
        others = sorted({name for row in manifest for name in row.extra})
        raise ValueError(
            f"manifest {manifest.source}: no {column!r} column (the site of each pair); its other "
            f"columns: {', '.join(others) if others else 'none'}"
        )
    sites = [row.extra.get(column, "").strip() for row in manifest]
    empty = [row.line for row, site in zip(manifest, sites, strict=True) if not site]
    if empty:
        raise ValueError(f"manifest {manifest.source}: empty {column!r} on line(s) {_lines(empty)}")
    at: dict[str, dict[str, list[int]]] = {}
    for row, site in zip(manifest, sites, strict=True):
        at.setdefault(row.patient_id, {}).setdefault(site, []).append(row.line)
    shared = [
        f"patient {patient!r} at "
        + ", ".join(f"{site!r} (line(s) {_lines(lines)})" for site, lines in sorted(places.items()))
        for patient, places in at.items()
        if len(places) > 1
    ]
    if shared:
        raise ValueError(
            f"manifest {manifest.source}: a patient belongs to one site (else a site split puts "
            f"the patient on both sides), but {'; '.join(shared)}"
        )
    return np.array(sites, dtype=object)


def site_splits(manifest: Manifest, column: str = "site") -> list[tuple[Manifest, Manifest]]:
    """Leave-one-site-out: each site in turn is the test side, the other sites train
    (scikit-learn's ``LeaveOneGroupOut``).

    The site of a pair (the hospital or scanner it came from) is its value in the manifest's
    ``column``, an extra CSV column (:attr:`~mmfusion.data.ManifestRow.extra`). The test side of
    split ``i`` is every pair of the ``i``-th site in sorted (string) order, so its site is the
    ``column`` value of ``test[0]``. Every pair is tested exactly once, and a patient is at one
    site, so no patient is on both sides. Classes are not stratified: each site keeps its own
    class mix. A class that only one site has is missing from the training side when that site is
    held out; that is warned.

    Args:
        manifest: The validated manifest.
        column: The column naming each pair's site.

    Returns:
        One ``(train, test)`` pair of manifests per site, sites in sorted order.

    Raises:
        ValueError: If the manifest has no ``column``, a pair's site is empty (the message gives
            the line numbers), a patient is at more than one site (the message names the patient,
            its sites and lines), or there are fewer than 2 sites.
    """
    _check_manifest(manifest)
    sites = _sites(manifest, column)
    names = sorted(set(sites))
    if len(names) < 2:
        raise ValueError(
            f"manifest {manifest.source}: expected at least 2 sites in column {column!r} to hold "
            f"one out, got {len(names)}" + (f" ({names[0]!r})" if names else "")
        )
    dummy = np.zeros(len(manifest))
    folds = LeaveOneGroupOut().split(dummy, groups=sites)
    splits = [(manifest.subset(tr), manifest.subset(te))
              for tr, te in sorted(folds, key=lambda fold: sites[fold[1][0]])]  # fmt: skip
    untrained = {
        name: [_names(manifest)[c] for c in sorted(set(test.labels) - set(train.labels))]
        for name, (train, test) in zip(names, splits, strict=True)
        if set(test.labels) - set(train.labels)
    }
    if untrained:
        warnings.warn(
            f"site_splits: {_noun(manifest)[1]} that only one site has are missing from the "
            f"training side when that site is held out: {untrained}",
            UserWarning,
            stacklevel=2,
        )
    return splits


def image_split(
    manifest: Manifest, test_size: float = 0.2, seed: int = 0
) -> tuple[Manifest, Manifest]:
    """Image-level random split of the pairs, stratified by class, before augmentation: LEAKS.

    Pairs of one patient end up on both sides, so test accuracy is optimistic; augment the training
    side only, then no pair (and no augmented copy of one) is on both sides. This is not the
    paper's protocol, which augmented first and then split (:func:`augmented_image_split`, which
    leaks more). Use only to measure the leak; prefer :func:`patient_split`. Always warns with
    :class:`LeakageWarning`.

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
        "optimistic (an image-level split). Use patient_split for honest estimates.",
        LeakageWarning,
        stacklevel=2,
    )
    return manifest.subset(np.sort(train_idx)), manifest.subset(np.sort(test_idx))


def augmented_image_split(
    manifest: Manifest,
    plan: Sequence[AugmentationItem | tuple[int, bool, int]],
    test_size: float = 0.2,
    seed: int = 0,
) -> tuple[list[AugmentationItem], list[AugmentationItem]]:
    """The paper's protocol: augment first, then split the augmented items at random (II.B, IV.B).

    The items of ``plan`` (e.g. :func:`~mmfusion.data.balanced_augmentation_plan` over every pair
    of ``manifest``) are split at random, stratified by their pair's class, with scikit-learn's
    ``train_test_split``. A pair's original, flipped and shifted copies then land on both sides:
    with 4 or more items per pair and ``test_size=0.2``, nearly every test item has a near-copy in
    training (and other views of its patient), so test accuracy is optimistic. Use only to
    reproduce the paper; prefer :func:`patient_split`, then augment the training side. Always
    warns with :class:`LeakageWarning`, saying how many test items have a copy of their pair in
    training and how many patients are on both sides.

    Args:
        manifest: The validated manifest whose rows the plan's indices address.
        plan: Augmentation items ``(index, flip, shift)``.
        test_size: Fraction of items for the test side, in (0, 1) (paper: 0.2).
        seed: Seed of the split.

    Returns:
        ``(train_items, test_items)``: a partition of ``plan``'s items, each in plan order; serve
        them with :func:`mmfusion.data.pipeline.planned_dataset` (the test side holds augmented
        items, as in the paper).

    Raises:
        TypeError: ``manifest`` is not a Manifest.
        ValueError: ``test_size`` out of range, an item index outside the manifest, or a class
            with too few items to stratify.
    """
    _check_manifest(manifest)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size: expected a fraction in (0, 1), got {test_size}")
    items = [AugmentationItem(int(i), bool(f), int(s)) for i, f, s in plan]
    if not items:
        raise ValueError("plan: expected at least one item, got none")
    sources = np.array([item.index for item in items])
    bad = sources[(sources < 0) | (sources >= len(manifest))]
    if len(bad):
        raise ValueError(
            f"plan: expected item indices in [0, {len(manifest)}) (rows of the manifest), "
            f"got {sorted(set(bad.tolist()))[:3]}"
        )
    try:
        train_pos, test_pos = train_test_split(
            np.arange(len(items)), test_size=test_size, random_state=seed,
            stratify=manifest.labels[sources],
        )  # fmt: skip
    except ValueError as error:
        raise ValueError(
            f"plan: cannot split its items stratified by {_noun(manifest)[0]}: {error}"
        ) from error
    train_pos, test_pos = np.sort(train_pos), np.sort(test_pos)
    in_train = set(sources[train_pos].tolist())
    copied = sum(int(sources[k]) in in_train for k in test_pos)
    groups = manifest.groups
    shared = set(groups[sources[train_pos]]) & set(groups[sources[test_pos]])
    warnings.warn(
        f"augmented_image_split: {copied} of {len(test_pos)} test items have an augmented copy "
        f"of the same pair in training, and {len(shared)} patient(s) are on both sides; test "
        "accuracy will be optimistic (the paper's protocol). Use patient_split for honest "
        "estimates.",
        LeakageWarning,
        stacklevel=2,
    )
    return [items[k] for k in train_pos], [items[k] for k in test_pos]
