"""Issue 24, item 19 (a): small data gets the library's own split errors, naming the argument and
a value that works, never scikit-learn's "n_splits=5 cannot be greater than the number of members
in each class"."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from mmfusion.data import Manifest, ManifestRow, patient_kfold, patient_split
from mmfusion.liver import METAVIR


def _manifest(patients_per_stage: list[int]) -> Manifest:
    """One pair per patient, ``patients_per_stage[s]`` patients of stage ``s``."""
    rows, p = [], 0
    for stage, n in enumerate(patients_per_stage):
        for _ in range(n):
            paths = {"us": Path(f"/d/P{p}_us.png"), "swe": Path(f"/d/P{p}_swe.png")}
            rows.append(ManifestRow(p + 2, f"P{p}", stage, paths))
            p += 1
    return Manifest(tuple(rows), ("us", "swe"), "twelve.csv", label_spec=METAVIR)


TWELVE = [3, 3, 2, 2, 2]  # 12 patients: sklearn refuses 5 folds, 3 folds lose a stage, 2 work


def test_twelve_patients_get_a_named_argument_and_a_working_value() -> None:
    with pytest.raises(ValueError) as info:
        patient_split(_manifest(TWELVE), test_size=0.2)
    text = str(info.value)
    assert "n_splits" not in text
    assert text.startswith("test_size: ")
    assert "test_size=0.5 (2 folds) works" in text
    assert "F0: 3, F1: 3, F2: 2, F3: 2, F4: 2" in text
    train, test = patient_split(_manifest(TWELVE), test_size=0.5)  # the suggestion works
    assert not set(train.groups) & set(test.groups)


def test_the_validation_split_names_val_size() -> None:
    with pytest.raises(ValueError) as info:
        patient_split(_manifest(TWELVE), 0.34, name="val_size")
    text = str(info.value)
    assert text.startswith("val_size: ") and "val_size=0.5 (2 folds) works" in text
    assert "test_size" not in text
    with pytest.raises(ValueError, match=r"val_size: expected a fraction in \(0, 0.5\], got 0.99"):
        patient_split(_manifest(TWELVE), 0.99, name="val_size")


def test_no_working_value_says_what_is_missing() -> None:
    with pytest.raises(ValueError) as info:
        patient_split(_manifest([1, 3, 3, 3, 3]), test_size=0.2)
    text = str(info.value)
    assert text.startswith("test_size: ") and "n_splits" not in text
    assert "F0: 1" in text and "each stage needs at least 2 patients" in text


def test_kfold_with_more_folds_than_any_stage_has_pairs() -> None:
    with pytest.raises(ValueError) as info:
        patient_kfold(_manifest(TWELVE), k=5)
    text = str(info.value)
    assert text.startswith("k: ") and "n_splits" not in text and "k <= 3" in text
    with pytest.raises(ValueError, match=r"^folds: .*folds <= 3"):
        patient_kfold(_manifest(TWELVE), k=4, name="folds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # stages with fewer than k patients
        assert len(patient_kfold(_manifest(TWELVE), k=3)) == 3
