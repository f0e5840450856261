"""Short human-readable summary of a :func:`~mmfusion.metrics.classification_report` dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_report"]


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(report: Mapping[str, Any], key: str) -> str:
    ci = report.get("ci")
    if not ci or ci[key]["lower"] is None:
        return ""
    return f" [{ci['level']:.0%} CI {ci[key]['lower']:.3f}-{ci[key]['upper']:.3f}]"


def format_report(report: Mapping[str, Any]) -> str:
    """Render a classification report in a few lines.

    Args:
        report: The dict returned by :func:`mmfusion.metrics.classification_report` (also after
            a JSON round trip).

    Returns:
        A multi-line string (no trailing newline): sample counts, accuracy and macro AUROC with
        their intervals, macro sensitivity/specificity and kappa, the cut-off AUROCs, and
        per-class sensitivity/specificity/AUROC/support. Undefined values print as ``n/a``.
    """
    groups = "" if report.get("n_groups") is None else f" from {report['n_groups']} patients"
    unit = ""
    if report.get("ci"):
        ci = report["ci"]
        unit = f"; bootstrap over {ci['unit']}s, B={ci['n_bootstrap']}"
    names = report["class_names"]
    lines = [
        f"n={report['n']} pairs{groups}, {report['num_classes']} classes{unit}",
        f"accuracy {_num(report['accuracy'])}{_interval(report, 'accuracy')}, "
        f"macro AUC {_num(report['auc_macro'])}{_interval(report, 'auc_macro')}",
        f"macro sensitivity {_num(report['sensitivity_macro'])}, "
        f"macro specificity {_num(report['specificity_macro'])}, QWK {_num(report['qwk'])}",
        "cut-off AUC: "
        + ", ".join(
            f">={names[int(cut[2:])]} {_num(auc)}" for cut, auc in report["cutoff_aucs"].items()
        ),
        "per class sens/spec/AUC (n): "
        + ", ".join(
            f"{name} {_num(v['sensitivity'], 2)}/{_num(v['specificity'], 2)}/"
            f"{_num(v['auc'], 2)} ({v['support']})"
            for name, v in report["per_class"].items()
        ),
    ]
    return "\n".join(lines)
