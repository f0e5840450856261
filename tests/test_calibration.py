"""Calibration metrics: ECE by hand, reliability bins, temperature scaling, the reliability plot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfusion.metrics import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)

PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
LABELS = np.array([0, 0, 0, 1])  # correct, wrong, correct, correct


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def overconfident_example(n: int = 4000, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z) (calibrated), logits reported as ``scale * z``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, size=(n, 5))
    p = softmax(z)
    labels = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return scale * z, labels


def test_ece_by_hand() -> None:
    # Confidences 0.9, 0.8, 0.6, 0.55. Ten bins: (0.8, 0.9] holds 0.9 (right), (0.7, 0.8] holds
    # 0.8 (wrong), (0.5, 0.6] holds 0.6 and 0.55 (both right, mean confidence 0.575):
    # ECE = 1/4 * 0.1 + 1/4 * 0.8 + 2/4 * 0.425 = 0.4375.
    assert expected_calibration_error(PROBS, LABELS, n_bins=10) == pytest.approx(0.4375)
    # Two bins: all four in (0.5, 1]: accuracy 0.75, mean confidence 0.7125.
    assert expected_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx(0.0375)
    # One bin is |accuracy - mean confidence| over everything.
    assert expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(0.0375)
    assert expected_calibration_error(torch.tensor(PROBS), torch.tensor(LABELS), 10) == (
        pytest.approx(0.4375)
    )


def test_reliability_bins_by_hand() -> None:
    data = reliability_diagram(PROBS, LABELS, n_bins=10)
    assert data["n"] == 4
    np.testing.assert_allclose(data["bin_edges"], np.linspace(0, 1, 11))
    assert data["count"].tolist() == [0, 0, 0, 0, 0, 2, 0, 1, 1, 0]
    filled = data["count"] > 0
    np.testing.assert_allclose(data["confidence"][filled], [0.575, 0.8, 0.9])
    np.testing.assert_allclose(data["accuracy"][filled], [1.0, 0.0, 1.0])
    assert np.isnan(data["confidence"][~filled]).all() and np.isnan(data["accuracy"][~filled]).all()
    # A confidence on a bin edge belongs to the lower bin: (0.5, 0.6] holds 0.6.
    edge = reliability_diagram(np.array([[0.6, 0.4], [0.3, 0.7]]), [0, 1], n_bins=5)
    assert edge["count"].tolist() == [0, 0, 1, 1, 0]


def test_perfect_confidence_has_zero_ece() -> None:
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert expected_calibration_error(probs, [0, 1, 0]) == 0.0
    assert expected_calibration_error(probs, [1, 0, 1]) == 1.0


def test_temperature_fits_the_overconfidence_and_lowers_ece() -> None:
    logits, labels = overconfident_example(scale=3.0)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)  # the true over-confidence factor
    # Independent check: a grid search of the NLL computed with numpy.
    grid = np.linspace(1.0, 6.0, 501)
    nll = [-np.mean(np.log(softmax(logits / g)[np.arange(len(labels)), labels])) for g in grid]
    assert abs(t - grid[int(np.argmin(nll))]) <= 0.01 + 1e-9
    before = expected_calibration_error(apply_temperature(logits, 1.0), labels)
    after = expected_calibration_error(apply_temperature(logits, t), labels)
    # Measured: 0.217 before, 0.016 after.
    assert before > 0.15 and after < 0.04
    # Predictions do not change.
    np.testing.assert_array_equal(
        apply_temperature(logits, t).argmax(axis=1), softmax(logits).argmax(axis=1)
    )


def test_underconfident_model_gets_t_below_one() -> None:
    logits, labels = overconfident_example(scale=0.5, seed=1)
    assert fit_temperature(torch.tensor(logits), torch.tensor(labels)) == pytest.approx(
        0.5, rel=0.1
    )


def test_apply_temperature_types() -> None:
    z = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    out = apply_temperature(z, 2.0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    np.testing.assert_allclose(out, softmax(z / 2.0))
    tz = torch.tensor(z, dtype=torch.float32)
    tout = apply_temperature(tz, 2.0)
    assert isinstance(tout, torch.Tensor) and tout.dtype == torch.float32
    np.testing.assert_allclose(tout.numpy(), softmax(z / 2.0), rtol=1e-6)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"n_bins: expected a positive int, got 0"):
        expected_calibration_error(PROBS, LABELS, n_bins=0)
    with pytest.raises(ValueError, match=r"probs: expected every row to sum to 1"):
        expected_calibration_error(PROBS * 0.5, LABELS)
    with pytest.raises(ValueError, match=r"logits: expected a 2-D array \[N, K\] with K >= 2"):
        fit_temperature(np.zeros(5), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match=r"logits: expected finite values, got 1 NaN/inf"):
        fit_temperature(np.array([[0.0, np.inf]]), [0])
    with pytest.raises(ValueError, match=r"labels: expected values in 0..1"):
        fit_temperature(np.zeros((2, 2)), [0, 2])
    with pytest.raises(ValueError, match=r"temperature: expected a finite number > 0, got 0"):
        apply_temperature(np.zeros((2, 2)), 0)


def test_plot_reliability_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    import mmfusion.plots as plots

    figures = []
    save = plots._save

    def keep(fig, path):
        figures.append(fig)
        return save(fig, path)

    logits, labels = overconfident_example(n=500)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "_save", keep)
        out = plots.plot_reliability(softmax(logits), labels, tmp_path / "sub" / "rel.png", 10)
    assert out == tmp_path / "sub" / "rel.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(out).shape[0] > 100
    # The drawn bars are the reliability data: heights = per-bin accuracy of the filled bins.
    data = reliability_diagram(softmax(logits), labels, 10)
    top, bottom = figures[0].axes
    heights = [bar.get_height() for bar in top.patches]
    np.testing.assert_allclose(heights, data["accuracy"][data["count"] > 0])
    np.testing.assert_allclose([b.get_height() for b in bottom.patches], data["count"] / 500)
    assert f"ECE = {data['ece']:.3f}" in " ".join(t.get_text() for t in top.get_legend().texts)
    with pytest.raises(ValueError, match=r"path: expected a file name ending in .png"):
        plots.plot_reliability(softmax(logits), labels, tmp_path / "rel.jpg")
