"""One run of the fusion benchmark (issue 28): train a model (or fit a baseline), score it on the
large test cohort, return its result document and its test predictions.

A trained model: the ``liver_fibrosis_quick`` preset's network and training (Adam 1e-3, cosine,
online augmentation, batch 32, ensemble loss) at the benchmark's size (:class:`BenchSettings`),
trained with Lightning (:class:`mmfusion.lightning.FusionModule`) on every pair of the training
cohort, then evaluated per view and per patient (mean of the views' probabilities) on the test
cohort; with each modality made absent (availability mask false for every test pair) for the
missing-modality accuracy. Baselines: the logistic regression on image statistics
(:mod:`mmfusion.liver.baseline`), the SWE kPa cut-offs (:data:`mmfusion.liver.HERRMANN_2018`) and
the FIB-4 / APRI cut-offs (:class:`mmfusion.liver.lab_baseline.LabCutoffBaseline`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "BASELINES",
    "SINGLE",
    "BenchSettings",
    "Method",
    "evaluate_probs",
    "methods",
    "run_baseline",
    "run_model",
]

#: Single-modal models: name -> modalities.
SINGLE: dict[str, tuple[str, ...]] = {"us_only": ("us",), "swe_only": ("swe",)}
#: Baselines (no network): deterministic ones run at one seed only.
BASELINES: dict[str, bool] = {  # name -> depends on the training cohort (so on the seed)
    "baseline_image_logistic": True,
    "baseline_swe_cutoffs": False,
    "baseline_fib4_apri": False,
}
LAB_MODALITY = "labs"


@dataclass(frozen=True)
class BenchSettings:
    """What the benchmark trains and how (chosen to fit about 3 hours on a 2-core CPU).

    Measured on the 2-core AMD EPYC (shared, load 3-5): one run of ``late`` at these defaults took
    149 s wall (55 s for 6 epochs on 1,414 pairs, the rest evaluation on 4,000 test pairs x 4
    availability patterns, bootstrap reports, and the one-off decoding of both cohorts' crops,
    about 40 s, shared by the later runs of a cohort); resnet10t, the quick preset's encoder, was
    about 5 times slower per training step, which would need about 12 hours for the table.

    Attributes:
        image_size: Model input side (px).
        backbone: timm encoder of both image modalities (random initialisation): ``test_resnet``,
            timm's smallest ResNet (0.27 M parameters for the whole two-image model here).
        out_indices: timm feature level of the encoders (``[3]``: stride 16, so a 64 px input
            gives 4 x 4 maps for the spatial fusions; the last level would give 2 x 2), or None.
        epochs: Training epochs (the loss still falls slowly at 6; the budget decides).
        batch_size: Training pairs per step.
        modality_dropout: Per-sample probability of hiding a modality in training (so that the
            missing-modality accuracy measures a model that has seen a modality missing).
        n_bootstrap: Patient-bootstrap resamples of every interval.
        train_patients: Patients per training cohort (250: the paper's cohort, II.B).
        test_patients: Patients of the test cohort.
        test_views: Views per test patient ``(min, max)``.
        frame: Phantom frame ``(width, height)`` in pixels.
        ceiling_patients: Simulated patients per ceiling.
        workers: Processes generating the phantom.
    """

    image_size: int = 64
    backbone: str = "test_resnet"
    out_indices: tuple[int, ...] | None = (3,)
    epochs: int = 6
    batch_size: int = 32
    modality_dropout: float = 0.1
    n_bootstrap: int = 1000
    train_patients: int = 250
    test_patients: int = 2000
    test_views: tuple[int, int] = (2, 2)
    frame: tuple[int, int] = (400, 300)
    ceiling_patients: int = 200_000
    workers: int = 2

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Method:
    """One row of the table: a fusion, a single-modal model or a baseline.

    Attributes:
        name: Row name (a fusion's registry name, ``us_only``, ``swe_only``, ``baseline_*``).
        kind: ``"fusion"``, ``"single"`` or ``"baseline"``.
        modalities: What the model sees.
        seeded: Whether the result depends on the seed (False: one run per rho).
        note: Why the modalities differ from the issue's, if they do.
    """

    name: str
    kind: str
    modalities: tuple[str, ...]
    seeded: bool = True
    note: str = ""


def methods(fusions: Sequence[str] | None = None) -> list[Method]:
    """The table's rows: every catalogue fusion on ``("us", "swe", "labs")`` (``("us", "swe")``
    for a fusion that takes only maps), the single-modal models and the baselines."""
    from mmfusion.nn.registry import get_fusion, list_fusions

    rows = []
    for name in (list_fusions() if fusions is None else fusions):
        kinds = getattr(get_fusion(name), "kinds", ("map", "vector"))
        if "vector" in kinds:
            rows.append(Method(name, "fusion", ("us", "swe", LAB_MODALITY)))
        else:
            rows.append(Method(name, "fusion", ("us", "swe"),
                               note="takes feature maps only: no lab vector"))
    rows += [Method(name, "single", mods) for name, mods in SINGLE.items()]
    rows += [Method(name, "baseline", (), seeded) for name, seeded in BASELINES.items()]
    return rows


# ----------------------------------------------------------------------------- scoring


def _report_summary(report: Mapping[str, Any], ece: float) -> dict[str, Any]:
    ci = report.get("ci") or {}

    def bounds(key: str) -> list[float | None] | None:
        part = ci.get(key)
        return None if part is None else [part["lower"], part["upper"]]

    n = report["n"]
    acc = report["accuracy"]
    return {
        "n": n,
        "accuracy": acc,
        "accuracy_se": float(np.sqrt(acc * (1 - acc) / n)),
        "accuracy_ci": bounds("accuracy"),
        "auc_macro": report["auc_macro"],
        "auc_macro_ci": bounds("auc_macro"),
        "qwk": report.get("qwk"),
        "ece": ece,
        "sensitivity_macro": report["sensitivity_macro"],
        "confusion_matrix": report["confusion_matrix"],
    }


def evaluate_probs(view_probs: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                   n_bootstrap: int) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Per-view and per-patient summaries of ``[N, 5]`` view probabilities, and the patients'
    :class:`~mmfusion.metrics.PatientPredictions` (sorted ids; mean of the views)."""
    from mmfusion.liver import METAVIR
    from mmfusion.metrics import (
        aggregate_patients,
        classification_report,
        expected_calibration_error,
    )

    view = classification_report(view_probs, labels, groups=groups, label_spec=METAVIR,
                                 n_bootstrap=n_bootstrap, seed=0)
    patients = aggregate_patients(view_probs, groups, labels)
    patient = classification_report(patients.probs, patients.labels, groups=patients.patient_ids,
                                    label_spec=METAVIR, n_bootstrap=n_bootstrap, seed=0)
    return (_report_summary(view, expected_calibration_error(view_probs, labels)),
            _report_summary(patient, expected_calibration_error(patients.probs, patients.labels)),
            patients)


def _accuracy(view_probs: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    from mmfusion.metrics import aggregate_patients

    patients = aggregate_patients(view_probs, groups, labels)
    return {"per_view": float((view_probs.argmax(1) == labels).mean()),
            "per_patient": float((patients.probs.argmax(1) == patients.labels).mean())}


# ----------------------------------------------------------------------------- models


def model_config(method: Method, settings: BenchSettings, lab_stats: Mapping[str, list[float]]) -> Any:
    """The :class:`~mmfusion.models.ModelConfig` of ``method``: the quick preset at the
    benchmark's size; lab values standardised by the training cohort's mean and sd."""
    from mmfusion.liver.labs import LAB_COLUMNS
    from mmfusion.models import get_preset

    image = {"name": "timm", "backbone": settings.backbone, "frozen_stages": 0}
    if settings.out_indices is not None:
        image["out_indices"] = list(settings.out_indices)
    encoders: dict[str, dict[str, Any]] = {}
    for m in method.modalities:
        if m == LAB_MODALITY:
            encoders[m] = {"name": "tabular", "columns": list(LAB_COLUMNS), **lab_stats}
        else:
            encoders[m] = dict(image)
    fused = len(method.modalities) > 1
    return get_preset("liver_fibrosis_quick").model.replace(
        modalities=method.modalities, fusion=method.name if method.kind == "fusion" else "late",
        image_size=settings.image_size, backbone=settings.backbone, frozen_stages=0,
        encoders=encoders, modality_dropout=settings.modality_dropout if fused else 0.0)


def lab_standardisation(values: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """``{"mean": [F], "std": [F]}`` of the per-patient lab values (NaN left out)."""
    from mmfusion.liver.labs import LAB_COLUMNS

    mean = [float(np.nanmean(values[c])) for c in LAB_COLUMNS]
    std = [float(max(np.nanstd(values[c]), 1e-6)) for c in LAB_COLUMNS]
    return {"mean": mean, "std": std}


def predict(model: Any, dataset: Any, absent: str | None = None, batch_size: int = 256) -> np.ndarray:
    """``[N, K]`` float64 ensemble probabilities of ``model`` on ``dataset`` (in order), with the
    modality ``absent`` absent for every sample (left out of the inputs, which the model treats
    as unavailable everywhere; its encoder does not run)."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    out = []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            given = [m for m in model.modalities if m != absent]  # left out: absent everywhere
            inputs = {m: batch[m] for m in given}
            available = {m: batch["available"][m].to(torch.bool) for m in given}
            out.append(model(inputs, available).probs.double().numpy())
    return np.concatenate(out)


def train_model(config: Any, train_set: Any, settings: BenchSettings, seed: int) -> tuple[Any, list[dict[str, float]]]:
    """Train a fresh model of ``config`` (seeded) on ``train_set``; the model and its history."""
    import logging
    import warnings

    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from mmfusion.data.seeded import SeededSampler
    from mmfusion.lightning import FusionModule
    from mmfusion.liver import METAVIR
    from mmfusion.models import build_model, get_preset

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(does not have many workers|smaller than the "
                            r"logging interval|isinstance\(treespec, LeafSpec\)|but have no "
                            r"`val_dataloader`).*")
    training = get_preset("liver_fibrosis_quick").training.replace(
        epochs=settings.epochs, batch_size=settings.batch_size)
    torch.manual_seed(seed)
    model = build_model(config)
    module = FusionModule(model, training=training, seed=seed, labels=METAVIR, n_bootstrap=0)
    sampler = SeededSampler(train_set, seed=seed, shuffle=True, num_replicas=1, rank=0)
    loader = DataLoader(train_set, batch_size=settings.batch_size, sampler=sampler,
                        drop_last=len(sampler) > settings.batch_size)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=settings.epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         use_distributed_sampler=False, limit_val_batches=0, deterministic=False)
    trainer.fit(module, train_dataloaders=loader)
    return module.model, list(module.history)


def _ceiling_part(ceilings: Mapping[str, Any] | None, method: Method) -> dict[str, Any] | None:
    """The method's ceilings: its joint and late observers, and each observer without one of
    its modalities (per view and per patient)."""
    if ceilings is None:
        return None
    mods = method.modalities
    key = "with_labs" if LAB_MODALITY in mods else "without_labs"
    out: dict[str, Any] = {"source": ceilings["source"], "set": key}
    for unit in ("per_view", "per_patient"):
        table = ceilings[key][unit]
        if len(mods) == 1:
            own = {"joint": table[mods[0]], "late": table[mods[0]]}
        else:
            own = {"joint": table["joint"], "late": table["late"]}
        own.update({f"no_{m}": table[f"no_{m}"] for m in mods if len(mods) > 1})
        out[unit] = own
    return out


def _gaps(result: dict[str, Any]) -> None:
    """Add ``gaps`` (ceiling - accuracy, joint and late) and ``regret`` (ceiling without a
    modality - accuracy without it) where the ceilings are known."""
    ceil = result.get("ceilings")
    if not ceil:
        return
    result["gaps"] = {unit: {name: ceil[unit][name] - result[unit]["accuracy"]
                             for name in ("joint", "late")} for unit in ("per_view", "per_patient")}
    if "missing" in result:
        result["regret"] = {m: {unit: ceil[unit][f"no_{m}"] - acc[unit] for unit in acc}
                            for m, acc in result["missing"].items()}


def run_model(method: Method, *, settings: BenchSettings, seed: int, train: Any, test: Any,
              ceilings: Mapping[str, Any] | None,
              datasets: Callable[[Any, tuple[str, ...], bool], Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train and evaluate ``method`` (a fusion or a single-modal model).

    Args:
        method: The row.
        settings: The benchmark's settings.
        seed: Training seed (the training cohort is generated with it too).
        train: The training :class:`~benchmarks.fusion_bench_data.Cohort`.
        test: The test cohort.
        ceilings: ``{"source", "with_labs"|"without_labs": {"per_view"|"per_patient": {...}}}``
            or None (no ceilings known: the fields are left out).
        datasets: ``(cohort, modalities, train) -> data set`` (cached crops).

    Returns:
        ``(result, predictions)``: the JSON-ready result and ``{"view_probs", "patient_probs"}``.
    """
    started = time.perf_counter()
    config = model_config(method, settings, lab_standardisation(train.lab_values()))
    model, history = train_model(config, datasets(train, method.modalities, True), settings, seed)
    trained = time.perf_counter() - started
    test_set = datasets(test, method.modalities, False)
    labels, groups = np.asarray(test.manifest.labels), np.asarray(test.manifest.groups)
    probs = predict(model, test_set)
    per_view, per_patient, patients = evaluate_probs(probs, labels, groups, settings.n_bootstrap)
    result: dict[str, Any] = {
        "per_view": per_view, "per_patient": per_patient,
        "params": int(sum(p.numel() for p in model.parameters())),
        "history": [{k: e[k] for k in ("epoch", "loss", "seconds") if k in e} for e in history],
        "model_config": config.to_dict(),
    }
    if len(method.modalities) > 1:
        result["missing"] = {m: _accuracy(predict(model, test_set, absent=m), labels, groups)
                             for m in method.modalities}
    result["ceilings"] = _ceiling_part(ceilings, method)
    if result["ceilings"] is None:
        del result["ceilings"]
    _gaps(result)
    result["seconds"] = {"train": trained, "total": time.perf_counter() - started}
    return result, _arrays(probs, patients)


def _arrays(view_probs: np.ndarray, patients: Any) -> dict[str, np.ndarray]:
    """What a run keeps of its test predictions (for the paired comparisons of the summary)."""
    return {"view_probs": view_probs.astype(np.float32),
            "patient_probs": patients.probs.astype(np.float32),
            "patient_labels": patients.labels.astype(np.int8),
            "patient_ids": np.asarray(patients.patient_ids).astype(str)}


# ----------------------------------------------------------------------------- baselines


def run_baseline(method: Method, *, settings: BenchSettings, train: Any, test: Any,
                 features: Callable[[Any], np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Fit (where there is anything to fit) and evaluate a baseline on the test cohort."""
    from mmfusion import liver

    started = time.perf_counter()
    labels, groups = np.asarray(test.manifest.labels), np.asarray(test.manifest.groups)
    k = liver.NUM_STAGES
    extra: dict[str, Any] = {}
    if method.name == "baseline_image_logistic":
        x_train, x_test = features(train), features(test)
        keep = np.isfinite(x_train).all(axis=1)
        model = liver.LogisticBaseline().fit(x_train[keep], np.asarray(train.manifest.labels)[keep])
        ok = np.isfinite(x_test).all(axis=1)
        prior = np.bincount(np.asarray(train.manifest.labels), minlength=k) / len(train.manifest.rows)
        probs = np.tile(prior, (len(labels), 1))  # a pair without features: the training prior
        probs[ok] = model.predict_proba(x_test[ok])
        extra = {"features": list(liver.FEATURE_NAMES), "test_pairs_without_features": int((~ok).sum()),
                 "train_pairs_without_features": int((~keep).sum())}
    elif method.name == "baseline_swe_cutoffs":
        median = features(test)[:, liver.FEATURE_NAMES.index("swe_median_kpa")]
        stages = liver.stage_from_kpa(np.nan_to_num(median, nan=0.0))
        probs = np.eye(k)[stages]  # a rule: one stage, probability 1
        h = liver.HERRMANN_2018
        extra = {"source": h.source, "kpa": {"f2": h.f2, "f3": h.f3, "f4": h.f4}}
    elif method.name == "baseline_fib4_apri":
        from mmfusion.liver.lab_baseline import LabCutoffBaseline

        baseline = LabCutoffBaseline()
        values = test.lab_values()  # per patient, sorted ids
        ids = np.unique(groups)
        patient_probs = baseline.predict_proba(values)
        probs = patient_probs[np.searchsorted(ids, groups)]  # each view: its patient's reading
        extra = {"prior": baseline.prior.tolist()}
    else:
        raise ValueError(f"method: expected one of {sorted(BASELINES)}, got {method.name!r}")
    per_view, per_patient, patients = evaluate_probs(probs.astype(np.float64), labels, groups,
                                                     settings.n_bootstrap)
    result = {"per_view": per_view, "per_patient": per_patient, "baseline": extra,
              "seconds": {"total": time.perf_counter() - started}}
    return result, _arrays(probs, patients)

