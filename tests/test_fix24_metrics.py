"""Issue 24, item 20: bootstrap intervals are reported only from enough valid resamples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmfusion.metrics import classification_report, format_report
from mmfusion.metrics.bootstrap import min_valid_resamples, percentile_interval


def rare_classes_case() -> tuple[np.ndarray, np.ndarray]:
    """96 F0 samples and one sample of each of F1-F4.

    A resample (with replacement, 100 draws) contains one given single sample with probability
    1 - 0.99^100 = 0.634, all four with about 0.634^4 = 0.16: most resamples lack a class, and
    the macro AUROC is undefined in them.
    """
    labels = np.array([0] * 96 + [1, 2, 3, 4])
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(100, 5))
    logits[np.arange(100), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, labels


def test_minimum_is_twenty_or_half_the_resamples() -> None:
    assert min_valid_resamples(50) == 25
    assert min_valid_resamples(1000) == 500
    assert min_valid_resamples(1001) == 501
    assert min_valid_resamples(30) == 20
    assert min_valid_resamples(10) == 20  # never reached: 10 resamples give no interval


def test_interval_from_too_few_valid_resamples_is_not_reported() -> None:
    probs, labels = rare_classes_case()
    r = classification_report(probs, labels, n_bootstrap=50, seed=0)
    auc = r["ci"]["auc_macro"]
    # Expected share of valid resamples ~0.16 (see rare_classes_case): far below 25 of 50.
    assert 1 <= auc["n_valid"] < 20
    assert auc["lower"] is None and auc["upper"] is None
    assert auc["n_resamples"] == 50 and auc["min_valid"] == 25
    assert auc["reason"] == (
        f"only {auc['n_valid']} of 50 bootstrap resamples define the metric; "
        "an interval needs at least 25"
    )
    # accuracy is defined in every resample: interval reported, with its count.
    acc = r["ci"]["accuracy"]
    assert acc["n_valid"] == 50 and acc["reason"] is None
    assert acc["lower"] <= r["accuracy"] <= acc["upper"]
    json.dumps(r, allow_nan=False)


def test_valid_count_matches_an_independent_count_of_resamples_with_every_class() -> None:
    """n_valid is the number of resamples that draw each of the four single samples."""
    probs, labels = rare_classes_case()
    r = classification_report(probs, labels, n_bootstrap=400, seed=7)
    # Redraw the same resamples: the bootstrap's generator draws counts of the 100 samples.
    rng = np.random.default_rng(7)
    counts = rng.multinomial(100, np.full(100, 0.01), size=400)
    expected = int((counts[:, 96:] > 0).all(axis=1).sum())
    assert r["ci"]["auc_macro"]["n_valid"] == expected
    assert expected < 200 and r["ci"]["auc_macro"]["lower"] is None


def test_format_prints_the_count_or_says_why_no_interval() -> None:
    probs, labels = rare_classes_case()
    r = json.loads(json.dumps(classification_report(probs, labels, n_bootstrap=50, seed=0)))
    text = format_report(r)
    n_valid = r["ci"]["auc_macro"]["n_valid"]
    assert f"macro AUC {r['auc_macro']:.3f} [interval not reported ({n_valid}/50 valid resamples)]" in text
    lo, hi = r["ci"]["accuracy"]["lower"], r["ci"]["accuracy"]["upper"]
    assert f"accuracy {r['accuracy']:.3f} [95% CI {lo:.3f}-{hi:.3f}, 50/50 valid resamples]" in text


def test_percentile_interval_at_and_below_the_minimum() -> None:
    values = np.concatenate([np.linspace(0.0, 1.0, 25), np.full(25, np.nan)])
    at = percentile_interval(values, 0.9)  # 25 of 50 valid: exactly the minimum
    assert at["n_valid"] == 25 and at["reason"] is None
    assert at["lower"] == pytest.approx(0.05) and at["upper"] == pytest.approx(0.95)
    below = percentile_interval(values[1:], 0.9)  # 24 of 49 valid: minimum 25
    assert below["lower"] is None and below["min_valid"] == 25 and below["n_resamples"] == 49
    custom = percentile_interval(values[1:], 0.9, min_valid=2)
    assert custom["lower"] is not None and custom["min_valid"] == 2


def test_min_valid_is_checked() -> None:
    with pytest.raises(ValueError, match=r"min_valid: expected an int >= 2, got 1"):
        percentile_interval(np.zeros(5), 0.9, min_valid=1)
    probs, labels = rare_classes_case()
    with pytest.raises(ValueError, match=r"min_valid_resamples: expected an int >= 2 or None"):
        classification_report(probs, labels, n_bootstrap=5, min_valid_resamples=0)
    r = classification_report(probs, labels, n_bootstrap=50, seed=0, min_valid_resamples=2)
    assert r["ci"]["auc_macro"]["lower"] is not None and r["ci"]["auc_macro"]["min_valid"] == 2
