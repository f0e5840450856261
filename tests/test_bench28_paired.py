"""Issue 28: the paired patient bootstrap of a difference and the t-intervals over seeds.

Checked against independent computations: a slow loop that materialises every resample (patients
drawn with the same multinomial counts, rows repeated, metrics from scikit-learn), known answers
(identical models, a model always right against one always wrong, the normal approximation of a
difference of per-patient means) and scipy's t-intervals.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import accuracy_score, roc_auc_score

from mmfusion.metrics import paired_bootstrap, paired_t_interval, t_interval


def _data(seed: int, n_patients: int = 30, k: int = 3, views: int = 2):
    rng = np.random.default_rng(seed)
    y_patient = rng.integers(0, k, n_patients)
    y_patient[:k] = np.arange(k)  # every class present
    groups = np.repeat([f"P{i:03d}" for i in range(n_patients)], views)
    y = np.repeat(y_patient, views)
    logits_a = rng.normal(size=(len(y), k)) + 1.5 * np.eye(k)[y]
    logits_b = rng.normal(size=(len(y), k)) + 0.5 * np.eye(k)[y]
    soft = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    return soft(logits_a), soft(logits_b), y, groups


def _slow_replicates(pa, pb, y, groups, n_bootstrap, seed):
    """Every resample built explicitly: the same multinomial draw over the sorted patients as
    the vectorised code, then the patients' rows repeated and scored by scikit-learn."""
    ids, index = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)), size=n_bootstrap)
    classes = [c for c in range(pa.shape[1]) if 0 < (y == c).sum() < len(y)]
    acc, auc = [], []
    for row in counts:
        rows = np.concatenate([np.flatnonzero(index == g).repeat(c) for g, c in enumerate(row) if c])
        yy = y[rows]
        acc.append(accuracy_score(yy, pa[rows].argmax(1)) - accuracy_score(yy, pb[rows].argmax(1)))
        if all(0 < (yy == c).sum() < len(yy) for c in classes):
            auc.append(np.mean([roc_auc_score(yy == c, pa[rows, c]) for c in classes])
                       - np.mean([roc_auc_score(yy == c, pb[rows, c]) for c in classes]))
        else:
            auc.append(np.nan)
    return np.array(acc), np.array(auc)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_slow_loop_over_explicit_resamples(seed: int) -> None:
    pa, pb, y, groups = _data(seed)
    n_boot = 60
    r = paired_bootstrap(pa, pb, y, groups, n_bootstrap=n_boot, seed=seed, min_valid_resamples=2)
    acc, auc = _slow_replicates(pa, pb, y, groups, n_boot, seed)
    lo, hi = np.quantile(acc, [0.025, 0.975])
    assert r["accuracy"]["lower"] == pytest.approx(lo, abs=1e-12)
    assert r["accuracy"]["upper"] == pytest.approx(hi, abs=1e-12)
    assert r["accuracy"]["share_at_or_below_zero"] == pytest.approx((acc <= 1e-15).mean())
    valid = auc[~np.isnan(auc)]
    assert r["auc_macro"]["n_valid"] == valid.size
    lo, hi = np.quantile(valid, [0.025, 0.975])
    assert r["auc_macro"]["lower"] == pytest.approx(lo, abs=1e-12)
    assert r["auc_macro"]["upper"] == pytest.approx(hi, abs=1e-12)
    # the point estimates are the whole set's metrics, by scikit-learn
    assert r["accuracy"]["a"] == pytest.approx(accuracy_score(y, pa.argmax(1)))
    assert r["accuracy"]["difference"] == pytest.approx(
        accuracy_score(y, pa.argmax(1)) - accuracy_score(y, pb.argmax(1)))
    macro = [roc_auc_score(y == c, pb[:, c]) for c in range(3)]
    assert r["auc_macro"]["b"] == pytest.approx(np.mean(macro))
    assert r["n"] == len(y) and r["n_groups"] == 30 and r["ci"]["unit"] == "patient"


def test_known_answers() -> None:
    pa, _, y, groups = _data(3)
    same = paired_bootstrap(pa, pa, y, groups, n_bootstrap=100)
    for key in ("accuracy", "auc_macro"):
        assert same[key]["difference"] == 0.0
        assert same[key]["lower"] == same[key]["upper"] == 0.0
        assert same[key]["share_at_or_below_zero"] == 1.0
    right, wrong = np.eye(3)[y], np.eye(3)[(y + 1) % 3]
    r = paired_bootstrap(right, wrong, y, groups, n_bootstrap=100)
    assert (r["accuracy"]["difference"], r["accuracy"]["lower"], r["accuracy"]["upper"]) == (1.0, 1.0, 1.0)
    assert r["accuracy"]["share_at_or_below_zero"] == 0.0


def test_width_matches_the_normal_approximation() -> None:
    """One view per patient, A right on a random 60 %, B on an independent 40 %: the difference of
    means has sd sqrt(var(d) / n); the 95 % interval is about +/- 1.96 sd around it."""
    rng = np.random.default_rng(7)
    n = 2000
    y = rng.integers(0, 2, n)
    ok_a, ok_b = rng.random(n) < 0.6, rng.random(n) < 0.4
    pa = np.eye(2)[np.where(ok_a, y, 1 - y)]
    pb = np.eye(2)[np.where(ok_b, y, 1 - y)]
    r = paired_bootstrap(pa, pb, y, np.arange(n), n_bootstrap=4000, seed=1)["accuracy"]
    d = ok_a.astype(float) - ok_b.astype(float)
    half = 1.96 * d.std(ddof=0) / np.sqrt(n)
    assert r["difference"] == pytest.approx(d.mean())
    assert r["upper"] - r["lower"] == pytest.approx(2 * half, rel=0.08)
    assert (r["lower"] + r["upper"]) / 2 == pytest.approx(d.mean(), abs=0.004)


def test_pairing_narrows_the_interval() -> None:
    """B = A with 5 % of its answers flipped: the paired interval of the difference is far
    narrower than the difference of two unpaired intervals would suggest."""
    pa, _, y, groups = _data(4, n_patients=200)
    pb = pa.copy()
    flip = np.random.default_rng(0).random(len(y)) < 0.05
    pb[flip] = np.roll(pb[flip], 1, axis=1)
    r = paired_bootstrap(pa, pb, y, groups, n_bootstrap=500)["accuracy"]
    assert r["upper"] - r["lower"] < 0.06  # an unpaired accuracy interval alone is ~0.12 wide


def test_inputs_are_checked() -> None:
    pa, pb, y, groups = _data(5)
    with pytest.raises(ValueError, match=r"probs_b: expected the shape of probs_a"):
        paired_bootstrap(pa, pb[:-1], y, groups)
    with pytest.raises(ValueError, match=r"n_bootstrap: expected an int >= 1"):
        paired_bootstrap(pa, pb, y, groups, n_bootstrap=0)
    with pytest.raises(ValueError, match=r"ci: expected a coverage in \(0, 1\)"):
        paired_bootstrap(pa, pb, y, groups, ci=1.5)
    with pytest.raises(ValueError, match=r"groups: expected length"):
        paired_bootstrap(pa, pb, y, groups[:-1])
    with pytest.raises(ValueError, match=r"values: expected a non-empty 1-D"):
        t_interval([])
    with pytest.raises(ValueError, match=r"b: expected the shape of a"):
        paired_t_interval([1.0, 2.0], [1.0])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10), min_size=2, max_size=8),
       st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_t_interval_matches_scipy(values: list[float], level: float) -> None:
    x = np.array(values)
    r = t_interval(x, level)
    if x.std() == 0:
        assert r["lower"] == pytest.approx(r["upper"]) == pytest.approx(x.mean())
        return
    lo, hi = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert (r["lower"], r["upper"]) == (pytest.approx(lo), pytest.approx(hi))


def test_paired_t_interval_matches_scipy_ttest_rel() -> None:
    a = np.array([0.71, 0.74, 0.69, 0.73])
    b = np.array([0.70, 0.70, 0.68, 0.70])
    r = paired_t_interval(a, b)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (r["lower"], r["upper"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert r["mean"] == pytest.approx(0.0225) and r["n"] == 4
    one = t_interval([0.7])
    assert one["lower"] is None and one["sd"] is None and one["mean"] == 0.7
