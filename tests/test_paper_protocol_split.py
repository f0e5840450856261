"""The paper's augment-then-split protocol leaks pairs; image_split leaks patients; patient_split
neither (issue 13)."""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmfusion.data import (
    AugmentationItem,
    LeakageWarning,
    Manifest,
    ManifestRow,
    augmented_image_split,
    balanced_augmentation_plan,
    image_split,
    patient_split,
    read_manifest,
)
from mmfusion.data.pipeline import paper_plan, planned_dataset
from mmfusion.elastography import SWEBoxCrop
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset


def _manifest(patients_per_stage: list[int], views: list[int]) -> Manifest:
    rows, line, p = [], 2, 0
    for stage, n in enumerate(patients_per_stage):
        for _ in range(n):
            for v in range(views[p % len(views)]):
                paths = {"us": Path(f"/d/P{p}/{v}_us.png"), "swe": Path(f"/d/P{p}/{v}_swe.png")}
                rows.append(ManifestRow(line, f"P{p}", stage, paths))
                line += 1
            p += 1
    return Manifest(tuple(rows), ("us", "swe"), label_spec=METAVIR)


def _quiet_split(manifest, plan, test_size=0.2, seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeakageWarning)
        return augmented_image_split(manifest, plan, test_size, seed)


def _in_order(part: list[AugmentationItem], plan: list[AugmentationItem]) -> bool:
    """True if ``part`` is a subsequence of ``plan`` (the plan's order is kept)."""
    rest = iter(plan)
    return all(any(item == other for other in rest) for item in part)


MANIFEST = _manifest([8, 14, 14, 10, 5], [4, 5, 6, 7])  # the paper's stage proportions, roughly


def test_paper_split_puts_copies_of_most_test_pairs_in_training() -> None:
    plan = balanced_augmentation_plan(MANIFEST.labels, seed=0)
    with pytest.warns(LeakageWarning) as record:
        train, test = augmented_image_split(MANIFEST, plan, test_size=0.2, seed=0)
    train_pairs = {item.index for item in train}
    copied = sum(item.index in train_pairs for item in test)
    assert copied / len(test) > 0.95  # 4+ items per pair: P(no copy in training) ~ 0.2^3
    shared = {MANIFEST[i].patient_id for i in train_pairs} & {
        MANIFEST[item.index].patient_id for item in test
    }
    message = str(record[0].message)
    assert message.startswith(
        f"augmented_image_split: {copied} of {len(test)} test items have an augmented copy of "
        f"the same pair in training, and {len(shared)} patient(s) are on both sides"
    )
    # the test side holds augmented items, not only originals
    assert {(item.flip, item.shift != 0) for item in test} >= {(True, False), (False, True)}


def test_image_split_shares_patients_but_no_pair() -> None:
    with pytest.warns(LeakageWarning):
        train, test = image_split(MANIFEST, test_size=0.2, seed=0)
    train_pairs, test_pairs = {r.line for r in train}, {r.line for r in test}
    plan = balanced_augmentation_plan(train.labels, seed=0)  # augment the training side only
    augmented_pairs = {train[item.index].line for item in plan}
    assert augmented_pairs == train_pairs and not augmented_pairs & test_pairs
    assert set(train.groups) & set(test.groups)  # patients still leak


def test_patient_split_shares_nothing() -> None:
    train, test = patient_split(MANIFEST, test_size=0.2, seed=0)
    assert not set(train.groups) & set(test.groups)
    assert not {r.line for r in train} & {r.line for r in test}


@settings(max_examples=30, deadline=None)
@given(
    per_stage=st.lists(st.integers(2, 6), min_size=3, max_size=5),
    views=st.lists(st.integers(1, 4), min_size=1, max_size=6),
    test_size=st.sampled_from([0.1, 0.2, 0.3, 0.5]),
    seed=st.integers(0, 1000),
)
def test_paper_split_is_a_stratified_partition_of_the_plan(
    per_stage: list[int], views: list[int], test_size: float, seed: int
) -> None:
    manifest = _manifest(per_stage, views)
    plan = balanced_augmentation_plan(manifest.labels, seed=seed)
    n_test, n_stages = math.ceil(test_size * len(plan)), len(set(manifest.labels.tolist()))
    assume(n_stages <= n_test <= len(plan) - n_stages)  # else stratification is impossible (tested below)
    train, test = _quiet_split(manifest, plan, test_size, seed)
    assert Counter(train) + Counter(test) == Counter(plan)
    assert len(train) + len(test) == len(plan)
    assert all(isinstance(item, AugmentationItem) for item in train + test)
    assert _in_order(train, plan) and _in_order(test, plan)
    stages_of = manifest.labels
    total = Counter(int(stages_of[i.index]) for i in plan)
    in_test = Counter(int(stages_of[i.index]) for i in test)
    for stage, n in total.items():
        # stratified: sklearn gives each stage floor or ceil of ceil(test_size * N) * n / N
        assert -1 < in_test[stage] - test_size * n < 2
    assert _quiet_split(manifest, plan, test_size, seed) == (train, test)  # seeded


def test_bad_arguments() -> None:
    plan = balanced_augmentation_plan(MANIFEST.labels)
    n = len(MANIFEST)
    with pytest.raises(ValueError, match=re.escape(f"plan: expected item indices in [0, {n})")):
        augmented_image_split(MANIFEST, [*plan, AugmentationItem(n, False, 0)])
    with pytest.raises(
        ValueError, match=re.escape("test_size: expected a fraction in (0, 1), got 1.0")
    ):
        augmented_image_split(MANIFEST, plan, test_size=1.0)
    with pytest.raises(ValueError, match="plan: expected at least one item"):
        augmented_image_split(MANIFEST, [])
    with pytest.raises(ValueError, match="plan: cannot split its items stratified by stage"):
        augmented_image_split(
            MANIFEST, [AugmentationItem(0, False, 0), AugmentationItem(n - 1, False, 0)]
        )
    with pytest.raises(TypeError, match="manifest: expected a Manifest"):
        augmented_image_split(list(MANIFEST), plan)  # type: ignore[arg-type]


def test_paper_plan_scales_the_papers_shifts() -> None:
    labels = MANIFEST.labels
    assert paper_plan(labels, 224, seed=2) == balanced_augmentation_plan(labels, seed=2)
    small = paper_plan(labels, 64, seed=2)  # round(10 * 64 / 224) = 3 px at most, 1 px fixed
    assert small == balanced_augmentation_plan(labels, shift_px=1, max_extra_shift=3, seed=2)
    assert max(abs(item.shift) for item in small) == 3


def test_planned_datasets_serve_both_sides(tmp_path: Path) -> None:
    csv = make_phantom_dataset(
        tmp_path, n_patients=5, seed=1, workers=1, config=PhantomConfig(width=256, height=192)
    )
    manifest = read_manifest(csv, labels=METAVIR)
    plan = paper_plan(manifest.labels, 32, seed=0)
    train_items, test_items = _quiet_split(manifest, plan, 0.2, 0)
    train_set = planned_dataset(manifest, ("us", "swe"), 32, train_items)
    test_set = planned_dataset(manifest, ("us", "swe"), 32, test_items, crop={"swe": SWEBoxCrop("box")})
    assert (len(train_set), len(test_set)) == (len(train_items), len(test_items))
    k = next(k for k, item in enumerate(test_items) if item.flip and item.shift == 0)
    item = test_set[k]
    source = test_items[k].index
    assert item["label"] == manifest[source].stage and item["index"] == k
    original = planned_dataset(
        manifest, ("us", "swe"), 32, [AugmentationItem(source, False, 0)], crop={"swe": SWEBoxCrop("box")}
    )[0]
    for modality in ("us", "swe"):
        assert torch.equal(item[modality], original[modality].flip(-1))
    assert np.isfinite(train_set[0]["us"].numpy()).all()
