"""Evaluation figures: confusion matrix (paper Fig. 6), ROC curves (Fig. 7), heat-map overlays and
reliability diagrams (calibration).

matplotlib is an optional dependency (``mmfusion[example]``), imported inside the functions, so
``import mmfusion`` works without it. Figures are drawn on matplotlib's Agg canvas directly
(``matplotlib.figure.Figure``, no ``pyplot``): no window ever opens and the caller's pyplot backend
and state are left alone. Each function writes a PNG and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_confusion_matrix", "plot_overlay", "plot_reliability", "plot_roc"]

_DPI = 150


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _png_path(path: str | Path, argument: str = "path") -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{argument}: expected a file name ending in .png, got {str(path)!r}")
    return out


def _new_figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def plot_confusion_matrix(
    matrix: Any,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix as in the paper's Fig. 6.

    Each cell shows its count and its row percentage (share of the true class); the colour is the
    row percentage (``normalize=True``) or the count.

    Args:
        matrix: ``[K, K]`` non-negative counts, rows = true class, columns = predicted class (the
            ``confusion_matrix`` of :func:`mmfusion.metrics.classification_report`).
        class_names: ``K`` names, e.g. ``["F0", ..., "F4"]``.
        path: Output ``.png`` file; parent folders are created.
        normalize: Colour by row percentage (True) or by count (False).
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``matrix`` not square, negative or non-finite; ``class_names`` of the wrong
            length; ``path`` not ending in ``.png``.
    """
    cm = _as_array(matrix).astype(np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"matrix: expected a square 2-D array [K, K], got shape {cm.shape}")
    if not np.all(np.isfinite(cm)) or cm.min() < 0:
        raise ValueError("matrix: expected finite non-negative counts, got negative or NaN/inf")
    k = cm.shape[0]
    if len(class_names) != k:
        raise ValueError(
            f"class_names: expected {k} names (matrix is {k}x{k}), got {len(class_names)}"
        )
    out = _png_path(path)
    rows = cm.sum(axis=1, keepdims=True)
    pct = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    colour = pct if normalize else cm
    vmax = 1.0 if normalize else max(float(cm.max()), 1.0)

    fig = _new_figure((1.1 * k + 2.0, 1.0 * k + 1.4))
    ax = fig.add_subplot()
    image = ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=vmax)
    cbar = fig.colorbar(image, ax=ax)
    cbar.set_label("row percentage" if normalize else "count")
    if normalize:
        cbar.ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    for i in range(k):
        for j in range(k):
            count = f"{cm[i, j]:.0f}" if float(cm[i, j]).is_integer() else f"{cm[i, j]:.3g}"
            ax.text(
                j,
                i,
                f"{count}\n{pct[i, j]:.1%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if colour[i, j] > 0.6 * vmax else "black",
            )
    ax.set_xticks(range(k), [str(c) for c in class_names])
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, out)


def plot_roc(
    probs: Any,
    labels: Any,
    class_names: Sequence[str] | None,
    path: str | Path,
    title: str = "ROC curves (one-vs-rest)",
) -> Path:
    """Draw one ROC curve per class and the macro average, as in the paper's Fig. 7.

    The legend gives each class's AUROC and the macro AUROC (mean of the per-class AUROCs, paper
    section IV.C). A class absent from ``labels`` has no curve and is listed as undefined.

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        class_names: ``K`` names; ``None`` for ``["0", ..., "K-1"]``.
        path: Output ``.png`` file; parent folders are created.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Malformed ``probs``/``labels``/``class_names`` (see
            :func:`mmfusion.metrics.roc_curves`) or ``path`` not ending in ``.png``.
    """
    from mmfusion.metrics import roc_curves

    out = _png_path(path)
    curves = roc_curves(probs, labels, class_names=class_names)
    fig = _new_figure((5.5, 5.0))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for name, curve in curves["per_class"].items():
        if curve["auc"] is None:
            ax.plot([], [], " ", label=f"{name} (AUC undefined: class absent)")
        else:
            ax.plot(
                curve["fpr"],
                curve["tpr"],
                linewidth=1.5,
                label=f"{name} (AUC = {curve['auc']:.3f})",
            )
    macro = curves["macro"]
    if macro["auc"] is not None:
        ax.plot(
            macro["fpr"],
            macro["tpr"],
            color="black",
            linestyle="--",
            linewidth=2,
            label=f"macro average (AUC = {macro['auc']:.3f})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, out)


def plot_overlay(
    image: Any,
    heatmap: Any,
    path_or_ax: str | Path | Axes,
    alpha: float = 0.4,
    cmap: str = "jet",
) -> Path | Axes:
    """Draw a heat map (e.g. an attention map) over an image.

    The heat map is min-max scaled to ``[0, 1]`` (a constant map becomes 0) and stretched over the
    whole image with bilinear interpolation, so a coarse map (e.g. ``7 x 7``) needs no resizing.

    Args:
        image: ``[H, W, 3]`` RGB (or ``[H, W]`` grey) ``uint8`` image.
        heatmap: ``[h, w]`` finite scores, any range; any ``h, w`` (usually ``H, W``).
        path_or_ax: Output ``.png`` file, or a matplotlib ``Axes`` to draw into.
        alpha: Opacity of the heat map in ``[0, 1]``.
        cmap: matplotlib colour map of the heat map.

    Returns:
        The written file's :class:`~pathlib.Path`, or the ``Axes`` when one was given.

    Raises:
        ValueError: Wrong shape or dtype of ``image``, non-2-D or non-finite ``heatmap``,
            ``alpha`` outside ``[0, 1]``, or a path not ending in ``.png``.
    """
    from matplotlib.axes import Axes

    img = _as_array(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8 (0-255), got {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise ValueError(f"image: expected shape [H, W, 3] (RGB) or [H, W], got {img.shape}")
    heat = _as_array(heatmap).astype(np.float64)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"heatmap: expected a 2-D array [H, W], got shape {heat.shape}")
    if not np.all(np.isfinite(heat)):
        raise ValueError("heatmap: expected finite values, got NaN/inf")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha!r}")
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)

    h, w = img.shape[:2]
    fig: Figure | None = None
    if isinstance(path_or_ax, Axes):
        ax = path_or_ax
    else:
        out = _png_path(path_or_ax, "path_or_ax")
        fig = _new_figure((4.0 * w / max(h, w), 4.0 * h / max(h, w)))
        ax = fig.add_subplot()
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
    ax.imshow(
        heat,
        cmap=cmap,
        alpha=alpha,
        vmin=0.0,
        vmax=1.0,
        extent=(-0.5, w - 0.5, h - 0.5, -0.5),
        interpolation="bilinear",
    )
    ax.set_axis_off()
    if fig is None:
        return ax
    return _save(fig, out)


def plot_reliability(
    probs: Any,
    labels: Any,
    path: str | Path,
    n_bins: int = 15,
    title: str = "Reliability diagram",
) -> Path:
    """Draw a reliability diagram: accuracy against confidence per bin, and the bins' counts.

    Top panel: one bar per confidence bin at the bin's accuracy, a marker at its mean confidence
    (a perfectly calibrated model has both on the diagonal); the legend gives the expected
    calibration error. Bottom panel: the share of samples in each bin. The numbers are those of
    :func:`mmfusion.metrics.reliability_diagram` (top-label confidence, equal-width bins).

    Args:
        probs: ``[N, K]`` class probabilities (rows sum to 1), numpy array or torch tensor.
        labels: ``[N]`` integer true classes in ``0..K-1``.
        path: Output ``.png`` file; parent folders are created.
        n_bins: Number of equal-width confidence bins.
        title: Figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Malformed ``probs``/``labels``/``n_bins`` (see
            :func:`mmfusion.metrics.reliability_diagram`) or ``path`` not ending in ``.png``.
    """
    from mmfusion.metrics import reliability_diagram

    out = _png_path(path)
    data = reliability_diagram(probs, labels, n_bins)
    edges, count = data["bin_edges"], data["count"]
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    filled = count > 0

    fig = _new_figure((5.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    top.bar(
        centres[filled],
        data["accuracy"][filled],
        width=width,
        edgecolor="black",
        linewidth=0.5,
        color="tab:blue",
        label=f"accuracy (ECE = {data['ece']:.3f})",
    )
    top.plot(
        data["confidence"][filled],
        data["accuracy"][filled],
        "o",
        color="tab:red",
        markersize=4,
        label="mean confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.01)
    top.set_ylabel("accuracy")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, count / data["n"], width=width, edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("share of samples")
    return _save(fig, out)
