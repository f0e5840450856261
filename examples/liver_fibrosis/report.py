"""What a run reports: ``metrics.json``, confusion matrix, ROC and reliability (:mod:`mmfusion.plots`),
attention overlays and Grad-CAM (:mod:`mmfusion.explain`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mmfusion import AttentionFusion
from mmfusion.data import IMAGENET_MEAN, IMAGENET_STD
from mmfusion.liver.stages import STAGE_NAMES
from mmfusion.metrics import format_interval
from mmfusion.plots import plot_confusion_matrix, plot_overlay, plot_reliability, plot_roc

#: Normalisation of the model inputs (undone for display).
MEAN_STD = (IMAGENET_MEAN, IMAGENET_STD)


def metrics_document(metrics: Mapping[str, Any], split: str,
                     available: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``metrics.json`` from :attr:`FusionModule.metrics <mmfusion.lightning.FusionModule.metrics>`:
    its report, ``n_test_pairs``, ``n_test_patients``, ``split`` (one line) and, given
    ``available`` (modality -> ``[N]`` bool), ``n_test_pairs_with`` per modality; a modality no
    pair had is not measured: its branch and calibration become ``{"not_measured": reason}``,
    listed in ``not_measured``."""
    document: dict[str, Any] = {k: v for k, v in metrics.items() if k not in ("n_pairs", "n_patients")}
    if available is not None:
        counts = {m: int(np.asarray(v, dtype=bool).sum()) for m, v in available.items()}
        document["n_test_pairs_with"] = counts
        absent = {m: f"no evaluated pair has a {m.upper()} image: the {m} branch saw only the "
                     "placeholder" for m, n in counts.items() if n == 0}
        if absent:
            for section in ("branches", "calibration"):
                document[section] = {b: {"not_measured": absent[b]} if b in absent else r
                                     for b, r in document.get(section, {}).items()}
            document["not_measured"] = absent
    return {**document, "n_test_pairs": metrics["n_pairs"], "n_test_patients": metrics["n_patients"],
            "split": split}


def modalities_label(present: Sequence[str], metrics: Mapping[str, Any]) -> str:
    """``"US + SWE"``, or ``"US (SWE absent from every pair)"`` when no pair had a SWE image."""
    absent = set(metrics.get("not_measured") or ())
    missing = [m.upper() for m in present if m in absent]
    label = " + ".join(m.upper() for m in present if m not in absent) or "none"
    return label + (f" ({', '.join(missing)} absent from every pair)" if missing else "")


def write_figures(preds: Any, metrics: Mapping[str, Any], out: Path) -> list[Path]:
    """``confusion_matrix.png``, ``roc.png`` (per stage and macro) of the ensemble, and
    ``reliability/<branch>.png`` of the ensemble and each measured branch."""
    names = list(STAGE_NAMES)
    paths = [plot_confusion_matrix(metrics["ensemble"]["confusion_matrix"], names,
                                   out / "confusion_matrix.png", title="Confusion matrix (test)"),
             plot_roc(preds.probs["ensemble"], preds.labels, names, out / "roc.png",
                      title="ROC curves, one-vs-rest (test)")]
    not_measured = metrics.get("not_measured") or {}
    return paths + [plot_reliability(probs, preds.labels, out / "reliability" / f"{branch}.png",
                                     title=f"Reliability, {branch} (test)")
                    for branch, probs in preds.probs.items() if branch not in not_measured]


def summary_line(metrics: Mapping[str, Any]) -> str:
    """One line: accuracy and macro AUC with intervals, QWK, pairs and patients."""
    e = metrics["ensemble"]
    ci = e.get("ci") or {}

    def value(key: str) -> str:
        text = "n/a" if e[key] is None else f"{e[key]:.3f}"
        return text + (" " + format_interval(ci[key], ci["level"], ci["n_bootstrap"]) if ci.get(key) else "")

    absent = metrics.get("not_measured") or {}
    note = f"; {'/'.join(m.upper() for m in absent)} absent from every pair (branch not measured)" if absent else ""
    return (f"accuracy {value('accuracy')}, macro AUC {value('auc_macro')}, QWK "
            f"{'n/a' if e['qwk'] is None else format(e['qwk'], '.3f')} on {metrics['n_test_pairs']} pairs / "
            f"{metrics['n_test_patients']} patients{note}")


def to_display(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the normalisation of one ``[3, H, W]`` image: ``[H, W, 3]`` uint8 for plotting."""
    m = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.as_tensor(std, dtype=torch.float32)[:, None, None]
    pixels = (image.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return pixels.round().to(torch.uint8).permute(1, 2, 0).numpy()


def pair_figure(images: Mapping[str, np.ndarray], maps: Mapping[str, Mapping[str, np.ndarray]],
                path: Path, title: str) -> Path:
    """One PNG, a column per modality: the input, then one row per kind of map (``maps``: kind ->
    modality -> ``[H, W]``). Custom: scikit-learn has no display for images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(images)
    fig = Figure(figsize=(3.0 * len(names), 3.0 * (1 + len(maps)) + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(maps), len(names), squeeze=False)
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


def explain_batch(model: nn.Module, inputs: Mapping[str, Tensor], grad_cam: bool = False
                  ) -> dict[str, dict[str, np.ndarray]]:
    """kind -> modality -> ``[B, H, W]`` maps in [0, 1]: attention (when the fusion has it) and
    optionally Grad-CAM."""
    from mmfusion.explain import attention_overlays
    from mmfusion.explain import grad_cam as compute_grad_cam

    out: dict[str, dict[str, np.ndarray]] = {}
    if isinstance(getattr(model, "fusion", None), AttentionFusion):
        out["attention"] = {m: v.cpu().numpy() for m, v in attention_overlays(model, inputs).items()}
    if grad_cam:
        out["Grad-CAM"] = {m: v.cpu().numpy() for m, v in compute_grad_cam(model, inputs).items()}
    return out


def write_overlays(model: nn.Module, dataset: Any, preds: Any, out: Path, device: torch.device,
                   n: int = 5) -> list[Path]:
    """Attention overlays of ``n`` test pairs (one per stage first) into ``out/attention/``; models
    without spatial attention (late fusion, one modality) get Grad-CAM instead."""
    picks: list[int] = []
    for stage in range(len(STAGE_NAMES)):
        hits = np.flatnonzero(preds.labels == stage)
        if len(hits) and len(picks) < n:
            picks.append(int(hits[0]))
    picks += [i for i in range(len(preds.labels)) if i not in picks][: max(0, n - len(picks))]
    if not picks:
        return []
    modalities = list(model.modalities)
    samples = [dataset[int(preds.indices[i])] for i in picks]
    inputs = {m: torch.stack([s[m] for s in samples]).to(device) for m in modalities}
    maps = explain_batch(model, inputs, grad_cam=not isinstance(getattr(model, "fusion", None), AttentionFusion))
    paths = []
    for b, (i, sample) in enumerate(zip(picks, samples, strict=True)):
        probs = preds.probs["ensemble"][i]
        true, pred = STAGE_NAMES[int(preds.labels[i])], STAGE_NAMES[int(probs.argmax())]
        paths.append(pair_figure({m: to_display(sample[m], *MEAN_STD) for m in modalities},
                                 {kind: {m: v[b] for m, v in per_m.items()} for kind, per_m in maps.items()},
                                 out / "attention" / f"{b:02d}_{preds.groups[i]}_{true}.png",
                                 f"{preds.groups[i]}: true {true}, predicted {pred} (p = {probs.max():.2f})"))
    return paths
