"""Evaluation metrics for multi-class classification of any label set, ordered or not.

- :func:`classification_report`: the paper's metrics (section IV.C: accuracy, macro one-vs-rest
  AUROC, macro sensitivity eq. (4) and specificity eq. (5), confusion matrix) plus the additions
  of docs/paper_map.rst (patient-level bootstrap confidence intervals; for ordered classes the
  quadratic-weighted kappa and the cut-off AUROCs "class >= c", named by the
  :class:`~mmfusion.labels.LabelSpec`, e.g. the liver's F>=2, F>=3 and F4), as one
  JSON-serialisable dict.
- :func:`format_report`: a few-line text summary of that dict; :func:`format_interval` one
  interval with the number of bootstrap resamples it rests on.
- :func:`roc_curves`: per-class and macro-average ROC curves for plotting (Fig. 7).
- :func:`aggregate_patients`, :func:`patient_report`: one answer per patient from its views
  (mean, geometric mean or, for ordered classes, the most advanced class), and the report at the
  patient level.
- :func:`paired_bootstrap`: is model A better than model B on the same patients? The paired
  patient bootstrap of the difference in accuracy and macro AUROC; :func:`t_interval` /
  :func:`paired_t_interval`: Student's t-interval of a mean (of differences) over a few seeds.
- :func:`expected_calibration_error`, :func:`reliability_diagram`: is a probability of 0.8 right
  80% of the time? :func:`fit_temperature` / :func:`apply_temperature`: temperature scaling.

Metrics come from scikit-learn; only sensitivity/specificity (from the confusion matrix) and the
vectorised bootstrap AUROC (checked against scikit-learn in the tests) are computed here. This
package depends on neither :mod:`mmfusion.nn` nor :mod:`mmfusion.data` nor any domain package.
"""

from mmfusion.metrics.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_diagram,
)
from mmfusion.metrics.format import format_interval, format_report
from mmfusion.metrics.paired import paired_bootstrap, paired_t_interval, t_interval
from mmfusion.metrics.patients import (
    AGGREGATION_METHODS,
    PatientPredictions,
    aggregate_patients,
    patient_report,
)
from mmfusion.metrics.report import classification_report
from mmfusion.metrics.roc import roc_curves

__all__ = [
    "AGGREGATION_METHODS",
    "PatientPredictions",
    "aggregate_patients",
    "apply_temperature",
    "classification_report",
    "expected_calibration_error",
    "fit_temperature",
    "format_interval",
    "format_report",
    "paired_bootstrap",
    "paired_t_interval",
    "patient_report",
    "reliability_diagram",
    "roc_curves",
    "t_interval",
]
