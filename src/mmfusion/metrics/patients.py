"""Per-patient answers: combine the view-level probabilities of each patient, then report.

A patient has one true class (for the liver: one biopsy, one METAVIR stage), but is scanned in
several views, each an image pair with its own prediction. The paper reports per image pair (section IV); a clinician
wants one answer per patient. :func:`aggregate_patients` combines a patient's ``V`` view
probabilities ``p_1 .. p_V`` (each ``[K]``) into one ``[K]`` row; :func:`patient_report` is
:func:`~mmfusion.metrics.classification_report` on those rows (one row per patient, so the
bootstrap resamples patients).

Methods, and when a clinician would ask for each:

- ``"mean"`` (default): ``p = (p_1 + ... + p_V) / V``. The average opinion over the views: robust
  to one poor view (probe pressure, rib shadow, a failed SWE box), and well calibrated when the
  views are roughly equally informative. The usual choice.
- ``"geometric_mean"``: ``p ∝ (p_1 * ... * p_V) ** (1 / V)``, renormalised to sum to 1 (the
  exponential of the mean log-probabilities; each probability is floored at ``1e-12`` first, so
  that one view's exact 0 does not zero a class outright; a patient with a single view keeps its
  probabilities unchanged).
  Its arg-max is the product's, i.e. the naive-Bayes combination of views taken as independent
  evidence; the ``1 / V`` power keeps a patient with many views from looking more certain than one
  with few, so probabilities stay comparable across patients (for the AUROC). A consensus rule: a
  class that any view finds implausible is pulled down hard. For repeated views of good quality.
- ``"max_stage"``: for ordered classes, the most advanced class predicted in any view (the name
  says "stage", as in the liver's fibrosis stages). The patient's probabilities are those of one
  view: the view whose arg-max class is highest; ties are broken by that class's probability
  (higher wins), then by the probabilities of the higher classes, from the highest down (a view
  with more mass on advanced classes wins); views equal in all of this have equal probabilities.
  The patient's arg-max is then the highest class seen, and its AUROC ranks patients by that
  view's probabilities. A worst-view rule, like the pathologist's (METAVIR stages the most
  advanced fibrosis in the sample): for screening, where missing an advanced class costs more than
  a false alarm; expect more false positives. Meaningless for nominal classes.

Every method is invariant to the order of the rows: views are combined in a canonical order, so
shuffling them gives the same result to the last bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np

from mmfusion.metrics._inputs import _to_numpy, as_labels, as_probs
from mmfusion.metrics.report import LabelSpecLike, classification_report

__all__ = ["AGGREGATION_METHODS", "PatientPredictions", "aggregate_patients", "patient_report"]

AggregationMethod = Literal["mean", "geometric_mean", "max_stage"]

#: The methods of :func:`aggregate_patients`.
AGGREGATION_METHODS: tuple[str, ...] = ("mean", "geometric_mean", "max_stage")

#: Floor of the probabilities before the log of ``"geometric_mean"`` (an exact 0 is no veto).
_LOG_FLOOR = 1e-12


class PatientPredictions(NamedTuple):
    """What :func:`aggregate_patients` returns (unpacks as ``ids, probs, labels``).

    Attributes:
        patient_ids: ``[P]`` patient ids, sorted (as :func:`numpy.unique` sorts them).
        probs: ``[P, K]`` float64 combined probabilities, rows summing to 1 (within the
            tolerance the input rows have).
        labels: ``[P]`` int64 class of each patient, or ``None`` when no labels were given.
    """

    patient_ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray | None


def _patient_ids(groups: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique ids and the ``[N]`` index of each row's patient."""
    g = _to_numpy(groups)
    if g.ndim != 1:
        raise ValueError(f"groups: expected a 1-D sequence of patient ids [N], got shape {g.shape}")
    if g.shape[0] != n:
        raise ValueError(f"groups: expected length {n} (rows of probs), got length {g.shape[0]}")
    if g.dtype == object:
        g = g.astype(str)
    ids, inverse = np.unique(g, return_inverse=True)
    return ids, inverse.reshape(-1).astype(np.int64)


def _max_stage_rank(p: np.ndarray) -> list[np.ndarray]:
    """:func:`numpy.lexsort` keys (least significant first) ranking views by "most advanced"."""
    stage = p.argmax(axis=1)
    confidence = p[np.arange(len(p)), stage]
    return [*(p[:, c] for c in range(p.shape[1])), confidence, stage]


def aggregate_patients(
    probs: Any,
    groups: Any,
    labels: Any = None,
    method: AggregationMethod = "mean",
) -> PatientPredictions:
    """Combine each patient's view-level probabilities into one row per patient.

    See the module documentation for the methods and when to use each.

    Args:
        probs: ``[N, K]`` class probabilities of the views (rows sum to 1), numpy or torch.
        groups: ``[N]`` patient id of each view (strings or integers).
        labels: Optional ``[N]`` integer class of each view; all views of a patient must agree.
        method: ``"mean"``, ``"geometric_mean"`` or ``"max_stage"``.

    Returns:
        :class:`PatientPredictions` ``(patient_ids [P], probs [P, K], labels [P] or None)``, the
        patients sorted by id.

    Raises:
        ValueError: Malformed ``probs``/``groups``/``labels`` (the message names the argument), an
            unknown ``method``, or a patient whose views carry different labels (the message names
            the patient and its labels).

    Example:
        >>> p = [[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]]
        >>> ids, q, y = aggregate_patients(p, ["B", "B", "A"], labels=[1, 1, 0])
        >>> ids.tolist(), q.round(3).tolist(), y.tolist()
        (['A', 'B'], [[0.9, 0.1], [0.4, 0.6]], [0, 1])
        >>> aggregate_patients(p, ["B", "B", "A"], method="max_stage").probs[1].tolist()
        [0.2, 0.8]
    """
    if method not in AGGREGATION_METHODS:
        raise ValueError(f"method: expected one of {list(AGGREGATION_METHODS)}, got {method!r}")
    p = as_probs(probs)
    n, k = p.shape
    ids, patient = _patient_ids(groups, n)
    y = None if labels is None else as_labels(labels, n, k)

    # Canonical order: by patient, then by the probability rows themselves (and, for max_stage,
    # by rank), so that the result does not depend on the order of the views.
    keys = _max_stage_rank(p) if method == "max_stage" else [p[:, c] for c in range(k)]
    order = np.lexsort([*keys, patient])
    p, patient = p[order], patient[order]
    starts = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]])
    counts = np.diff(np.r_[starts, n])[:, None]

    if method == "mean":
        combined = np.add.reduceat(p, starts, axis=0) / counts
    elif method == "geometric_mean":
        mean_log = np.add.reduceat(np.log(np.maximum(p, _LOG_FLOOR)), starts, axis=0) / counts
        geometric = np.exp(mean_log)  # >= 1e-12: no underflow
        combined = geometric / geometric.sum(axis=1, keepdims=True)
        single = counts[:, 0] == 1  # the geometric mean of one view is that view, floor or not
        combined[single] = p[starts[single]]
    else:  # max_stage: the last view of each patient ranks highest
        combined = p[np.r_[starts[1:], n] - 1]

    patient_labels = None
    if y is not None:
        y = y[order]
        low, high = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
        conflict = np.flatnonzero(low != high)
        if conflict.size:
            first = conflict[0]
            seen = np.unique(y[patient == first]).tolist()
            raise ValueError(
                f"labels: patient {ids[first].item()!r} has views with different labels {seen}; "
                f"expected one stage per patient ({conflict.size} patient(s) disagree)"
            )
        patient_labels = low
    return PatientPredictions(ids, combined, patient_labels)


def patient_report(
    probs: Any,
    labels: Any,
    groups: Any,
    *,
    method: AggregationMethod = "mean",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    label_spec: LabelSpecLike | None = None,
    cutoffs: Mapping[str, int] | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int | None = 0,
) -> dict[str, Any]:
    """The classification report at the patient level: one combined prediction per patient.

    :func:`aggregate_patients` combines each patient's views with ``method``, then
    :func:`~mmfusion.metrics.classification_report` scores the ``P`` patient rows (accuracy,
    macro AUROC, sensitivity/specificity, for ordered classes QWK and cut-off AUROCs, and bootstrap
    intervals that resample patients).

    Args:
        probs: ``[N, K]`` view-level probabilities (rows sum to 1).
        labels: ``[N]`` class of each view; all views of a patient must agree.
        groups: ``[N]`` patient id of each view.
        method: ``"mean"``, ``"geometric_mean"`` or ``"max_stage"`` (see the module docs).
        num_classes: ``K``; ``None`` takes it from ``probs``.
        class_names: ``K`` unique names; default ``["0", ..., "K-1"]``. Not with ``label_spec``.
        label_spec: The classes' :class:`~mmfusion.labels.LabelSpec` (names, order, named
            cut-offs), as for :func:`~mmfusion.metrics.classification_report`.
        cutoffs: Named cut-offs ``{key: c}``, as for
            :func:`~mmfusion.metrics.classification_report`.
        n_bootstrap: Bootstrap resamples of patients; ``0`` skips the intervals.
        ci: Coverage of the percentile intervals, in ``(0, 1)``.
        seed: Seed of the resampling.

    Returns:
        The :func:`~mmfusion.metrics.classification_report` dict of the patients (``n`` and
        ``n_groups`` are the number of patients ``P``; ``ci["unit"]`` is ``"patient"``), plus
        ``"level": "patient"``, ``"aggregation": method`` and ``"n_views": N``.

    Raises:
        ValueError: As :func:`aggregate_patients` and
            :func:`~mmfusion.metrics.classification_report`.

    Example:
        >>> probs = [[0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.9, 0.1]]
        >>> r = patient_report(probs, [0, 0, 1, 0], ["a", "a", "b", "c"], n_bootstrap=0)
        >>> r["n"], r["n_views"], r["accuracy"], r["auc_macro"]
        (3, 4, 1.0, 1.0)
    """
    if labels is None:
        raise ValueError("labels: expected [N] stages of the views, got None")
    ids, patient_probs, patient_labels = aggregate_patients(probs, groups, labels, method)
    report = classification_report(
        patient_probs,
        patient_labels,
        groups=ids,
        num_classes=num_classes,
        class_names=class_names,
        label_spec=label_spec,
        cutoffs=cutoffs,
        n_bootstrap=n_bootstrap,
        ci=ci,
        seed=seed,
    )
    report.update(level="patient", aggregation=method, n_views=int(_to_numpy(probs).shape[0]))
    return report
