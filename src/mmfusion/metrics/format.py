"""Short human-readable summary of a :func:`~mmfusion.metrics.classification_report` dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_interval", "format_report"]


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def format_interval(bounds: Mapping[str, Any], level: float, n_resamples: int) -> str:
    """One bootstrap interval with the count of resamples it comes from.

    Args:
        bounds: One interval of a report's ``ci`` (``{"lower", "upper", "n_valid", ...}``).
        level: Its coverage, e.g. ``0.95``.
        n_resamples: Resamples drawn; ``bounds["n_resamples"]`` wins when present (reports
            written before that key existed lack it).

    Returns:
        ``"[95% CI 0.612-0.634, 1000/1000 valid resamples]"``, or
        ``"[interval not reported (5/50 valid resamples)]"`` when the bounds are ``None``.
    """
    total = bounds.get("n_resamples", n_resamples)
    count = f"{bounds['n_valid']}/{total} valid resamples"
    if bounds.get("lower") is None:
        return f"[interval not reported ({count})]"
    return f"[{level:.0%} CI {bounds['lower']:.3f}-{bounds['upper']:.3f}, {count}]"


def _interval(report: Mapping[str, Any], key: str) -> str:
    ci = report.get("ci")
    if not ci:
        return ""
    return " " + format_interval(ci[key], ci["level"], ci["n_bootstrap"])


def format_report(report: Mapping[str, Any]) -> str:
    """Render a classification report in a few lines.

    Args:
        report: The dict returned by :func:`mmfusion.metrics.classification_report` (also after
            a JSON round trip).

    Returns:
        A multi-line string (no trailing newline): sample counts, accuracy and macro AUROC with
        their intervals and the number of valid resamples each comes from (or "interval not
        reported" when too few resamples define the metric), macro sensitivity/specificity, and
        for ordered classes the kappa and the cut-off AUROCs ("class >= c", named by class), and
        per-class sensitivity/specificity/AUROC/support. Undefined values print as ``n/a``; a
        report of nominal classes (no ``qwk``, no ``cutoff_aucs``) has neither line.
    """
    groups = "" if report.get("n_groups") is None else f" from {report['n_groups']} patients"
    unit = ""
    if report.get("ci"):
        ci = report["ci"]
        unit = f"; bootstrap over {ci['unit']}s, B={ci['n_bootstrap']}"
    names = report["class_names"]
    qwk = f", QWK {_num(report['qwk'])}" if "qwk" in report else ""
    lines = [
        f"n={report['n']} pairs{groups}, {report['num_classes']} classes{unit}",
        f"accuracy {_num(report['accuracy'])}{_interval(report, 'accuracy')}, "
        f"macro AUC {_num(report['auc_macro'])}{_interval(report, 'auc_macro')}",
        f"macro sensitivity {_num(report['sensitivity_macro'])}, "
        f"macro specificity {_num(report['specificity_macro'])}{qwk}",
    ]
    if report.get("cutoff_aucs"):
        lines.append(
            "cut-off AUC: "
            + ", ".join(
                f">={names[int(cut[2:])]} {_num(auc)}" for cut, auc in report["cutoff_aucs"].items()
            )
        )
    lines.append(
        "per class sens/spec/AUC (n): "
        + ", ".join(
            f"{name} {_num(v['sensitivity'], 2)}/{_num(v['specificity'], 2)}/"
            f"{_num(v['auc'], 2)} ({v['support']})"
            for name, v in report["per_class"].items()
        )
    )
    return "\n".join(lines)
