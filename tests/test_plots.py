"""Tests of mmfusion.plots: PNG files are written and readable, overlays draw, bad input raises."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from mmfusion.plots import plot_confusion_matrix, plot_overlay, plot_roc  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["F0", "F1", "F2", "F3", "F4"]


def read_png(path) -> np.ndarray:
    """Assert ``path`` is a PNG file and return its pixels ``[H, W, C]`` in ``[0, 1]``."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    pixels = imread(path, format="png")
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    return pixels


def _capture_figures(monkeypatch) -> list:
    import mmfusion.plots as plots_mod

    figures = []
    save = plots_mod._save
    monkeypatch.setattr(plots_mod, "_save", lambda fig, path: figures.append(fig) or save(fig, path))
    return figures


def example_probs(n: int = 60, k: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += 2.0
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), labels


def test_confusion_matrix_png(tmp_path, monkeypatch):
    figures = _capture_figures(monkeypatch)
    matrix = [[10, 2, 0, 0, 0], [1, 8, 3, 0, 0], [0, 2, 9, 1, 0], [0, 0, 4, 5, 2], [0, 0, 0, 0, 0]]
    out = plot_confusion_matrix(matrix, NAMES, tmp_path / "sub" / "cm.png")
    assert out == tmp_path / "sub" / "cm.png"
    read_png(out)
    read_png(plot_confusion_matrix(matrix, NAMES, tmp_path / "counts.png", normalize=False))
    # The colours: row percentages on [0, 1] (an empty row stays 0), or counts on [0, max].
    (pct_image,), (count_image,) = (fig.axes[0].images for fig in figures)
    expected_pct = np.array(matrix[:4] + [[0] * 5], float) / np.array([12, 12, 12, 11, 1])[:, None]
    np.testing.assert_allclose(pct_image.get_array(), expected_pct)
    assert pct_image.norm.vmax == 1.0
    np.testing.assert_array_equal(count_image.get_array(), np.array(matrix, float))
    assert count_image.norm.vmax == 10.0


def test_roc_png_with_absent_class(tmp_path, monkeypatch):
    """Each class has a curve and its AUROC (checked against scikit-learn) in the legend; an
    absent class is listed as undefined and draws nothing; the macro average is over the rest."""
    from sklearn.metrics import roc_auc_score

    figures = _capture_figures(monkeypatch)
    probs, labels = example_probs()
    read_png(plot_roc(probs, labels, NAMES, tmp_path / "roc.png"))
    labels[labels == 3] = 2  # F3 absent: drawn without a curve, listed as undefined
    read_png(plot_roc(probs, labels, None, tmp_path / "roc_absent.png"))
    full, absent = (fig.axes[0] for fig in figures)

    def legend(ax) -> dict:
        return {line.get_label(): line for line in ax.get_legend().get_lines()}

    for ax, names, y in ((full, NAMES, example_probs()[1]), (absent, list("01234"), labels)):
        drawn = {line.get_label(): line for line in ax.get_lines()}
        aucs = []
        for c, name in enumerate(names):
            if not (y == c).any():
                label = f"{name} (AUC undefined: class absent)"
                assert label in legend(ax) and len(drawn[label].get_xdata()) == 0
                continue
            auc = roc_auc_score(y == c, probs[:, c])
            aucs.append(auc)
            label = f"{name} (AUC = {auc:.3f})"
            assert label in legend(ax), (label, list(legend(ax)))
            xs, ys = drawn[label].get_xdata(), drawn[label].get_ydata()
            assert (xs[0], ys[0], xs[-1], ys[-1]) == (0, 0, 1, 1)  # a whole ROC staircase
            area = np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2)  # trapezoids under the drawn curve
            assert area == pytest.approx(auc)
        assert f"macro average (AUC = {np.mean(aucs):.3f})" in legend(ax)
    assert "3 (AUC undefined: class absent)" in legend(absent)
    assert not any(k.startswith("F3 (AUC undefined") for k in legend(full))


def test_overlay_png_and_pixels(tmp_path):
    image = np.zeros((32, 48, 3), dtype=np.uint8)
    image[..., 0] = 255  # pure red
    heat = np.arange(49, dtype=float).reshape(7, 7)  # coarse map stretched over the image
    read_png(plot_overlay(image, heat, tmp_path / "overlay.png"))
    # alpha 0: only the image shows; alpha 1 with a constant map: only jet(0) (dark blue) shows.
    centre = read_png(plot_overlay(image, heat, tmp_path / "a0.png", alpha=0.0))
    h, w = centre.shape[:2]
    assert np.allclose(centre[h // 2, w // 2, :3], [1, 0, 0], atol=0.02)
    flat = read_png(plot_overlay(image, np.ones((7, 7)), tmp_path / "a1.png", alpha=1.0))
    assert np.allclose(flat[h // 2, w // 2, :3], [0, 0, 0.5], atol=0.02)


def test_overlay_into_axes_returns_axes():
    fig = Figure()
    ax = fig.add_subplot()
    grey = np.full((16, 16), 128, dtype=np.uint8)
    assert plot_overlay(grey, np.random.default_rng(0).random((16, 16)), ax) is ax
    assert isinstance(ax, Axes) and len(ax.get_images()) == 2


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda p: plot_confusion_matrix(np.ones((2, 3)), ["a", "b"], p), r"matrix: .*square"),
        (lambda p: plot_confusion_matrix(-np.ones((2, 2)), ["a", "b"], p), r"matrix: .*negative"),
        (lambda p: plot_confusion_matrix(np.ones((2, 2)), ["a"], p), r"class_names: expected 2"),
        (lambda p: plot_roc(np.ones((4, 5)), np.zeros(4, int), NAMES, p), r"probs: .*sum to 1"),
        (lambda p: plot_roc(*example_probs(), NAMES[:3], p), r"class_names: expected 5 names"),
        (
            lambda p: plot_overlay(np.zeros((8, 8, 3)), np.zeros((8, 8)), p),
            r"image: expected dtype uint8",
        ),
        (
            lambda p: plot_overlay(np.zeros((3, 8, 8), np.uint8), np.zeros((8, 8)), p),
            r"image: expected shape \[H, W, 3\]",
        ),
        (
            lambda p: plot_overlay(np.zeros((8, 8), np.uint8), np.zeros((1, 8, 8)), p),
            r"heatmap: expected a 2-D array",
        ),
        (
            lambda p: plot_overlay(np.zeros((8, 8), np.uint8), np.full((8, 8), np.nan), p),
            r"heatmap: expected finite",
        ),
        (
            lambda p: plot_overlay(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), p, alpha=2),
            r"alpha: expected a value in \[0, 1\]",
        ),
    ],
)
def test_bad_input_raises_and_writes_nothing(tmp_path, call, pattern):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=pattern):
        call(path)
    assert not path.exists()


def test_non_png_path_raises(tmp_path):
    with pytest.raises(ValueError, match=r"path: expected a file name ending in .png"):
        plot_confusion_matrix(np.eye(2), ["a", "b"], tmp_path / "cm.jpg")


def test_import_does_not_need_matplotlib():
    # Bypass mmfusion/__init__.py (layers) so that only mmfusion.plots itself is imported.
    code = (
        "import importlib.util, sys, types\n"
        "pkg = types.ModuleType('mmfusion')\n"
        "pkg.__path__ = list(importlib.util.find_spec('mmfusion').submodule_search_locations)\n"
        "sys.modules['mmfusion'] = pkg\n"
        "import mmfusion.plots\n"
        "assert mmfusion.plots.plot_roc\n"
        "assert not [m for m in sys.modules if m.startswith('matplotlib')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
