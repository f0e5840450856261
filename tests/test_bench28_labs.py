"""Issue 28 item 2: lab values as a third modality, their exact likelihood and the FIB-4/APRI baseline.

Formulas against hand computations, the likelihood against scipy.stats densities and against a
Monte-Carlo Bayes classifier (its accuracy must equal its own expected accuracy only if the
likelihood is the sampler's true density), the sampler against the documented table, the phantom's
lab columns (default manifest byte-identical, images unchanged by ``labs=True``) and the path
manifest -> data module -> tabular encoder -> model.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import roc_auc_score

import mmfusion.liver.labs as labs_module
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset
from mmfusion.liver.cutoffs import (
    APRI_CIRRHOSIS_CUTOFFS,
    APRI_CUTOFFS,
    FIB4_CUTOFFS,
    ScoreCutoffs,
    score_band,
)
from mmfusion.liver.lab_baseline import (
    PAPER_PRIOR,
    LabCutoffBaseline,
    cutoff_readouts,
    evaluate_lab_baseline,
    lab_scores,
    score_aurocs,
)
from mmfusion.liver.labs import (
    LAB_COLUMNS,
    LAB_MODEL,
    LabModel,
    apri,
    cohort_labs,
    fib4,
    labs_log_likelihood,
    sample_labs,
)

SMALL = PhantomConfig(width=160, height=120)
PRIOR = np.asarray(PAPER_PRIOR) / np.sum(PAPER_PRIOR)
N_PATIENTS = 20  # at least 2 patients per stage, so that the data module can split
#: SHA-256 of manifest.csv of make_phantom_dataset(n_patients=20, seed=0, config=SMALL,
#: image_format="png"), computed with the code before issue 28 (git HEAD at the time).
DEFAULT_MANIFEST_SHA256 = "2ed78b6e34f07a7ccfd80f25529f42f622d153bac98750e7b0900b7b2bc225c5"


def _draw(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    stages = rng.choice(5, size=n, p=PRIOR)
    return stages, sample_labs(stages, rng)


# --- formulas and cut-offs --------------------------------------------------------------------


def test_fib4_and_apri_by_hand() -> None:
    # FIB-4 = age x AST / (PLT x sqrt(ALT)); numbers chosen so that sqrt(ALT) is exact
    assert fib4(50, 40, 36, 200) == pytest.approx(50 * 40 / (200 * 6))  # 1.6667
    assert fib4(64, 100, 49, 80) == pytest.approx(64 * 100 / (80 * 7))  # 11.43
    assert fib4(30, 20, 25, 300) == pytest.approx(0.4)  # 600 / 1500
    # APRI = (AST / ULN) / PLT x 100, ULN 40 U/L by default
    assert apri(80, 200) == pytest.approx(1.0)
    assert apri(40, 100) == pytest.approx(1.0)
    assert apri(60, 150, ast_uln=30) == pytest.approx(60 / 30 / 150 * 100)  # 1.3333
    arr = fib4(np.array([50.0, np.nan]), 40, 36, 200)
    assert arr[0] == pytest.approx(1.6667, abs=1e-4) and np.isnan(arr[1])
    with pytest.raises(ValueError, match="ast_uln"):
        apri(40, 100, ast_uln=0)


@given(
    age=st.floats(18, 90), ast=st.floats(5, 500), alt=st.floats(5, 500), plt=st.floats(20, 600)
)
@settings(max_examples=50, deadline=None)
def test_scores_scale_as_their_formulas_say(age: float, ast: float, alt: float, plt: float) -> None:
    base = fib4(age, ast, alt, plt)
    assert fib4(2 * age, ast, alt, plt) == pytest.approx(2 * base)
    assert fib4(age, ast, 4 * alt, plt) == pytest.approx(base / 2)  # sqrt(ALT)
    assert fib4(age, ast, alt, 2 * plt) == pytest.approx(base / 2)
    assert apri(2 * ast, plt) == pytest.approx(2 * apri(ast, plt))
    assert apri(ast, plt, ast_uln=80.0) == pytest.approx(apri(ast, plt) / 2)


def test_the_published_cut_offs() -> None:
    assert (FIB4_CUTOFFS.low, FIB4_CUTOFFS.high, FIB4_CUTOFFS.question) == (1.30, 2.67, "f3plus")
    assert (APRI_CUTOFFS.low, APRI_CUTOFFS.high, APRI_CUTOFFS.question) == (0.5, 1.5, "f2plus")
    assert (APRI_CIRRHOSIS_CUTOFFS.low, APRI_CIRRHOSIS_CUTOFFS.high) == (1.0, 2.0)
    assert APRI_CIRRHOSIS_CUTOFFS.min_stage == 4 and FIB4_CUTOFFS.min_stage == 3
    assert "Shah" in FIB4_CUTOFFS.source and "Wai" in APRI_CUTOFFS.source
    bands = score_band(np.array([1.29, 1.30, 2.0, 2.67, 2.68, np.nan]), FIB4_CUTOFFS)
    assert bands.tolist() == [0, 1, 1, 1, 2, -1]
    assert score_band(0.49, APRI_CUTOFFS).tolist() == 0 and score_band(1.51, APRI_CUTOFFS) == 2
    with pytest.raises(ValueError, match="low, high"):
        ScoreCutoffs(2.0, 1.0, "f2plus")
    with pytest.raises(ValueError, match="question"):
        ScoreCutoffs(1.0, 2.0, "f5")
    with pytest.raises(ValueError, match="score"):
        score_band(np.array([-1.0]), FIB4_CUTOFFS)


# --- the distributions ------------------------------------------------------------------------


def test_the_documented_table_is_the_model() -> None:
    """The module text's table (medians, mean +- SD) lists exactly LAB_MODEL's values."""
    text = labs_module.__doc__ or ""
    rows = {m.group(1): m.group(2).split() for m in re.finditer(r"^(age|AST|ALT|platelets) +([-+.\d ]+)$",
                                                                  text, re.MULTILINE)}
    ages = [tuple(map(float, cell.split("+-"))) for cell in rows["age"]]
    assert [a for a, _ in ages] == list(LAB_MODEL.age_mean)
    assert [s for _, s in ages] == list(LAB_MODEL.age_sd)
    assert [float(v) for v in rows["AST"]] == list(LAB_MODEL.ast_median)
    assert [float(v) for v in rows["ALT"]] == list(LAB_MODEL.alt_median)
    assert [float(v) for v in rows["platelets"]] == list(LAB_MODEL.platelets_median)


def test_samples_match_the_documented_distributions_per_stage() -> None:
    n = 40_000
    means = LAB_MODEL.means()
    for stage in range(5):
        values = sample_labs(np.full(n, stage), np.random.default_rng([7, stage]))
        lo, hi = LAB_MODEL.age_range
        assert lo <= values["age"].min() and values["age"].max() <= hi
        for column in LAB_COLUMNS:  # exact means (closed form) within 4 standard errors
            x = values[column]
            assert abs(x.mean() - means[column][stage]) < 4 * x.std() / math.sqrt(n), column
        for column in ("ast", "alt", "platelets"):  # log-normal: the median and the log-sigma
            median = getattr(LAB_MODEL, f"{column}_median")[stage]
            sigma = getattr(LAB_MODEL, f"{column}_log_sigma")[stage]
            assert np.median(values[column]) == pytest.approx(median, rel=0.02)
            assert np.log(values[column]).std() == pytest.approx(sigma, rel=0.03)
    # the documented trends: age up, platelets down, AST up with stage
    assert np.all(np.diff(means["age"]) > 0) and np.all(np.diff(means["platelets"]) < 0)
    assert np.all(np.diff(means["ast"]) > 0)


def test_the_truncated_age_mean_by_numerical_integration() -> None:
    model = LabModel(age_mean=(20.0, 30.0, 50.0, 80.0, 88.0), age_sd=(10.0,) * 5)
    grid = np.linspace(*model.age_range, 200_001)
    for k in range(5):
        pdf = stats.norm.pdf(grid, model.age_mean[k], model.age_sd[k])
        assert model.means()["age"][k] == pytest.approx(
            np.trapezoid(grid * pdf, grid) / np.trapezoid(pdf, grid), abs=1e-6
        )


def test_the_log_likelihood_is_the_product_of_scipy_densities() -> None:
    stages, values = _draw(300, seed=1)
    ll = labs_log_likelihood(values)
    assert ll.shape == (300, 5)
    lo, hi = LAB_MODEL.age_range
    for k in range(5):
        mu, sd = LAB_MODEL.age_mean[k], LAB_MODEL.age_sd[k]
        expected = stats.truncnorm.logpdf(values["age"], (lo - mu) / sd, (hi - mu) / sd, mu, sd)
        for column in ("ast", "alt", "platelets"):
            sigma = getattr(LAB_MODEL, f"{column}_log_sigma")[k]
            median = getattr(LAB_MODEL, f"{column}_median")[k]
            expected = expected + stats.lognorm.logpdf(values[column], s=sigma, scale=median)
        np.testing.assert_allclose(ll[:, k], expected, rtol=1e-10, atol=1e-10)


def test_each_factor_integrates_to_one() -> None:
    """Vary one column, keep the others at a reference point: the varying factor (the full log
    likelihood minus its value at the reference, plus the hand-computed one-column density there)
    integrates to 1 over a grid (numerical integration, independent of scipy)."""
    ref = {"age": 50.0, "ast": 40.0, "alt": 40.0, "platelets": 200.0}
    at_ref = labs_log_likelihood({c: np.array([v]) for c, v in ref.items()})[0]
    grids = {"age": np.linspace(18, 90, 20_001), "ast": np.linspace(0.5, 3_000, 600_001),
             "alt": np.linspace(0.5, 3_000, 600_001), "platelets": np.linspace(1, 3_000, 600_001)}
    for column, grid in grids.items():
        values = {c: np.full(len(grid), ref[c]) for c in LAB_COLUMNS}
        values[column] = grid
        ll = labs_log_likelihood(values)
        for k in range(5):
            own = ll[:, k] - at_ref[k] + _own_log_density(column, ref[column], k)
            assert np.trapezoid(np.exp(own), grid) == pytest.approx(1.0, abs=2e-4), (column, k)


def _own_log_density(column: str, x: float, k: int) -> float:
    """The one-column log density at x, by hand (normal/log-normal formulas)."""
    m = LAB_MODEL
    if column == "age":
        lo, hi = m.age_range
        mu, sd = m.age_mean[k], m.age_sd[k]
        mass = 0.5 * (math.erf((hi - mu) / (sd * math.sqrt(2))) - math.erf((lo - mu) / (sd * math.sqrt(2))))
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd * math.sqrt(2 * math.pi) * mass)
    median, sigma = getattr(m, f"{column}_median")[k], getattr(m, f"{column}_log_sigma")[k]
    z = (math.log(x) - math.log(median)) / sigma
    return -0.5 * z * z - math.log(x * sigma * math.sqrt(2 * math.pi))


def test_a_patient_without_labs_adds_nothing() -> None:
    _, values = _draw(10, seed=2)
    values = {c: v.copy() for c, v in values.items()}
    for c in LAB_COLUMNS:
        values[c][[3, 7]] = np.nan
    ll = labs_log_likelihood(values)
    assert np.all(ll[[3, 7]] == 0.0) and np.all(ll[[0, 1, 2, 4]] != 0.0)
    with pytest.raises(ValueError, match="platelets"):
        labs_log_likelihood({c: values[c] for c in LAB_COLUMNS[:3]})
    with pytest.raises(ValueError, match="ast"):
        labs_log_likelihood({**values, "ast": np.where(np.isnan(values["ast"]), np.nan, -1.0)})


def test_the_bayes_classifier_is_as_accurate_as_it_expects() -> None:
    """If labs_log_likelihood is the sampler's density, the posterior is calibrated: its mean
    maximum probability equals its accuracy on fresh draws (and a wrong model is not calibrated)."""
    stages, values = _draw(60_000, seed=3)
    for model, calibrated in ((LAB_MODEL, True),
                              (LabModel(ast_log_sigma=(0.3,) * 5, alt_log_sigma=(0.35,) * 5), False)):
        log_post = labs_log_likelihood(values, model) + np.log(PRIOR)
        post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
        post /= post.sum(axis=1, keepdims=True)
        accuracy = (post.argmax(axis=1) == stages).mean()
        expected = post.max(axis=1).mean()
        gap = abs(accuracy - expected)
        assert (gap < 0.008) if calibrated else (gap > 0.03), (accuracy, expected)
    # measured: accuracy 0.42 (labs alone; the prior alone 0.28, the share of F1)
    assert 0.38 < accuracy_of(LAB_MODEL, stages, values) < 0.46


def accuracy_of(model: LabModel, stages: np.ndarray, values: dict[str, np.ndarray]) -> float:
    return float(((labs_log_likelihood(values, model) + np.log(PRIOR)).argmax(1) == stages).mean())


# --- the cohort's labs and the phantom's manifest --------------------------------------------


def test_the_missing_share_and_separate_streams() -> None:
    stages = np.random.default_rng(0).choice(5, size=1000, p=PRIOR)
    full = cohort_labs(stages, seed=5, missing_share=0.0)
    some = cohort_labs(stages, seed=5, missing_share=0.15)
    gone = np.isnan(some["age"])
    assert gone.sum() == 150
    for c in LAB_COLUMNS:  # all four together, and the others' values are untouched
        assert np.array_equal(np.isnan(some[c]), gone)
        np.testing.assert_array_equal(some[c][~gone], full[c][~gone])
    expected = sample_labs(stages, np.random.default_rng([5, 28, 1]))
    for c in LAB_COLUMNS:
        np.testing.assert_array_equal(full[c], expected[c])
    with pytest.raises(ValueError, match="missing_share"):
        cohort_labs(stages, seed=5, missing_share=1.0)


def test_the_config_fields() -> None:
    assert PhantomConfig().labs is False and PhantomConfig().labs_missing_share == 0.15
    with pytest.raises(ValueError, match="labs_missing_share"):
        PhantomConfig(labs_missing_share=1.0)
    with pytest.raises(ValueError, match="labs_missing_share"):
        PhantomConfig(labs_missing_share=-0.1)
    with pytest.raises(ValueError, match="labs"):
        PhantomConfig(labs=1)  # type: ignore[arg-type]


def _phantom(root: Path, config: PhantomConfig, n: int = N_PATIENTS) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # png for the dual-view site
        return make_phantom_dataset(root, n_patients=n, seed=0, config=config, workers=0,
                                    image_format="png")


def _images(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("labs_phantom")
    return {
        "default": _phantom(root / "default", SMALL),
        "labs": _phantom(root / "labs", PhantomConfig(width=160, height=120, labs=True,
                                                      labs_missing_share=0.34)),
    }


def test_the_default_manifest_is_byte_identical(phantoms: dict[str, Path]) -> None:
    assert hashlib.sha256(phantoms["default"].read_bytes()).hexdigest() == DEFAULT_MANIFEST_SHA256
    assert not set(LAB_COLUMNS) & set(phantoms["default"].read_text().splitlines()[0].split(","))


def test_labs_add_four_columns_and_change_nothing_else(phantoms: dict[str, Path]) -> None:
    default, labs = phantoms["default"], phantoms["labs"]
    assert _images(default.parent) == _images(labs.parent)
    with labs.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with default.open(newline="") as f:
        plain = list(csv.DictReader(f))
    header = labs.read_text().splitlines()[0].split(",")
    assert header[-4:] == list(LAB_COLUMNS)
    assert [{k: v for k, v in r.items() if k not in LAB_COLUMNS} for r in rows] == plain
    by_patient: dict[str, set[tuple[str, ...]]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], set()).add(tuple(row[c] for c in LAB_COLUMNS))
    assert all(len(v) == 1 for v in by_patient.values())  # the patient's values on every view
    empty = [p for p, v in by_patient.items() if next(iter(v)) == ("",) * 4]
    assert len(empty) == round(0.34 * N_PATIENTS) == 7
    # the written values are cohort_labs's, to one decimal
    stages = [METAVIR.parse(next(r["stage"] for r in rows if r["patient_id"] == p))
              for p in sorted(by_patient)]
    expected = cohort_labs(np.array(stages), seed=0, missing_share=0.34)
    for i, p in enumerate(sorted(by_patient)):
        cells = next(iter(by_patient[p]))
        for c, cell in zip(LAB_COLUMNS, cells, strict=True):
            value = expected[c][i]
            assert cell == ("" if np.isnan(value) else f"{value:.1f}")


def test_the_labs_reach_a_tabular_model_through_the_data_module(phantoms: dict[str, Path]) -> None:
    import torch

    from mmfusion.data import read_manifest
    from mmfusion.lightning import FusionDataModule
    from mmfusion.models import TrainingConfig, create_model
    from mmfusion.nn.tabular import TabularEncoder

    manifest = read_manifest(phantoms["labs"], labels=METAVIR, tabular={"labs": LAB_COLUMNS},
                             verify="header")
    assert manifest.modalities == ("us", "swe", "labs")
    assert sum(not row.available["labs"] for row in manifest) > 0
    means = LAB_MODEL.means()
    torch.manual_seed(0)
    model = create_model(
        "liver_fibrosis_quick", modalities=("us", "swe", "labs"), backbone="test_resnet",
        image_size=64, frozen_stages=0,
        encoders={"labs": {"name": "tabular", "columns": list(LAB_COLUMNS), "hidden": [16],
                           "out_features": 8,
                           "mean": [float(means[c][2]) for c in LAB_COLUMNS],
                           "std": [12.0, 25.0, 30.0, 60.0]}},
    ).eval()
    assert isinstance(model.encoders["labs"], TabularEncoder)
    data = FusionDataModule.from_model(manifest, model, training=TrainingConfig(batch_size=64),
                                       test_size=0.5, seed=0)
    batch = next(iter(data.test_dataloader()))
    assert batch["us"].shape[1:] == (3, 64, 64) and batch["labs"].shape[1:] == (4,)
    no_labs = torch.isnan(batch["labs"]).all(dim=1)
    assert torch.equal(batch["available"]["labs"], ~no_labs)
    with torch.no_grad():
        out = model({m: batch[m] for m in model.modalities}, batch["available"])
    assert out.probs.shape == (len(batch["label"]), 5)
    assert torch.isfinite(out.probs).all() and set(out.logits) == {"us", "swe", "labs", "joint"}


# --- the FIB-4 / APRI baseline ----------------------------------------------------------------


def _labs(*rows: tuple[float, float, float, float]) -> dict[str, np.ndarray]:
    return {c: np.array([r[i] for r in rows], dtype=float) for i, c in enumerate(LAB_COLUMNS)}


def test_the_five_stage_reading_of_the_cut_offs_by_hand() -> None:
    values = _labs(
        (35, 25, 30, 250),   # FIB-4 0.64 (<1.30: F0-F2), APRI 0.25 (<0.5: F0-F1)       -> F1
        (60, 90, 60, 100),   # FIB-4 6.97 (>2.67: F3-F4), APRI 2.25 (>1.5, >2.0: F4)    -> F4
        (60, 35, 49, 150),   # FIB-4 2.00 (grey), APRI 0.58 (grey, <1.0: F0-F3)         -> F1
        (60, 50, 64, 150),   # FIB-4 2.50 (grey), APRI 0.83 (grey; <1.0)                -> F1
        (60, 70, 49, 140),   # FIB-4 4.29 (F3-F4), APRI 1.25 (grey; grey)               -> F3
        (30, 100, 400, 100), # FIB-4 1.50 (grey), APRI 2.50 (F2-F4; F4)                  -> F4
        (20, 90, 900, 120),  # FIB-4 0.50 (F0-F2) vs APRI 1.875 (F2-F4; grey)             -> F2
        (20, 130, 900, 100), # FIB-4 0.87 (F0-F2) vs APRI 3.25 (F4): conflict -> prior -> F1
        (np.nan,) * 4,       # no labs -> the prior -> F1
    )
    scores = lab_scores(values)
    assert scores["fib4"][:2] == pytest.approx([35 * 25 / (250 * math.sqrt(30)),
                                                60 * 90 / (100 * math.sqrt(60))])
    base = LabCutoffBaseline()
    assert base.predict(values).tolist() == [1, 4, 1, 1, 3, 4, 2, 1, 1]
    probs = base.predict_proba(values)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], [PRIOR[0], PRIOR[1], 0, 0, 0] / PRIOR[:2].sum())
    np.testing.assert_allclose(probs[7], PRIOR)
    np.testing.assert_allclose(probs[8], PRIOR)
    assert base.allowed(values)[7].sum() == 0 and base.allowed(values)[8].all()


def test_the_readouts_by_hand() -> None:
    # FIB-4 = age * AST / (PLT * sqrt(ALT)) = age with AST = 10, ALT = 100, PLT = 1
    fib = [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    values = {"age": np.array(fib), "ast": np.full(6, 10.0), "alt": np.full(6, 100.0),
              "platelets": np.ones(6)}
    stages = np.array([0, 0, 0, 3, 4, 4])  # positives (F>=3): last three
    r = cutoff_readouts(values, stages, questions={"q": ("fib4", FIB4_CUTOFFS)})["q"]
    assert r["n"] == 6 and r["prevalence"] == 0.5
    assert (r["ruled_out"], r["indeterminate"], r["ruled_in"]) == (2 / 6, 2 / 6, 2 / 6)
    assert r["sensitivity_low"] == pytest.approx(2 / 3)  # F3 with FIB-4 1.0 is missed
    assert r["npv_low"] == 0.5 and r["specificity_high"] == pytest.approx(2 / 3)
    assert r["ppv_high"] == 0.5 and r["accuracy_determinate"] == 0.5


def test_the_baseline_on_a_large_cohort_matches_the_literature_ranges() -> None:
    stages, values = _draw(60_000, seed=4)
    aurocs = score_aurocs(values, stages)
    assert aurocs["apri"]["f2plus"] == pytest.approx(
        roc_auc_score(stages >= 2, apri(values["ast"], values["platelets"])))
    # module text of labs.py: APRI ~0.775 (F>=2), 0.888 (F4); FIB-4 ~0.776 (F>=3)
    assert 0.74 < aurocs["apri"]["f2plus"] < 0.81 and 0.85 < aurocs["apri"]["f4"] < 0.92
    assert 0.74 < aurocs["fib4"]["f3plus"] < 0.81
    readouts = cutoff_readouts(values, stages)
    assert set(readouts) == {"fib4_f3plus", "apri_f2plus", "apri_f4"}
    assert 0.70 < readouts["fib4_f3plus"]["sensitivity_low"] < 0.85
    assert readouts["fib4_f3plus"]["specificity_high"] > 0.88


def test_evaluate_lab_baseline_handles_patients_without_labs() -> None:
    stages, values = _draw(400, seed=5)
    values = {c: v.copy() for c, v in values.items()}
    for c in LAB_COLUMNS:
        values[c][:60] = np.nan
    result = evaluate_lab_baseline(values, stages, n_bootstrap=0)
    assert result["n"] == 400 and result["n_with_labs"] == 340
    assert result["readouts"]["apri_f2plus"]["n"] == 340
    five = result["five_stage"]
    pred = LabCutoffBaseline().predict(values)
    assert five["accuracy"] == pytest.approx((pred == stages).mean())
    assert result["five_stage_with_labs"]["accuracy"] == pytest.approx(
        (pred[60:] == stages[60:]).mean())
    assert {"auc_macro", "qwk"} <= set(five)
