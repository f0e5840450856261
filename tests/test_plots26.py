"""Tests of mmfusion.plots on scikit-learn's displays (issue 26): the drawn artists carry the
numbers mmfusion.metrics reports, the PNG is replaced atomically, pyplot's state is left alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("matplotlib")

import mmfusion.plots as plots  # noqa: E402
from mmfusion.metrics import reliability_diagram, roc_curves  # noqa: E402

NAMES = ["F0", "F1", "F2", "F3", "F4"]


def _capture(monkeypatch) -> list:
    figures = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    return figures


def _probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) * rng.uniform(0.1, 4.0)
    logits[np.arange(n), labels] += rng.uniform(0.0, 3.0)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True), labels


def test_confusion_matrix_cells_show_count_and_row_percentage(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    matrix = np.array([[3, 1, 0], [0, 0, 0], [2.5, 0, 7]])
    plots.plot_confusion_matrix(matrix, ["a", "b", "c"], tmp_path / "cm.png")
    ax = figures[0].axes[0]
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert len(ax.texts) == 9
    assert texts[(0, 0)] == "3\n75.0%" and texts[(0, 1)] == "1\n25.0%"
    assert texts[(1, 1)] == "0\n0.0%"  # empty row: 0 %, not NaN
    assert texts[(2, 0)] == "2.5\n26.3%"  # non-integer counts keep 3 significant digits
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    assert figures[0].axes[1].get_ylabel() == "row percentage"  # the colour bar


def test_roc_macro_line_and_a_single_chance_line(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    probs, labels = _probs(80, 5, seed=1)
    plots.plot_roc(probs, labels, NAMES, tmp_path / "roc.png")
    ax = figures[0].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    macro = roc_curves(probs, labels, class_names=NAMES)["macro"]
    line = lines[f"macro average (AUC = {macro['auc']:.3f})"]
    np.testing.assert_array_equal(line.get_xdata(), macro["fpr"])
    np.testing.assert_array_equal(line.get_ydata(), macro["tpr"])
    assert (line.get_color(), line.get_linestyle()) == ("black", "--")
    chance = [label for label in lines if label.startswith("Chance level")]
    assert len(chance) == 1 and list(lines[chance[0]].get_xdata()) == [0, 1]


def test_roc_with_one_class_present_lists_every_class_undefined(tmp_path, monkeypatch):
    figures = _capture(monkeypatch)
    probs, _ = _probs(10, 3, seed=2)
    plots.plot_roc(probs, np.zeros(10, int), ["a", "b", "c"], tmp_path / "roc.png")
    legend = [t.get_text() for t in figures[0].axes[0].get_legend().texts]
    assert legend == [f"{c} (AUC undefined: class absent)" for c in "abc"]  # and no macro line


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 120),
    k=st.integers(2, 6),
    n_bins=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_reliability_figure_gives_back_the_reported_ece(tmp_path, monkeypatch, n, k, n_bins, seed):
    """The ECE recomputed from the drawn artists alone (the display's curve and the bottom panel's
    shares) is the one in the legend: the figure and the reported number use the same bins."""
    figures = _capture(monkeypatch)
    probs, labels = _probs(n, k, seed)
    plots.plot_reliability(probs, labels, tmp_path / "rel.png", n_bins=n_bins)
    top, bottom = figures[-1].axes
    data = reliability_diagram(probs, labels, n_bins)
    (curve,) = [line for line in top.get_lines() if line.get_label().startswith("accuracy at")]
    confidence, accuracy = curve.get_xdata(), curve.get_ydata()
    share = np.array([bar.get_height() for bar in bottom.patches])
    drawn_ece = float(np.sum(share[share > 0] * np.abs(accuracy - confidence)))
    assert drawn_ece == pytest.approx(data["ece"], abs=1e-12)
    assert f"ECE = {data['ece']:.3f}" in [t.get_text() for t in top.get_legend().texts][-1]
    assert "Perfectly calibrated" in [t.get_text() for t in top.get_legend().texts]


def test_reliability_takes_a_torch_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    probs, labels = _probs(30, 4, seed=3)
    out = plots.plot_reliability(
        torch.from_numpy(probs).float(), torch.from_numpy(labels), tmp_path / "r.png"
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_is_replaced_atomically(tmp_path, monkeypatch):
    """A failing draw leaves the previous PNG intact and no temporary file behind."""
    path = tmp_path / "cm.png"
    plots.plot_confusion_matrix(np.eye(2), ["a", "b"], path)
    before = path.read_bytes()

    def broken(self, handle, **kwargs):
        handle.write(b"half a png")
        raise RuntimeError("disk full")

    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.plot_confusion_matrix(2 * np.eye(2), ["a", "b"], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]


def test_pyplot_state_is_left_alone(tmp_path):
    import matplotlib.pyplot as plt

    probs, labels = _probs(40, 3, seed=4)
    before = plt.get_fignums()
    plots.plot_confusion_matrix(np.eye(3), list("abc"), tmp_path / "cm.png")
    plots.plot_roc(probs, labels, None, tmp_path / "roc.png")
    plots.plot_reliability(probs, labels, tmp_path / "rel.png")
    assert plt.get_fignums() == before
