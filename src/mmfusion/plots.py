"""Evaluation figures: confusion matrix (paper Fig. 6), ROC curves (Fig. 7), heat-map overlays and
reliability diagrams (calibration).

The confusion matrix, ROC curves and reliability curve are scikit-learn's display classes
(:class:`~sklearn.metrics.ConfusionMatrixDisplay`, :class:`~sklearn.metrics.RocCurveDisplay`,
:class:`~sklearn.calibration.CalibrationDisplay`) fed with the numbers of :mod:`mmfusion.metrics`,
so a figure shows exactly what the report states; only the labels and styling are ours. Custom
matplotlib where no display fits: the heat-map overlays (:func:`plot_overlay`, :func:`plot_maps`,
:func:`plot_examples`: scikit-learn has no display for images)
and the reliability diagram's bars and sample-share panel (``CalibrationDisplay`` draws a curve).

matplotlib is an optional dependency (``mmfusion[example]``), imported inside the functions, so
``import mmfusion`` works without it. Each figure is a ``matplotlib.figure.Figure`` on the Agg
canvas handed to the displays as ``ax`` (they import ``pyplot`` but create no figure): no window
ever opens and the caller's pyplot figures are left alone. Each function writes a PNG atomically
(:func:`mmfusion.files.atomic_write`) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfusion.files import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_confusion_matrix",
    "plot_examples",
    "plot_maps",
    "plot_overlay",
    "plot_reliability",
    "plot_roc",
    "to_display",
]

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
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=_DPI))
    return path


def plot_confusion_matrix(
    matrix: Any,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix as in the paper's Fig. 6 (scikit-learn's ``ConfusionMatrixDisplay``).

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
    from sklearn.metrics import ConfusionMatrixDisplay

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
    vmax = 1.0 if normalize else max(float(cm.max()), 1.0)

    fig = _new_figure((1.1 * k + 2.0, 1.0 * k + 1.4))
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(pct if normalize else cm, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", im_kw={"vmin": 0.0, "vmax": vmax}, text_kw={"fontsize": 8})
    for (i, j), text in np.ndenumerate(display.text_):  # our cell text: count and row percentage
        count = f"{cm[i, j]:.0f}" if float(cm[i, j]).is_integer() else f"{cm[i, j]:.3g}"
        text.set_text(f"{count}\n{pct[i, j]:.1%}")
    cbar = display.im_.colorbar
    cbar.set_label("row percentage" if normalize else "count")
    if normalize:
        cbar.ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, out)


def plot_roc(
    probs: Any,
    labels: Any,
    class_names: Sequence[str] | None,
    path: str | Path,
    title: str = "ROC curves (one-vs-rest)",
) -> Path:
    """Draw one ROC curve per class and the macro average, as in the paper's Fig. 7.

    Each curve is a scikit-learn ``RocCurveDisplay`` of :func:`mmfusion.metrics.roc_curves`' numbers
    (one-vs-rest). The legend gives each class's AUROC and the macro AUROC (mean of the per-class
    AUROCs, paper section IV.C). A class absent from ``labels`` has no curve and is listed as
    undefined.

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
    from sklearn.metrics import RocCurveDisplay

    from mmfusion.metrics import roc_curves

    out = _png_path(path)
    curves = roc_curves(probs, labels, class_names=class_names)
    fig = _new_figure((5.5, 5.0))
    ax = fig.add_subplot()
    macro = {"macro average": curves["macro"]}
    for name, curve in {**curves["per_class"], **macro}.items():
        if curve["auc"] is None:  # no curve; a class is listed, the macro one left out
            if name not in macro:
                ax.plot([], [], " ", label=f"{name} (AUC undefined: class absent)")
            continue
        display = RocCurveDisplay(fpr=curve["fpr"], tpr=curve["tpr"], roc_auc=curve["auc"])
        display.plot(
            ax=ax,
            name=name,
            plot_chance_level=name in macro,
            chance_level_kw={"color": "grey", "linestyle": ":", "linewidth": 1},
        )
        # Our label (AUC to 3 decimals, sklearn's has 2) and style, set on the display's line.
        display.line_.set(label=f"{name} (AUC = {curve['auc']:.3f})", linewidth=1.5)
        if name in macro:
            display.line_.set(color="black", linestyle="--", linewidth=2)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
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

    Custom matplotlib: scikit-learn has no display for images or heat maps.

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

    Top panel: one bar per confidence bin at the bin's accuracy and scikit-learn's
    ``CalibrationDisplay`` curve through (mean confidence, accuracy) of the filled bins, with its
    diagonal (a perfectly calibrated model lies on it); the legend gives the expected calibration
    error. Bottom panel: the share of samples in each bin. The numbers are those of
    :func:`mmfusion.metrics.reliability_diagram` (top-label confidence, equal-width bins), handed
    to the display rather than recomputed by ``calibration_curve``, so the figure matches the ECE
    to the bin. The bars and the bottom panel stay custom: the display draws only the curve.

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
    from sklearn.calibration import CalibrationDisplay

    from mmfusion.metrics import reliability_diagram

    out = _png_path(path)
    data = reliability_diagram(probs, labels, n_bins)
    edges, count = data["bin_edges"], data["count"]
    centres, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
    filled = count > 0

    fig = _new_figure((5.0, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    accuracy, confidence = data["accuracy"][filled], data["confidence"][filled]
    top.bar(
        centres[filled],
        accuracy,
        width=width,
        edgecolor="black",
        linewidth=0.5,
        color="tab:blue",
        label=f"accuracy (ECE = {data['ece']:.3f})",
    )
    display = CalibrationDisplay(accuracy, confidence, _as_array(probs).max(axis=1))
    display.plot(ax=top, name="accuracy at mean confidence", color="tab:red", markersize=4)
    top.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="", ylabel="accuracy", title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, count / data["n"], width=width, edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("share of samples")
    return _save(fig, out)


def to_display(image: Any, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of one ``[3, H, W]`` model input: ``[H, W, 3]`` uint8 for plotting."""
    pixels = _as_array(image).astype(np.float32) * np.asarray(std, np.float32)[:, None, None]
    pixels = np.clip(pixels + np.asarray(mean, np.float32)[:, None, None], 0, 1) * 255
    return np.round(pixels).astype(np.uint8).transpose(1, 2, 0)


def plot_maps(images: Mapping[str, Any], maps: Mapping[str, Mapping[str, Any]], path: str | Path,
              title: str = "") -> Path:
    """One PNG, a column per modality: its image, then one row per kind of map over it.

    Args:
        images: Modality -> ``[H, W, 3]`` image (:func:`to_display`).
        maps: Kind (e.g. ``"attention"``) -> modality -> ``[h, w]`` heat map
            (:func:`mmfusion.explain.explain_maps` of one sample); a modality may be left out.
        path: The PNG to write.
        title: The figure's title.
    """
    path, names = _png_path(path), list(images)
    fig = _new_figure((3.0 * len(names), 3.0 * (1 + len(maps)) + 0.4))
    axes = fig.subplots(1 + len(maps), len(names), squeeze=False)
    for j, m in enumerate(names):
        axes[0][j].imshow(_as_array(images[m]))
        axes[0][j].set_title(m.upper(), fontsize=9)
        axes[0][j].set_axis_off()
        for i, (kind, per_modality) in enumerate(maps.items(), start=1):
            if m in per_modality:
                plot_overlay(images[m], per_modality[m], axes[i][j])
                axes[i][j].set_title(f"{m.upper()} {kind}", fontsize=9)
            axes[i][j].set_axis_off()
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_examples(model: Any, dataset: Any, predictions: Any, folder: str | Path, class_names: Sequence[str],
                  mean: Sequence[float], std: Sequence[float], n: int = 5, device: Any = "cpu") -> list[Path]:
    """:func:`plot_maps` of ``n`` evaluated samples (one per true class first) into ``folder``:
    attention maps where the model's fusion has them, Grad-CAM otherwise.

    Args:
        model: The :class:`~mmfusion.nn.MultiModalClassifier` that was evaluated.
        dataset: The evaluated dataset (``dataset[i]`` -> modality -> ``[3, H, W]``).
        predictions: Its :class:`~mmfusion.lightning.Predictions` (``indices`` into ``dataset``).
        folder: Where ``<k>_<group>_<true class>.png`` go.
        class_names: One name per class.
        mean, std: The inputs' normalisation (:func:`to_display`).
        n: How many samples.
        device: Where the model is.
    """
    import torch

    from mmfusion.explain import explain_maps
    from mmfusion.nn import AttentionFusion

    picks: list[int] = []
    for label in range(len(class_names)):
        hits = np.flatnonzero(predictions.labels == label)
        if len(hits) and len(picks) < n:
            picks.append(int(hits[0]))
    picks += [i for i in range(len(predictions.labels)) if i not in picks][: max(0, n - len(picks))]
    if not picks:
        return []
    modalities = list(model.modalities)
    samples = [dataset[int(predictions.indices[i])] for i in picks]
    inputs = {m: torch.stack([s[m] for s in samples]).to(device) for m in modalities}
    maps = explain_maps(model, inputs, with_grad_cam=not isinstance(getattr(model, "fusion", None), AttentionFusion))
    paths = []
    for b, (i, sample) in enumerate(zip(picks, samples, strict=True)):
        probs, group = predictions.probs["ensemble"][i], predictions.groups[i]
        true, pred = class_names[int(predictions.labels[i])], class_names[int(probs.argmax())]
        paths.append(plot_maps({m: to_display(sample[m], mean, std) for m in modalities},
                               {kind: {m: v[b] for m, v in per_m.items()} for kind, per_m in maps.items()},
                               Path(folder) / f"{b:02d}_{group}_{true}.png",
                               f"{group}: true {true}, predicted {pred} (p = {probs.max():.2f})"))
    return paths
