"""What a run reports: ``metrics.json``, the confusion matrix, ROC curves, attention overlays.

Metrics come from :func:`mmfusion.metrics.classification_report`, for the ensemble (the model's
combined prediction) and for each branch, with 95 % bootstrap intervals that resample patients.
Figures come from :mod:`mmfusion.plots`, attention maps from :mod:`mmfusion.explain`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfusion import AttentionFusion
from mmfusion.data import IMAGENET_MEAN, IMAGENET_STD
from mmfusion.liver.stages import STAGE_NAMES
from mmfusion.metrics import format_interval
from mmfusion.plots import plot_confusion_matrix, plot_overlay, plot_reliability, plot_roc

if TYPE_CHECKING:  # Lightning is only needed to train and evaluate, not to predict
    from mmfusion.lightning import Predictions

#: Normalisation of the model inputs (undone for display).
MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)


def metrics_document(
    metrics: Mapping[str, Any], split: str, available: Mapping[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """The ``metrics.json`` content from :attr:`mmfusion.lightning.FusionModule.metrics`.

    Args:
        metrics: The module's report.
        split: What was evaluated (one line).
        available: Modality -> ``[N]`` bool, whether each evaluated pair had that image
            (:attr:`mmfusion.lightning.Predictions.available`). A modality no pair had is not
            measured: its branch's metrics and calibration become ``{"not_measured": reason}``
            (so every metric of it reads as missing), and ``"not_measured"`` lists it.

    Returns:
        ``{"ensemble": report, "branches": {name: report}, "patients": report,
        "calibration", ["by_availability",] ["n_test_pairs_with", "not_measured",]
        "n_test_pairs", "n_test_patients", "split"}`` (see
        :meth:`mmfusion.lightning.FusionModule.report`); ``"n_test_pairs_with"`` counts, per
        modality, the pairs that had its image.
    """
    document: dict[str, Any] = {k: v for k, v in metrics.items() if k not in ("n_pairs", "n_patients")}
    if available is not None:
        counts = {m: int(np.asarray(v, dtype=bool).sum()) for m, v in available.items()}
        document["n_test_pairs_with"] = counts
        absent = {m: f"no evaluated pair has a {m.upper()} image: the {m} branch saw only the "
                     "placeholder" for m, n in counts.items() if n == 0}
        if absent:  # e.g. {"swe": {"not_measured": "no evaluated pair has a SWE image..."}}
            for section in ("branches", "calibration"):
                document[section] = {b: {"not_measured": absent[b]} if b in absent else r
                                     for b, r in document.get(section, {}).items()}
            document["not_measured"] = absent
    return {**document, "n_test_pairs": metrics["n_pairs"], "n_test_patients": metrics["n_patients"],
            "split": split}


def modalities_label(present: Sequence[str], metrics: Mapping[str, Any]) -> str:
    """``"US + SWE"``, naming only the given modalities that some evaluated pair had (``"US
    (SWE absent from every pair)"`` when the SWE column was empty)."""
    absent = set(metrics.get("not_measured") or ())
    had = [m.upper() for m in present if m not in absent]
    missing = [m.upper() for m in present if m in absent]
    label = " + ".join(had) or "none"
    return label + (f" ({', '.join(missing)} absent from every pair)" if missing else "")


def write_figures(preds: Predictions, metrics: Mapping[str, Any], out: Path) -> list[Path]:
    """``confusion_matrix.png`` and ``roc.png`` (one curve per stage plus macro) of the ensemble,
    and ``reliability/<branch>.png``: the reliability diagram of the ensemble and each branch."""
    names = list(STAGE_NAMES)
    paths = [
        plot_confusion_matrix(metrics["ensemble"]["confusion_matrix"], names,
                              out / "confusion_matrix.png", title="Confusion matrix (test)"),
        plot_roc(preds.probs["ensemble"], preds.labels, names, out / "roc.png",
                 title="ROC curves, one-vs-rest (test)"),
    ]
    not_measured = metrics.get("not_measured") or {}
    for branch, probs in preds.probs.items():
        if branch in not_measured:
            continue
        paths.append(plot_reliability(probs, preds.labels, out / "reliability" / f"{branch}.png",
                                      title=f"Reliability, {branch} (test)"))
    return paths


def summary_line(metrics: Mapping[str, Any]) -> str:
    """One line: accuracy and macro AUC with intervals, QWK, pairs and patients."""
    e = metrics["ensemble"]
    ci = e.get("ci") or {}

    def interval(key: str) -> str:
        bounds = ci.get(key)
        return " " + format_interval(bounds, ci["level"], ci["n_bootstrap"]) if bounds else ""

    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    absent = metrics.get("not_measured") or {}
    note = (f"; {'/'.join(m.upper() for m in absent)} absent from every pair (branch not measured)"
            if absent else "")
    return (
        f"accuracy {num(e['accuracy'])}{interval('accuracy')}, macro AUC "
        f"{num(e['auc_macro'])}{interval('auc_macro')}, QWK {num(e['qwk'])} on "
        f"{metrics['n_test_pairs']} pairs / {metrics['n_test_patients']} patients{note}"
    )


def to_display(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of one ``[3, H, W]`` image: ``[H, W, 3]`` uint8 for plotting."""
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    pixels = (image.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


def pair_figure(
    images: Mapping[str, np.ndarray],
    maps: Mapping[str, Mapping[str, np.ndarray]],
    path: Path,
    title: str,
) -> Path:
    """One PNG: a column per modality; row 1 the input, then one row per kind of heat map.

    Args:
        images: modality -> ``[H, W, 3]`` uint8 image.
        maps: kind (e.g. ``"attention"``, ``"Grad-CAM"``) -> modality -> ``[H, W]`` map.
        path: Output ``.png``.
        title: Figure title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(images)
    rows = 1 + len(maps)
    fig = Figure(figsize=(3.0 * len(names), 3.0 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, len(names), squeeze=False)
    for j, m in enumerate(names):
        axes[0][j].imshow(images[m])
        axes[0][j].set_title(m.upper(), fontsize=9)
        axes[0][j].set_axis_off()
        for i, (kind, per_modality) in enumerate(maps.items(), start=1):
            if m in per_modality:
                plot_overlay(images[m], per_modality[m], axes[i][j])
                axes[i][j].set_title(f"{m.upper()} {kind}", fontsize=9)
            axes[i][j].set_axis_off()
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path


def explain_batch(
    model: nn.Module, inputs: Mapping[str, Tensor], grad_cam: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Attention maps (when the fusion has them) and optionally Grad-CAM for a batch.

    Returns:
        kind -> modality -> ``[B, H, W]`` numpy maps in ``[0, 1]``.
    """
    from mmfusion.explain import attention_overlays
    from mmfusion.explain import grad_cam as compute_grad_cam

    out: dict[str, dict[str, np.ndarray]] = {}
    if isinstance(getattr(model, "fusion", None), AttentionFusion):
        maps = attention_overlays(model, inputs)
        out["attention"] = {m: v.cpu().numpy() for m, v in maps.items()}
    if grad_cam:
        cams = compute_grad_cam(model, inputs)
        out["Grad-CAM"] = {m: v.cpu().numpy() for m, v in cams.items()}
    return out


def pick_examples(preds: Predictions, n: int = 5) -> list[int]:
    """Positions in ``preds`` of up to ``n`` test pairs: one per stage first, then the next ones."""
    chosen: list[int] = []
    for stage in range(len(STAGE_NAMES)):
        hits = np.flatnonzero(preds.labels == stage)
        if len(hits) and len(chosen) < n:
            chosen.append(int(hits[0]))
    rest = [i for i in range(len(preds.labels)) if i not in chosen]
    return chosen + rest[: max(0, n - len(chosen))]


def write_overlays(
    model: nn.Module,
    dataset: Any,
    preds: Predictions,
    out: Path,
    device: torch.device,
    n: int = 5,
    grad_cam: bool = False,
) -> list[Path]:
    """Attention overlays (and Grad-CAM) of a few test pairs into ``out/attention/``.

    Models without spatial attention (``late`` fusion, one modality) get Grad-CAM instead.

    Args:
        model: The trained (unwrapped) model.
        dataset: The evaluation data set (``dataset[index]`` gives normalised images).
        preds: Its predictions (to choose pairs and print the predicted stage).
        out: Run folder.
        device: Where to run the model.
        n: Number of pairs.
        grad_cam: Add Grad-CAM rows.

    Returns:
        The written PNG paths.
    """
    picks = pick_examples(preds, n)
    if not picks:
        return []
    modalities = list(model.modalities)
    samples = [dataset[int(preds.indices[i])] for i in picks]
    inputs = {m: torch.stack([s[m] for s in samples]).to(device) for m in modalities}
    has_attention = isinstance(getattr(model, "fusion", None), AttentionFusion)
    maps = explain_batch(model, inputs, grad_cam=grad_cam or not has_attention)
    paths = []
    for b, (i, sample) in enumerate(zip(picks, samples, strict=True)):
        images = {m: to_display(sample[m], MEAN_STD[0], MEAN_STD[1]) for m in modalities}
        probs = preds.probs["ensemble"][i]
        true, pred = STAGE_NAMES[int(preds.labels[i])], STAGE_NAMES[int(probs.argmax())]
        title = f"{preds.groups[i]}: true {true}, predicted {pred} (p = {probs.max():.2f})"
        per_kind = {kind: {m: v[b] for m, v in per_m.items()} for kind, per_m in maps.items()}
        name = f"{b:02d}_{preds.groups[i]}_{true}.png"
        paths.append(pair_figure(images, per_kind, out / "attention" / name, title))
    return paths
