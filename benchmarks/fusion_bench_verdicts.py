"""Verdicts of the fusion benchmark on the paper's claims (issue 28), read from finished runs only.

Every verdict is a linear contrast of per-patient accuracies, ``sum_j c_j * acc(method_j, rho_j)
- offset``, measured two ways, as :mod:`mmfusion.metrics.paired` recommends:

- over training seeds: Student's t-interval of the contrast computed per seed (only seeds that
  every term has; :func:`mmfusion.metrics.t_interval`);
- over test patients: the patient bootstrap of the contrast's seed mean. Every term is scored on
  the same large test cohort (the same patients and labels at every rho: the cohorts share their
  seed and the knob changes the images only), so one resample of patients scores every term
  (:func:`mmfusion.metrics.bootstrap.bootstrap_weights`, percentile interval).

Rule: **supported** when both 95 % intervals lie above 0, **reversed** when both lie below 0,
otherwise **not established**; with a single seed there is no t-interval and no verdict. The
contrasts:

- claim 1 of the paper (fusion beats each modality alone): ``attention - us_only`` and
  ``attention - swe_only`` at each rho (``attention`` is the paper's attention-weighted fusion);
- claim 2 (attention-weighted fusion beats late fusion): ``attention - late`` at rho = 1, where
  the joint ceiling lies above the late one, and at rho = 0, the negative control (the two
  ceilings are equal there, so a difference measures how well a method learns, not what it can
  represent);
- per fusion: ``f - late`` at each rho; the interaction contrast
  ``(f - late)|rho=1 - (f - late)|rho=0`` (does ``f`` lose less than late fusion when the decoy
  appears?); and ``f - late ceiling`` at rho = 1 (the only direct evidence that a method uses the
  cross-modal interaction: no classifier that combines per-modality evidence can pass that
  ceiling; the ceiling's Monte-Carlo standard error, about 0.1 point, is ignored).

The paper's claim 3 (the ensemble loss helps) is not a contrast of this benchmark: every model here
trains with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["Term", "contrast", "verdict", "verdicts", "render_verdicts"]

REFERENCE = "late"
PAPER = "attention"
#: One term of a contrast: (coefficient, {seed: run}).
Term = tuple[float, Mapping[int, Mapping[str, Any]]]


def _correct(run: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``([P] 0/1 correctness, [P] labels, [P] patient ids)`` of one run's patient predictions."""
    with np.load(run["_npz"]) as z:
        probs = z["patient_probs"]
        labels = z["patient_labels"].astype(np.int64)
        ids = z["patient_ids"].astype(str)
    return (probs.argmax(axis=1) == labels).astype(np.float64), labels, ids


def verdict(t: Mapping[str, Any] | None, boot: Mapping[str, Any] | None) -> str:
    """The rule of the module text, from the two intervals (``lower`` / ``upper`` keys)."""
    if not t or t.get("lower") is None or not boot or boot.get("lower") is None:
        return "one seed: no verdict"
    if t["lower"] > 0 and boot["lower"] > 0:
        return "supported"
    if t["upper"] < 0 and boot["upper"] < 0:
        return "reversed"
    return "not established"


def contrast(terms: Sequence[Term], *, offset: float = 0.0, n_bootstrap: int = 1000,
             level: float = 0.95, seed: int = 0) -> dict[str, Any] | None:
    """``sum_j c_j * accuracy_j - offset`` with its two intervals and :func:`verdict`.

    Args:
        terms: ``(c_j, {seed: run})``; a run carries ``_npz``, the path of its predictions
            (``patient_probs [P, K]``, ``patient_labels [P]``, ``patient_ids [P]``).
        offset: Subtracted from the contrast (e.g. a ceiling).
        n_bootstrap: Patient resamples.
        level: Coverage of both intervals.
        seed: Seed of the resampling.

    Returns:
        ``{"difference", "seeds", "t", "bootstrap", "verdict"}`` (fractions, not points), or
        ``None`` when no seed is shared by every term.

    Raises:
        ValueError: The terms' runs were scored on other patients or labels.
    """
    from mmfusion.metrics import t_interval
    from mmfusion.metrics.bootstrap import bootstrap_weights, percentile_interval

    seeds = sorted(set.intersection(*(set(runs) for _, runs in terms))) if terms else []
    if not seeds:
        return None
    scored = [(coef, i, runs[s]) for coef, runs in terms for i, s in enumerate(seeds)]
    first = _correct(scored[0][2])
    per_seed = np.zeros(len(seeds))
    per_patient = np.zeros(len(first[2]))
    for coef, i, run in scored:
        correct, labels, ids = _correct(run)
        if not (np.array_equal(labels, first[1]) and np.array_equal(ids, first[2])):
            raise ValueError(f"terms: run {run.get('method')!r} seed {seeds[i]} was scored on "
                             "other patients or labels than the first term")
        per_seed[i] += coef * correct.mean()
        per_patient += coef * correct / len(seeds)
    per_seed -= offset
    per_patient -= offset
    t = t_interval(per_seed, ci=level)
    rng = np.random.default_rng(seed)
    n = len(per_patient)
    replicates = np.concatenate([w @ per_patient / w.sum(axis=1)
                                 for w in bootstrap_weights(np.arange(n), n, n_bootstrap, rng)])
    interval = percentile_interval(replicates, level)
    boot = {"lower": interval["lower"], "upper": interval["upper"]}
    return {"difference": float(per_patient.mean()), "seeds": seeds,
            "t": {"lower": t.get("lower"), "upper": t.get("upper")}, "bootstrap": boot,
            "verdict": verdict(t, boot)}


def verdicts(runs: Sequence[Mapping[str, Any]], n_bootstrap: int = 1000) -> dict[str, Any]:
    """The paper's claims and the per-fusion contrasts of the module text, from finished runs.

    Returns:
        ``{"claims": [...], "fusions": [...]}``; each claim row has ``claim``, ``rho``,
        ``contrast`` (text) and the :func:`contrast` result (or ``None`` without the runs).
    """
    by: dict[str, dict[str, dict[int, Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        by[f"{float(run['rho']):g}"][run["method"]][int(run["seed"])] = run

    def get(rho: str, method: str) -> dict[int, Mapping[str, Any]]:
        return by.get(rho, {}).get(method, {})

    def c(terms: Sequence[Term], offset: float = 0.0) -> dict[str, Any] | None:
        if any(not r for _, r in terms):
            return None
        return contrast(terms, offset=offset, n_bootstrap=n_bootstrap)

    claims = []
    for rho in sorted(by, key=float):
        for other, claim in (("us_only", "1. fusion beats US alone"),
                             ("swe_only", "1. fusion beats SWE alone")):
            claims.append({"claim": claim, "rho": rho, "contrast": f"{PAPER} - {other}",
                           "result": c([(1.0, get(rho, PAPER)), (-1.0, get(rho, other))])})
    for rho in sorted(by, key=float, reverse=True):
        claims.append({"claim": "2. attention beats late fusion" + (
            " (negative control)" if float(rho) == 0 else ""), "rho": rho,
            "contrast": f"{PAPER} - {REFERENCE}",
            "result": c([(1.0, get(rho, PAPER)), (-1.0, get(rho, REFERENCE))])})

    fusions = []
    names = sorted({m for rho in by for m, rs in by[rho].items()
                    if m != REFERENCE and any(r.get("kind") == "fusion" for r in rs.values())})
    for name in names:
        row: dict[str, Any] = {"method": name, "vs_late": {}}
        for rho in sorted(by, key=float):
            row["vs_late"][rho] = c([(1.0, get(rho, name)), (-1.0, get(rho, REFERENCE))])
        if "0" in by and "1" in by:
            row["interaction"] = c([(1.0, get("1", name)), (-1.0, get("1", REFERENCE)),
                                    (-1.0, get("0", name)), (1.0, get("0", REFERENCE))])
        high = get("1", name)
        if high:
            late_ceiling = next(iter(high.values()))["ceilings"]["per_patient"]["late"]
            row["late_ceiling"] = late_ceiling
            row["above_late_ceiling"] = c([(1.0, high)], offset=late_ceiling)
        row["modalities"] = next(r for rho in by for r in by[rho].get(name, {}).values())["modalities"]
        fusions.append(row)
    return {"claims": claims, "fusions": fusions}


def _cell(result: Mapping[str, Any] | None, with_verdict: bool = True) -> str:
    if not result:
        return "-"

    def iv(part: Mapping[str, Any]) -> str:
        lo, hi = part.get("lower"), part.get("upper")
        return "-" if lo is None or hi is None else f"[{100 * lo:+.1f}, {100 * hi:+.1f}]"

    text = f"{100 * result['difference']:+.1f} t {iv(result['t'])} / boot {iv(result['bootstrap'])}"
    return text + (f": **{result['verdict']}**" if with_verdict else "")


def render_verdicts(v: Mapping[str, Any]) -> list[str]:
    """Markdown lines: the claims table and the per-fusion table."""
    if not v["claims"] and not v["fusions"]:
        return []
    lines = [
        "## Verdicts",
        "",
        "Points of per-patient accuracy on the test cohort: the contrast's mean, its 95 % "
        "t-interval over seeds (*t*) and its 95 % patient-bootstrap interval (*boot*). "
        "**supported**: both intervals above 0; **reversed**: both below 0; otherwise **not "
        "established** (`benchmarks/fusion_bench_verdicts.py`). With about twenty contrasts, one "
        "in twenty can exclude 0 by chance.",
        "",
        "| claim | rho | contrast | seeds | result |",
        "|---|---|---|---|---|",
    ]
    for row in v["claims"]:
        r = row["result"]
        lines.append(f"| {row['claim']} | {row['rho']} | {row['contrast']} | "
                     f"{len(r['seeds']) if r else 0} | {_cell(r)} |")
    rhos = sorted({rho for f in v["fusions"] for rho in f["vs_late"]}, key=float)
    lines += [
        "",
        "Per fusion: the difference to late fusion at each rho; the interaction contrast "
        "(f - late at rho 1) - (f - late at rho 0), which is above 0 when a method loses less "
        "than late fusion as the decoy appears; and accuracy minus the method's own late ceiling "
        "at rho 1 (above 0 only for a method that uses where the decoy is).",
        "",
        "| fusion | inputs | " + " | ".join(f"vs late, rho {rho}" for rho in rhos)
        + " | interaction | minus late ceiling (rho 1) |",
        "|---|---|" + "---|" * len(rhos) + "---|---|",
    ]
    for f in v["fusions"]:
        cells = [f["method"], "+".join(f["modalities"])]
        cells += [_cell(f["vs_late"].get(rho)) for rho in rhos]
        cells += [_cell(f.get("interaction"))]
        above = f.get("above_late_ceiling")
        cells += [(_cell(above) + f" (ceiling {100 * f['late_ceiling']:.1f})") if above else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
