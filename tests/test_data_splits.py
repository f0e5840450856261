"""Patient-level splits never share a patient and keep every stage on both sides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.data import (
    LeakageWarning,
    Manifest,
    ManifestRow,
    image_split,
    patient_kfold,
    patient_split,
)
from mmfusion.liver import METAVIR


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


def _check_disjoint(train: Manifest, test: Manifest, whole: Manifest) -> None:
    assert not set(train.groups) & set(test.groups)
    lines = [r.line for r in train] + [r.line for r in test]
    assert sorted(lines) == sorted(r.line for r in whole)


manifests = st.builds(
    _manifest,
    st.lists(st.integers(5, 12), min_size=5, max_size=5),
    st.lists(st.integers(1, 7), min_size=1, max_size=20),
)


@settings(max_examples=40, deadline=None)
@given(manifest=manifests, seed=st.integers(0, 10_000))
def test_patient_split(manifest: Manifest, seed: int) -> None:
    train, test = patient_split(manifest, test_size=0.2, seed=seed)
    _check_disjoint(train, test, manifest)
    assert set(train.labels) == set(test.labels) == set(range(5))
    assert 0.05 < len(test) / len(manifest) < 0.45


@settings(max_examples=25, deadline=None)
@given(manifest=manifests, seed=st.integers(0, 10_000))
def test_patient_kfold(manifest: Manifest, seed: int) -> None:
    folds = patient_kfold(manifest, k=5, seed=seed)
    assert len(folds) == 5
    test_lines = [r.line for _, test in folds for r in test]
    assert sorted(test_lines) == sorted(r.line for r in manifest)  # each pair tested once
    for train, test in folds:
        _check_disjoint(train, test, manifest)
        assert set(train.labels) == set(test.labels) == set(range(5))


def test_split_is_deterministic_per_seed() -> None:
    m = _manifest([8, 8, 8, 8, 8], [3, 5, 4])
    a, b = patient_split(m, seed=3), patient_split(m, seed=3)
    assert [r.line for r in a[1]] == [r.line for r in b[1]]
    others = {tuple(r.line for r in patient_split(m, seed=s)[1]) for s in range(5)}
    assert len(others) > 1


def test_stage_with_one_patient_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="F4: 1"):
        patient_split(_manifest([6, 6, 6, 6, 1], [3]))


def test_image_split_warns_about_leakage() -> None:
    m = _manifest([6, 6, 6, 6, 6], [5])
    with pytest.warns(LeakageWarning, match="both sides"):
        train, test = image_split(m, test_size=0.2, seed=0)
    assert len(train) + len(test) == len(m)
    assert set(train.groups) & set(test.groups)  # it really leaks
    assert np.bincount(test.labels).min() >= 1


def test_bad_arguments() -> None:
    m = _manifest([6, 6, 6, 6, 6], [2])
    with pytest.raises(ValueError, match="test_size"):
        patient_split(m, test_size=0.9)
    with pytest.raises(ValueError, match="k"):
        patient_kfold(m, k=1)
    with pytest.raises(TypeError, match="manifest"):
        patient_split([1, 2, 3])  # type: ignore[arg-type]
