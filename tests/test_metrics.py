"""Tests of mmfusion.metrics: hand-checked cases, invariants, the patient bootstrap, bad input."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.metrics import roc_auc_score

import mmfusion.metrics
from mmfusion.liver import METAVIR
from mmfusion.metrics import classification_report, format_report, roc_curves
from mmfusion.metrics.bootstrap import bootstrap_weights, weighted_auroc

FAST = settings(max_examples=25, deadline=None)


def pair_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Independent AUROC oracle: share of (positive, negative) pairs ranked right, ties 1/2."""
    pos, neg = score[positive], score[~positive]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def smoothed_one_hot(pred: np.ndarray, k: int, top: float = 0.6) -> np.ndarray:
    """Probabilities with ``top`` on ``pred`` and the rest spread evenly (rows sum to 1)."""
    p = np.full((pred.size, k), (1 - top) / (k - 1))
    p[np.arange(pred.size), pred] = top
    return p


def random_probs(rng: np.random.Generator, n: int, k: int, signal: float = 1.5):
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += signal
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), labels


@st.composite
def probs_and_labels(draw, min_n: int = 2, max_n: int = 40):
    """Probabilities in multiples of 1/16: float sums are exact, and ties are frequent."""
    k = draw(st.integers(2, 6))
    n = draw(st.integers(min_n, max_n))
    cuts = np.sort(draw(hnp.arrays(np.int64, (n, k - 1), elements=st.integers(0, 16))), axis=1)
    edges = np.concatenate([np.zeros((n, 1)), cuts, np.full((n, 1), 16)], axis=1)
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
    return np.diff(edges, axis=1) / 16, labels


# ----------------------------------------------------------------------------- hand-checked cases


def test_three_class_hand_checked():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # true 0, pred 0
            [0.4, 0.5, 0.1],  # true 0, pred 1  (error)
            [0.1, 0.8, 0.1],  # true 1, pred 1
            [0.2, 0.6, 0.2],  # true 1, pred 1
            [0.1, 0.2, 0.7],  # true 2, pred 2
            [0.5, 0.1, 0.4],  # true 2, pred 0  (error)
        ]
    )
    r = classification_report(probs, labels, n_bootstrap=0)
    # Rows = true class: F0 -> [1 right, 1 as F1], F1 -> [2 right], F2 -> [1 as F0, 1 right].
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["accuracy"] == pytest.approx(4 / 6)
    # F0: TP1 FN1 FP1 TN3; F1: TP2 FN0 FP1 TN3; F2: TP1 FN1 FP0 TN4.
    pc = r["per_class"]
    assert [pc[c]["sensitivity"] for c in ("0", "1", "2")] == pytest.approx([0.5, 1.0, 0.5])
    assert [pc[c]["specificity"] for c in ("0", "1", "2")] == pytest.approx([0.75, 0.75, 1.0])
    assert [pc[c]["support"] for c in ("0", "1", "2")] == [2, 2, 2]
    assert r["sensitivity_macro"] == pytest.approx(2 / 3)
    assert r["specificity_macro"] == pytest.approx(2.5 / 3)
    # F0 AUC: positives 0.7, 0.4 vs negatives 0.1, 0.2, 0.1, 0.5 -> 4 + 3 of 8 pairs = 7/8.
    # F1: positives 0.8, 0.6 beat all of 0.2, 0.5, 0.2, 0.1 -> 1; F2: 0.7, 0.4 vs <= 0.2 -> 1.
    assert [pc[c]["auc"] for c in ("0", "1", "2")] == pytest.approx([0.875, 1.0, 1.0])
    assert r["auc_macro"] == pytest.approx((0.875 + 1 + 1) / 3)
    # QWK with weights (i-j)^2: observed disagreement 1*1 + 4*1 = 5; expected counts
    # r_i c_j / N with r = [2, 2, 2], c = [2, 3, 1] give 7/3 + 1 + 11/3 = 7 -> 1 - 5/7.
    assert r["qwk"] == pytest.approx(2 / 7)
    # ">=1" scored by p1 + p2 = [.3, .6, .9, .8, .9, .5], positives s2..s5: 7 of 8 pairs.
    assert r["cutoff_aucs"] == pytest.approx({">=1": 0.875, ">=2": 1.0})
    assert "auc_f2plus" not in r  # named clinical cut-offs only for five stages


def test_five_class_hand_checked():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    pred = np.array([0, 1, 1, 1, 2, 3, 3, 2, 4, 4])  # errors: 0->1, 2->3, 3->2
    probs = smoothed_one_hot(pred, 5)  # 0.6 on the prediction, 0.1 elsewhere
    r = classification_report(probs, labels, groups=[f"p{i // 2}" for i in range(10)],
                              cutoffs=METAVIR.cutoffs)
    assert r["confusion_matrix"] == [
        [1, 1, 0, 0, 0],
        [0, 2, 0, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 2],
    ]
    assert r["accuracy"] == pytest.approx(0.7)
    # sens = TP/(TP+FN): [1/2, 2/2, 1/2, 1/2, 2/2]; spec = TN/(TN+FP): [8/8, 7/8, 7/8, 7/8, 8/8].
    sens = [r["per_class"][f"{c}"]["sensitivity"] for c in range(5)]
    spec = [r["per_class"][f"{c}"]["specificity"] for c in range(5)]
    assert sens == pytest.approx([0.5, 1, 0.5, 0.5, 1])
    assert spec == pytest.approx([1, 0.875, 0.875, 0.875, 1])
    assert r["sensitivity_macro"] == pytest.approx(0.7)
    assert r["specificity_macro"] == pytest.approx(0.925)
    # Two-valued scores: AUC = (sens + spec) / 2 per class.
    aucs = [r["per_class"][f"{c}"]["auc"] for c in range(5)]
    assert aucs == pytest.approx([0.75, 0.9375, 0.6875, 0.6875, 1.0])
    assert r["auc_macro"] == pytest.approx(0.8125)
    # QWK: 3 adjacent errors -> observed 3; expected sum_j c_j S_j / 5 with c = [1, 3, 2, 2, 2],
    # S = [30, 15, 10, 15, 30] -> 185 / 5 = 37 -> 1 - 3/37.
    assert r["qwk"] == pytest.approx(34 / 37)
    # F>=2: all 6 positives predicted >= 2, no negative is -> 1. F>=3: sens 3/4 (s7 -> F2),
    # spec 5/6 (s5 -> F3) -> 19/24. F4: exact -> 1. F>=1: sens 1, spec 1/2 -> 0.75.
    assert r["auc_f2plus"] == pytest.approx(1.0)
    assert r["auc_f3plus"] == pytest.approx(19 / 24)
    assert r["auc_f4"] == pytest.approx(1.0)
    assert r["cutoff_aucs"][">=1"] == pytest.approx(0.75)
    assert r["n"] == 10 and r["n_groups"] == 5
    assert r["ci"]["unit"] == "patient" and r["ci"]["n_bootstrap"] == 1000


# ------------------------------------------------------------------------------------ invariants


@FAST
@given(st.integers(2, 6), st.data())
def test_perfect_predictions_score_one(k, data):
    labels = data.draw(
        hnp.arrays(np.int64, data.draw(st.integers(2, 50)), elements=st.integers(0, k - 1))
    )
    labels[:2] = [0, k - 1]  # at least two classes present
    r = classification_report(smoothed_one_hot(labels, k, top=0.9), labels, n_bootstrap=20)
    assert r["accuracy"] == 1.0 and r["auc_macro"] == 1.0 and r["qwk"] == pytest.approx(1.0)
    assert r["sensitivity_macro"] == 1.0 and r["specificity_macro"] == 1.0
    assert all(v in (None, 1.0) for v in r["cutoff_aucs"].values())
    assert r["ci"]["accuracy"]["lower"] == r["ci"]["accuracy"]["upper"] == 1.0


@FAST
@given(probs_and_labels(), st.randoms(use_true_random=False))
def test_permutation_invariance_and_counts(pl, rnd):
    probs, labels = pl
    n = labels.size
    perm = np.array(rnd.sample(range(n), n))
    groups = np.array([f"p{i % 4}" for i in range(n)])
    a = classification_report(probs, labels, groups=groups, n_bootstrap=50)
    b = classification_report(probs[perm], labels[perm], groups=groups[perm], n_bootstrap=50)
    # Point metrics, and (groups encoded in sorted order) the patient bootstrap too.
    assert json.dumps(a, allow_nan=False)  # no NaN leaks: undefined values are null
    assert _approx_equal(a, b)
    cm = np.array(a["confusion_matrix"])
    assert cm.sum() == n
    assert cm.sum(axis=1).tolist() == [a["per_class"][c]["support"] for c in a["class_names"]]
    assert a["accuracy"] == pytest.approx(np.trace(cm) / n)


def _approx_equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_approx_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_approx_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == pytest.approx(b, abs=1e-12)
    return a == b


@FAST
@given(probs_and_labels())
def test_aucs_match_pair_counting_oracle(pl):
    probs, labels = pl
    r = classification_report(probs, labels, n_bootstrap=0)
    k = probs.shape[1]
    for c in range(k):
        pos = labels == c
        expected = pair_auc(pos, probs[:, c]) if 0 < pos.sum() < pos.size else None
        assert r["per_class"][f"{c}"]["auc"] == pytest.approx(expected)
    for c in range(1, k):
        pos = labels >= c
        score = probs[:, c:].sum(axis=1)
        if 0 < pos.sum() < pos.size:
            assert r["cutoff_aucs"][f">={c}"] == pytest.approx(roc_auc_score(pos, score))
            assert r["cutoff_aucs"][f">={c}"] == pytest.approx(pair_auc(pos, score))
        else:
            assert r["cutoff_aucs"][f">={c}"] is None


@FAST
@given(probs_and_labels(min_n=3), st.integers(0, 2**16))
def test_weighted_auroc_equals_sklearn_on_resampled_data(pl, seed):
    probs, labels = pl
    pos = labels == labels[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, labels.size, size=(8, labels.size))
    weights = np.stack([np.bincount(row, minlength=labels.size) for row in idx]).astype(float)
    got = weighted_auroc(probs[:, 0], pos, weights)
    for row, value in zip(idx, got, strict=True):
        if pos[row].all() or not pos[row].any():
            assert np.isnan(value)
        else:
            assert value == pytest.approx(roc_auc_score(pos[row], probs[row, 0]))


def test_bootstrap_weights_resample_whole_groups():
    group_index = np.array([0, 0, 0, 1, 2, 2])
    chunks = list(bootstrap_weights(group_index, 3, 7, np.random.default_rng(0)))
    w = np.concatenate(chunks)
    assert w.shape == (7, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 1] == w[:, 2]) and np.all(w[:, 4] == w[:, 5])
    assert np.all(w[:, [0, 3, 4]].sum(axis=1) == 3)  # 3 patients drawn per resample


def test_ci_brackets_point_estimate_in_typical_cases():
    for data_seed in range(5):
        probs, labels = random_probs(np.random.default_rng(data_seed), 200, 5)
        groups = [f"p{i // 4}" for i in range(200)]
        r = classification_report(probs, labels, groups=groups, n_bootstrap=300)
        for key in ("accuracy", "auc_macro"):
            ci = r["ci"][key]
            assert ci["lower"] <= r[key] <= ci["upper"]
            assert ci["upper"] - ci["lower"] < 0.3
            assert ci["n_valid"] == 300


def test_seed_reproducible_and_changes_intervals():
    probs, labels = random_probs(np.random.default_rng(1), 100, 5)
    a = classification_report(probs, labels, n_bootstrap=200, seed=3)
    b = classification_report(probs, labels, n_bootstrap=200, seed=3)
    c = classification_report(probs, labels, n_bootstrap=200, seed=4)
    assert a["ci"] == b["ci"]
    assert a["ci"]["auc_macro"] != c["ci"]["auc_macro"]


# --------------------------------------------------------------------------- patient bootstrap


def test_patient_bootstrap_widens_interval_when_errors_cluster_in_one_patient():
    # 20 patients x 10 pairs; patient 0's pairs are all wrong, everything else is right.
    labels = np.tile(np.arange(5), 40)
    pred = labels.copy()
    pred[:10] = (labels[:10] + 1) % 5
    probs = smoothed_one_hot(pred, 5)
    groups = [f"patient{i // 10:02d}" for i in range(200)]
    by_patient = classification_report(probs, labels, groups=groups)["ci"]["accuracy"]
    by_sample = classification_report(probs, labels)["ci"]["accuracy"]
    # Accuracy 190/200 = 0.95. Sample bootstrap: binomial spread, about 0.95 +- 0.03, and a
    # resample without any of the 10 errors is practically impossible. Patient bootstrap: accuracy
    # is 1 - (draws of patient 0) / 20, and no draw of it (p = 0.95^20 = 0.36) gives 1.0.
    assert by_patient["upper"] == 1.0
    assert by_sample["upper"] < 1.0
    width = by_patient["upper"] - by_patient["lower"]
    assert width > 1.5 * (by_sample["upper"] - by_sample["lower"])


def test_group_constant_dataset_equals_sample_bootstrap_of_one_copy():
    probs, labels = random_probs(np.random.default_rng(2), 30, 3, signal=1.0)
    copies = 4  # every patient has 4 identical pairs
    groups = np.repeat([f"id{i:02d}" for i in range(30)], copies)  # sorted like the samples
    r_groups = classification_report(
        np.repeat(probs, copies, axis=0), np.repeat(labels, copies), groups=groups
    )
    r_single = classification_report(probs, labels)
    assert r_groups["ci"]["unit"] == "patient" and r_single["ci"]["unit"] == "sample"
    for key in ("accuracy", "auc_macro"):
        assert r_groups[key] == pytest.approx(r_single[key])
        assert r_groups["ci"][key]["lower"] == pytest.approx(r_single["ci"][key]["lower"])
        assert r_groups["ci"][key]["upper"] == pytest.approx(r_single["ci"][key]["upper"])
    assert r_groups["n"] == 120 and r_groups["n_groups"] == 30 and r_single["n_groups"] is None


# ---------------------------------------------------------------------------------- edge cases


def test_absent_class_is_null_and_macro_uses_defined_classes():
    probs, labels = random_probs(np.random.default_rng(3), 60, 5)
    labels[labels == 2] = 1  # no F2 in the labels
    r = classification_report(probs, labels, n_bootstrap=50)
    f2 = r["per_class"]["2"]
    assert f2["support"] == 0 and f2["auc"] is None and f2["sensitivity"] is None
    assert f2["specificity"] is not None
    defined = [r["per_class"][c]["auc"] for c in ("0", "1", "3", "4")]
    assert r["auc_macro"] == pytest.approx(np.mean(defined))
    assert r["auc_macro_classes"] == ["0", "1", "3", "4"]
    assert r["sensitivity_macro"] == pytest.approx(
        np.mean([r["per_class"][c]["sensitivity"] for c in ("0", "1", "3", "4")])
    )
    json.dumps(r, allow_nan=False)


def test_cutoff_undefined_when_all_labels_on_one_side():
    probs, labels = random_probs(np.random.default_rng(4), 40, 5)
    labels = np.clip(labels, 2, 4)  # no F0/F1: everyone has F>=2 (and F>=1)
    r = classification_report(probs, labels, n_bootstrap=0, cutoffs=METAVIR.cutoffs)
    assert r["cutoff_aucs"][">=1"] is None and r["auc_f2plus"] is None
    assert r["auc_f3plus"] is not None and r["ci"] is None


def test_bootstrap_skips_resamples_where_macro_auc_is_undefined():
    probs, labels = random_probs(np.random.default_rng(5), 100, 3)
    labels[labels == 2] = 1
    labels[0] = 2  # one single F2 sample: absent from ~(1 - 1/100)^100 = 37% of resamples
    r = classification_report(probs, labels, n_bootstrap=1000)
    assert r["ci"]["accuracy"]["n_valid"] == 1000
    assert 550 < r["ci"]["auc_macro"]["n_valid"] < 720
    assert r["ci"]["auc_macro"]["lower"] <= r["ci"]["auc_macro"]["upper"]


def test_single_class_everything_undefined_but_serialisable():
    labels = np.zeros(6, dtype=int)
    r = classification_report(smoothed_one_hot(labels, 3), labels, n_bootstrap=10)
    assert r["accuracy"] == 1.0 and r["auc_macro"] is None and r["qwk"] is None
    auc = r["ci"]["auc_macro"]
    assert (auc["lower"], auc["upper"], auc["n_valid"], auc["n_resamples"]) == (None, None, 0, 10)
    assert auc["reason"] is not None
    assert "n/a" in format_report(json.loads(json.dumps(r, allow_nan=False)))


def test_torch_input_equals_numpy_input():
    probs, labels = random_probs(np.random.default_rng(6), 50, 5)
    a = classification_report(probs, labels, n_bootstrap=100)
    b = classification_report(
        torch.tensor(probs, dtype=torch.float32),
        torch.tensor(labels),
        n_bootstrap=100,
    )
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["auc_macro"] == pytest.approx(b["auc_macro"], abs=1e-6)


def test_bootstrap_is_vectorised_and_equals_a_loop_over_explicit_resamples(monkeypatch):
    """No metric call per resample: AUROC is computed once per class per chunk of resamples
    (the point of the weight-matrix bootstrap), and the accuracy interval equals the one from
    a plain loop that materialises each resample (patients drawn with replacement)."""
    import mmfusion.metrics.report as report_mod

    probs, labels = random_probs(np.random.default_rng(7), 300, 5)
    groups = np.array([f"p{i // 5:02d}" for i in range(300)])  # sorted: group index = i // 5
    calls = {"weighted_auroc": 0, "roc_auc_score": 0}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(report_mod, "weighted_auroc", counting("weighted_auroc", weighted_auroc))
    monkeypatch.setattr(report_mod, "roc_auc_score", counting("roc_auc_score", roc_auc_score))
    r = classification_report(probs, labels, groups=groups, n_bootstrap=1000, seed=11)
    # 1000 resamples x 300 samples fit one chunk: 5 classes -> 5 vectorised calls, not 5000;
    # scikit-learn only for the point estimates (5 one-vs-rest + 4 cut-offs).
    assert calls == {"weighted_auroc": 5, "roc_auc_score": 9}

    rng = np.random.default_rng(11)
    draws = rng.multinomial(60, np.full(60, 1 / 60), size=1000)  # [B, patients]
    correct = probs.argmax(axis=1) == labels
    accs = []
    for counts in draws:
        rows = np.concatenate([np.arange(g * 5, g * 5 + 5).repeat(c) for g, c in enumerate(counts)])
        accs.append(correct[rows].mean())
    lower, upper = np.quantile(accs, [0.025, 0.975])
    assert r["ci"]["accuracy"]["lower"] == pytest.approx(lower)
    assert r["ci"]["accuracy"]["upper"] == pytest.approx(upper)


# ------------------------------------------------------------------------------- bad input


P3 = np.full((4, 3), 1 / 3)
Y3 = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"probs": P3[0]}, r"probs: expected a 2-D array \[N, K\], got shape \(3,\)"),
        ({"probs": P3 * 3.3}, r"probs: expected probabilities in \[0, 1\], got values in"),
        ({"probs": P3 * 0.9}, r"probs: expected every row to sum to 1 .* row 0 sums to 0.9"),
        ({"probs": np.where(P3 > 0, np.nan, 0)}, r"probs: expected finite values, got 12"),
        ({"probs": np.ones((4, 1))}, r"probs: expected at least 2 columns .* got shape \(4, 1\)"),
        ({"num_classes": 5}, r"probs: expected 5 columns \(num_classes=5\), got shape \(4, 3\)"),
        ({"labels": Y3[:3]}, r"labels: expected length 4 \(rows of probs\), got length 3"),
        (
            {"labels": np.array([0, 1, 3, 0])},
            r"labels: expected values in 0..2 .* got values in 0..3",
        ),
        ({"labels": np.array([0, 1, -1, 0])}, r"labels: expected values in 0..2"),
        ({"labels": np.array([0.0, 1.5, 2.0, 0.0])}, r"labels: expected integer class indices"),
        ({"labels": Y3[:, None]}, r"labels: expected a 1-D array \[N\], got shape \(4, 1\)"),
        ({"groups": ["a", "b"]}, r"groups: expected length 4 \(rows of probs\), got length 2"),
        ({"class_names": ["a", "b"]}, r"class_names: expected 3 names .* got 2"),
        ({"class_names": ["a", "a", "b"]}, r"class_names: expected unique names"),
        ({"n_bootstrap": -1}, r"n_bootstrap: expected an int >= 0, got -1"),
        ({"n_bootstrap": 1.5}, r"n_bootstrap: expected an int >= 0, got 1.5"),
        ({"ci": 95}, r"ci: expected a coverage in \(0, 1\), e.g. 0.95, got 95"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, pattern):
    args = {"probs": P3, "labels": Y3, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        classification_report(args.pop("probs"), args.pop("labels"), **args)


def test_roc_curves_validate_input():
    with pytest.raises(ValueError, match=r"labels: expected length 4"):
        roc_curves(P3, Y3[:3])


# ------------------------------------------------------------------- roc curves and formatting


def test_roc_curves_consistent_with_report():
    probs, labels = random_probs(np.random.default_rng(8), 80, 5)
    labels[labels == 3] = 4
    curves = roc_curves(probs, labels, class_names=list("abcde"))
    r = classification_report(probs, labels, class_names=list("abcde"), n_bootstrap=0)
    assert curves["per_class"]["d"] == {"fpr": None, "tpr": None, "auc": None}
    for name in "abce":
        c = curves["per_class"][name]
        assert c["auc"] == pytest.approx(r["per_class"][name]["auc"])
        assert np.trapezoid(c["tpr"], c["fpr"]) == pytest.approx(c["auc"])
        assert np.all(np.diff(c["fpr"]) >= 0) and np.all(np.diff(c["tpr"]) >= 0)
    macro = curves["macro"]
    assert macro["auc"] == pytest.approx(r["auc_macro"])
    assert macro["fpr"][0] == 0 and macro["tpr"][-1] == 1 and macro["fpr"][-1] == 1
    assert np.trapezoid(macro["tpr"], macro["fpr"]) == pytest.approx(r["auc_macro"], abs=0.03)


def test_format_report_summarises_in_a_few_lines():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    pred = np.array([0, 1, 1, 1, 2, 3, 3, 2, 4, 4])
    r = classification_report(smoothed_one_hot(pred, 5), labels, groups=list("aabbccddee"))
    text = format_report(json.loads(json.dumps(r)))
    assert 3 <= len(text.splitlines()) <= 8
    assert "accuracy 0.700 [95% CI " in text and "macro AUC 0.812" in text
    assert "from 5 patients" in text and "over patients" in text
    assert ">=2 1.000" in text and ">=3 0.792" in text
    assert "0 0.50/1.00/0.75 (2)" in text


def test_metrics_import_neither_nn_nor_data_nor_matplotlib():
    # Static: every module of the metrics package, all imports (also those inside functions).
    package = Path(mmfusion.metrics.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
    assert "mmfusion.metrics.report" in imported  # the scan sees the package's own imports
    own = {m for m in imported if m.split(".")[0] == "mmfusion"}
    assert all(m.startswith("mmfusion.metrics") for m in own), own
    assert not {m for m in imported if m.split(".")[0] == "matplotlib"}
