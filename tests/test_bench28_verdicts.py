"""The fusion benchmark's verdicts (issue 28): contrasts by hand, the rule, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from benchmarks.fusion_bench_verdicts import contrast, render_verdicts, verdict, verdicts

K = 5


def _run(tmp: Path, name: str, correct: np.ndarray, *, seed: int = 0, rho: float = 0.0,
         kind: str = "fusion", late_ceiling: float = 0.5, ids: np.ndarray | None = None) -> dict[str, Any]:
    """A finished run whose patient predictions are right exactly where ``correct`` is 1."""
    n = len(correct)
    labels = np.arange(n) % K
    pred = np.where(correct.astype(bool), labels, (labels + 1) % K)
    probs = np.full((n, K), 0.1)
    probs[np.arange(n), pred] = 0.6
    path = tmp / f"{name}-{rho:g}-{seed}.npz"
    np.savez(path, patient_probs=probs, patient_labels=labels,
             patient_ids=np.array([f"p{i}" for i in range(n)]) if ids is None else ids)
    return {"method": name, "seed": seed, "rho": rho, "kind": kind, "modalities": ["us", "swe"],
            "ceilings": {"per_patient": {"late": late_ceiling, "joint": 0.6}}, "_npz": str(path)}


def test_the_rule() -> None:
    up, down, across = {"lower": 0.01, "upper": 0.02}, {"lower": -0.02, "upper": -0.01}, {"lower": -0.01, "upper": 0.01}
    assert verdict(up, up) == "supported"
    assert verdict(down, down) == "reversed"
    assert verdict(up, across) == verdict(across, up) == "not established"
    assert verdict(up, down) == "not established"
    assert verdict({"lower": None, "upper": None}, up) == "one seed: no verdict"
    assert verdict(None, up) == "one seed: no verdict"


def test_a_difference_over_three_seeds_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    a = {s: rng.integers(0, 2, n) for s in range(3)}
    b = {s: rng.integers(0, 2, n) for s in range(3)}
    ra = {s: _run(tmp_path, "a", a[s], seed=s) for s in range(3)}
    rb = {s: _run(tmp_path, "b", b[s], seed=s) for s in range(3)}
    out = contrast([(1.0, ra), (-1.0, rb)], n_bootstrap=2000)
    d = np.array([a[s].mean() - b[s].mean() for s in range(3)])
    assert out["seeds"] == [0, 1, 2]
    assert out["difference"] == pytest.approx(d.mean())
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert out["t"]["lower"] == pytest.approx(d.mean() - half)
    assert out["t"]["upper"] == pytest.approx(d.mean() + half)
    # The bootstrap's spread is the standard error of a mean over 60 patients.
    x = np.mean([a[s] - b[s] for s in range(3)], axis=0)
    se = x.std(ddof=0) / np.sqrt(n)
    assert out["bootstrap"]["lower"] < d.mean() < out["bootstrap"]["upper"]
    assert out["bootstrap"]["upper"] - out["bootstrap"]["lower"] == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_only_shared_seeds_count_and_none_without_any(tmp_path: Path) -> None:
    ones, zeros = np.ones(10), np.zeros(10)
    ra = {0: _run(tmp_path, "a", ones, seed=0), 1: _run(tmp_path, "a", ones, seed=1)}
    rb = {1: _run(tmp_path, "b", zeros, seed=1), 2: _run(tmp_path, "b", zeros, seed=2)}
    out = contrast([(1.0, ra), (-1.0, rb)])
    assert out["seeds"] == [1]
    assert out["verdict"] == "one seed: no verdict"
    assert contrast([(1.0, {0: ra[0]}), (-1.0, {2: rb[2]})]) is None


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1), st.integers(0, 1), st.integers(0, 1)),
                min_size=4, max_size=30))
def test_the_interaction_contrast_is_the_difference_of_differences(tmp_path_factory: pytest.TempPathFactory,
                                                                   rows: list[tuple[int, int, int, int]]) -> None:
    tmp = tmp_path_factory.mktemp("did")
    m1, l1, m0, l0 = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
    runs = {name: {s: _run(tmp, name, col, seed=s) for s in (0, 1)}
            for name, col in (("m1", m1), ("l1", l1), ("m0", m0), ("l0", l0))}
    out = contrast([(1.0, runs["m1"]), (-1.0, runs["l1"]), (-1.0, runs["m0"]), (1.0, runs["l0"])],
                   n_bootstrap=200)
    assert out["difference"] == pytest.approx((m1.mean() - l1.mean()) - (m0.mean() - l0.mean()))
    # Equal seeds: the t-interval collapses to the point, and the bootstrap brackets it.
    assert out["t"]["lower"] == pytest.approx(out["difference"])
    assert out["bootstrap"]["lower"] <= out["difference"] + 1e-12 <= out["bootstrap"]["upper"] + 2e-12


def test_an_offset_is_subtracted(tmp_path: Path) -> None:
    correct = np.array([1, 1, 1, 0] * 10)
    runs = {s: _run(tmp_path, "a", correct, seed=s) for s in range(3)}
    out = contrast([(1.0, runs)], offset=0.5)
    assert out["difference"] == pytest.approx(0.25)
    assert out["t"]["lower"] == out["t"]["upper"] == pytest.approx(0.25)  # identical seeds: sd 0
    assert out["verdict"] == "supported"
    assert out["bootstrap"]["lower"] > 0


def test_other_patients_are_refused(tmp_path: Path) -> None:
    ra = {0: _run(tmp_path, "a", np.ones(6))}
    rb = {0: _run(tmp_path, "b", np.ones(6), ids=np.array([f"q{i}" for i in range(6)]))}
    with pytest.raises(ValueError, match=r"terms: run 'b' seed 0 .*other patients"):
        contrast([(1.0, ra), (-1.0, rb)])


def test_claims_and_fusion_rows_from_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 400
    runs = []
    for rho in (0.0, 1.0):
        for s in range(3):
            base = rng.random(n)
            runs += [
                _run(tmp_path, "attention", (base < 0.7).astype(float), seed=s, rho=rho, late_ceiling=0.55),
                _run(tmp_path, "late", (base < 0.5).astype(float), seed=s, rho=rho, late_ceiling=0.55),
                _run(tmp_path, "us_only", (base < 0.2).astype(float), seed=s, rho=rho, kind="single"),
                _run(tmp_path, "swe_only", (base < 0.9).astype(float), seed=s, rho=rho, kind="single"),
            ]
    v = verdicts(runs, n_bootstrap=300)
    claims = {(c["claim"], c["rho"]): c["result"] for c in v["claims"]}
    assert claims[("1. fusion beats US alone", "1")]["verdict"] == "supported"
    assert claims[("1. fusion beats SWE alone", "0")]["verdict"] == "reversed"
    assert claims[("2. attention beats late fusion", "1")]["verdict"] == "supported"
    assert claims[("2. attention beats late fusion (negative control)", "0")]["difference"] > 0.15
    (row,) = v["fusions"]  # late is the reference; single-modal models are no fusion rows
    assert row["method"] == "attention"
    assert row["late_ceiling"] == 0.55
    assert row["above_late_ceiling"]["verdict"] == "supported"
    assert abs(row["interaction"]["difference"]) < 0.05
    text = "\n".join(render_verdicts(v))
    assert "| 2. attention beats late fusion | 1 | attention - late | 3 |" in text
    assert "(ceiling 55.0)" in text
