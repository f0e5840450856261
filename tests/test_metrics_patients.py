"""Per-patient aggregation and the patient-level report: hand computations and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.metrics import (
    AGGREGATION_METHODS,
    aggregate_patients,
    classification_report,
    patient_report,
)


def test_mean_by_hand() -> None:
    probs = [[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.4, 0.4, 0.2], [0.5, 0.3, 0.2]]
    ids, p, y = aggregate_patients(probs, ["P2", "P2", "P1", "P2", "P3"], labels=[2, 2, 1, 2, 0])
    assert ids.tolist() == ["P1", "P2", "P3"]
    np.testing.assert_allclose(
        p,
        [[0.1, 0.8, 0.1], [(0.6 + 0.2 + 0.4) / 3, (0.3 + 0.2 + 0.4) / 3, (0.1 + 0.6 + 0.2) / 3],
         [0.5, 0.3, 0.2]],
        rtol=0, atol=1e-15,
    )
    assert y is not None and y.tolist() == [1, 2, 0] and y.dtype == np.int64
    assert aggregate_patients(probs, [2, 2, 1, 2, 3]).labels is None
    assert aggregate_patients(probs, [2, 2, 1, 2, 3]).patient_ids.tolist() == [1, 2, 3]


def test_geometric_mean_by_hand() -> None:
    probs = [[0.5, 0.25, 0.25], [0.125, 0.5, 0.375]]
    _, p, _ = aggregate_patients(probs, ["a", "a"], method="geometric_mean")
    g = np.array([np.sqrt(0.5 * 0.125), np.sqrt(0.25 * 0.5), np.sqrt(0.25 * 0.375)])
    np.testing.assert_allclose(p[0], g / g.sum(), rtol=1e-12)
    assert p[0].argmax() == 1  # the product 0.0625 : 0.125 : 0.09375 also picks stage 1
    # Exact zeros are floored at 1e-12: two views that each rule the other's class out tie.
    _, p, _ = aggregate_patients([[1.0, 0.0], [0.0, 1.0]], ["a", "a"], method="geometric_mean")
    np.testing.assert_allclose(p, [[0.5, 0.5]], rtol=1e-12)
    # And one 0 against a near-certain view still leaves that class far behind.
    _, p, _ = aggregate_patients([[0.0, 1.0], [0.1, 0.9]], ["a", "a"], method="geometric_mean")
    expected = np.array([np.sqrt(1e-12 * 0.1), np.sqrt(0.9)])
    np.testing.assert_allclose(p[0], expected / expected.sum(), rtol=1e-12)


def test_max_stage_by_hand() -> None:
    views = np.array([
        [0.1, 0.5, 0.3, 0.1],  # patient a: predicts F1
        [0.3, 0.2, 0.4, 0.1],  # a: predicts F2 (0.4) -> the most advanced stage of a
        [0.5, 0.1, 0.3, 0.1],  # a: F0
        [0.0, 0.1, 0.3, 0.6],  # b: F3 at 0.6
        [0.2, 0.0, 0.1, 0.7],  # b: F3 at 0.7 -> wins the tie on stage by confidence
        [0.1, 0.3, 0.6, 0.0],  # c: F2 at 0.6, nothing above; F1 0.3
        [0.3, 0.1, 0.6, 0.0],  # c: same stage and confidence; F1 0.1 -> loses to the one above
    ])
    ids, p, _ = aggregate_patients(views, list("aaabbcc"), method="max_stage")
    assert ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(p, views[[1, 4, 5]])
    assert p.argmax(1).tolist() == [2, 3, 2]


def test_patient_with_two_labels_is_named() -> None:
    probs = np.full((4, 2), 0.5)
    with pytest.raises(
        ValueError,
        match=r"labels: patient 'P7' has views with different labels \[0, 1\]; expected one "
        r"stage per patient \(1 patient\(s\) disagree\)",
    ):
        aggregate_patients(probs, ["P1", "P7", "P7", "P1"], labels=[0, 0, 1, 0])
    with pytest.raises(ValueError, match=r"labels: patient 3 has views"):
        patient_report(probs, [0, 0, 1, 0], [1, 3, 3, 1])


def test_bad_arguments() -> None:
    probs = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match=r"method: expected one of \['mean', 'geometric_mean', "):
        aggregate_patients(probs, [1, 2, 3], method="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups: expected length 3 \\(rows of probs\\), got length 2"):
        aggregate_patients(probs, [1, 2])
    with pytest.raises(ValueError, match="probs: expected every row to sum to 1"):
        aggregate_patients([[0.5, 0.6]], [1])
    with pytest.raises(ValueError, match="labels: expected values in 0..1"):
        aggregate_patients(probs, [1, 2, 3], labels=[0, 1, 2])
    with pytest.raises(ValueError, match="labels: expected \\[N\\] stages of the views, got None"):
        patient_report(probs, None, [1, 2, 3])


def test_torch_inputs_and_report_keys() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
    report = patient_report(probs, torch.tensor([0, 0, 1, 0, 1]), ["a", "a", "b", "c", "d"],
                            n_bootstrap=20)
    assert report["level"] == "patient" and report["aggregation"] == "mean"
    assert report["n"] == report["n_groups"] == 4 and report["n_views"] == 5
    assert report["ci"]["unit"] == "patient" and report["ci"]["n_bootstrap"] == 20
    # a: mean (0.55, 0.45) -> F0 right; b -> F1 right; c -> F0 right; d -> F0, but is F1.
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[2, 0], [1, 1]]


@st.composite
def views(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random views of a few patients: probabilities on a coarse grid (so that ties happen),
    patient ids, labels consistent per patient, and a permutation of the rows."""
    k = draw(st.integers(2, 5))
    n_patients = draw(st.integers(1, 8))
    n = draw(st.integers(n_patients, 3 * n_patients))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 4, size=(n, k)).astype(float)
    weights[weights.sum(1) == 0, 0] = 1.0
    probs = weights / weights.sum(1, keepdims=True)
    patient = np.r_[np.arange(n_patients), rng.integers(0, n_patients, n - n_patients)]
    stage_of = rng.integers(0, k, n_patients)
    return probs, np.array([f"P{i}" for i in patient]), stage_of[patient], rng.permutation(n)


@settings(max_examples=60, deadline=None)
@given(data=views(), method=st.sampled_from(AGGREGATION_METHODS))
def test_row_order_does_not_matter(data, method: str) -> None:
    probs, groups, labels, perm = data
    ids, p, y = aggregate_patients(probs, groups, labels, method=method)
    ids2, p2, y2 = aggregate_patients(probs[perm], groups[perm], labels[perm], method=method)
    assert ids.tolist() == ids2.tolist()
    np.testing.assert_array_equal(p, p2)  # bit for bit: views combine in a canonical order
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert patient_report(probs, labels, groups, method=method, n_bootstrap=30) == patient_report(
        probs[perm], labels[perm], groups[perm], method=method, n_bootstrap=30
    )


@settings(max_examples=60, deadline=None)
@given(data=views())
def test_each_method_keeps_its_defining_property(data) -> None:
    probs, groups, labels, _ = data
    ids = np.unique(groups)
    members = [probs[groups == g] for g in ids]
    _, mean, _ = aggregate_patients(probs, groups, method="mean")
    np.testing.assert_allclose(mean, [v.mean(0) for v in members], rtol=0, atol=1e-12)
    _, worst, _ = aggregate_patients(probs, groups, method="max_stage")
    assert worst.argmax(1).tolist() == [int(v.argmax(1).max()) for v in members]
    assert all(any((row == v).all(1)) for row, v in zip(worst, members, strict=True))
    _, geo, _ = aggregate_patients(probs, groups, method="geometric_mean")
    log_sum = np.array([np.log(np.maximum(v, 1e-12)).sum(0) for v in members])
    top = log_sum.max(1, keepdims=True)
    # Its arg-max is the product's (up to exact ties in the product).
    assert all(log_sum[i, geo[i].argmax()] >= top[i, 0] - 1e-9 for i in range(len(ids)))


@settings(max_examples=40, deadline=None)
@given(data=views(), method=st.sampled_from(AGGREGATION_METHODS))
def test_one_view_per_patient_is_the_pair_level_report(data, method: str) -> None:
    probs, _, labels, perm = data
    groups = np.array([f"id{i:02d}" for i in perm])  # unique ids, in shuffled order
    pair = classification_report(probs, labels, groups=groups, n_bootstrap=40, seed=3)
    patient = patient_report(probs, labels, groups, method=method, n_bootstrap=40, seed=3)
    assert patient.pop("level") == "patient" and patient.pop("aggregation") == method
    assert patient.pop("n_views") == len(probs)
    assert patient == pair
