"""Evaluation metrics for staged (ordinal) multi-class classification, e.g. liver fibrosis F0-F4.

- :func:`classification_report`: the paper's metrics (section IV.C: accuracy, macro one-vs-rest
  AUROC, macro sensitivity eq. (4) and specificity eq. (5), confusion matrix) plus the clinical
  additions of NOTES.md (cut-off AUROCs F>=2, F>=3, F4; quadratic-weighted kappa; patient-level
  bootstrap confidence intervals), as one JSON-serialisable dict.
- :func:`format_report`: a few-line text summary of that dict.
- :func:`roc_curves`: per-class and macro-average ROC curves for plotting (Fig. 7).

Metrics come from scikit-learn; only sensitivity/specificity (from the confusion matrix) and the
vectorised bootstrap AUROC (checked against scikit-learn in the tests) are computed here. This
package depends on neither :mod:`mmfusion.nn` nor :mod:`mmfusion.data`.
"""

from mmfusion.metrics.format import format_report
from mmfusion.metrics.report import classification_report
from mmfusion.metrics.roc import roc_curves

__all__ = ["classification_report", "format_report", "roc_curves"]
