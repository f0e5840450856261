"""The fusion benchmark's table and figures, read from its per-run results only (issue 28).

For every rho and method: the per-patient accuracy as the mean over seeds with Student's
t-interval over seeds (:func:`mmfusion.metrics.t_interval`) and the patient-bootstrap interval on
the large test cohort (the seeds' patient predictions stacked, a patient resampled with all its
seeds' rows, so the replicate is the seed-mean accuracy); the difference to late fusion with the
paired t-interval over seeds (:func:`mmfusion.metrics.paired_t_interval`) and the paired patient
bootstrap (:func:`mmfusion.metrics.paired_bootstrap`, same stacking); per-view accuracy, macro
AUROC, QWK, ECE; the gaps to the method's joint and late ceilings; the missing-modality regret
(ceiling without the modality minus accuracy without it); the cost from the catalogue's cost run.

Figures (matplotlib, PNG next to the table): accuracy against the two ceilings per method and
rho; accuracy against cost (the Pareto front); missing-modality regret per method.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.fusion_bench_verdicts import render_verdicts, verdicts
from mmfusion.files import atomic_write, atomic_write_text

__all__ = ["load_runs", "summarise", "write_summary"]

REFERENCE = "late"
MISSING = ("swe", "us", "labs")


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every finished run under ``out`` (its JSON, with ``_npz``: the predictions' path)."""
    runs = []
    for path in sorted(Path(out).glob("rho-*/*/seed*.json")):
        doc = json.loads(path.read_text())
        doc["_npz"] = str(path.with_suffix(".npz"))
        runs.append(doc)
    return runs


def _current_cost() -> dict[str, Any]:
    """fusion -> its row of the committed cost run (``fusion_cost_cpu.json``), read at summary
    time so the table shows the latest measurement; empty when there is none."""
    path = Path(__file__).resolve().parent / "results" / "fusion_cost_cpu.json"
    if not path.is_file():
        return {}
    return {r["fusion"]: r for r in json.loads(path.read_text())["rows"]}


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def _stacked(runs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs' patient predictions stacked: ``probs [S*P, K]``, ``labels``, ``groups`` (the
    patient ids, equal across runs, so a resample takes a patient's rows of every run)."""
    probs, labels, groups = [], [], []
    for run in runs:
        with np.load(run["_npz"]) as z:
            p = z["patient_probs"].astype(np.float64)
            probs.append(p / p.sum(axis=1, keepdims=True))
            labels.append(z["patient_labels"].astype(np.int64))
            groups.append(z["patient_ids"].astype(str))
    return np.concatenate(probs), np.concatenate(labels), np.concatenate(groups)


def _row(method_runs: list[dict[str, Any]], late_runs: dict[int, dict[str, Any]],
         n_bootstrap: int) -> dict[str, Any]:
    from mmfusion.metrics import (
        classification_report,
        paired_bootstrap,
        paired_t_interval,
        t_interval,
    )

    runs = sorted(method_runs, key=lambda r: r["seed"])
    if not runs[0].get("seeded", True):  # the same result at every seed: one run counts
        runs = runs[:1]
    first = runs[0]
    acc = [r["per_patient"]["accuracy"] for r in runs]
    probs, labels, groups = _stacked(runs)
    pooled = classification_report(probs, labels, groups=groups, n_bootstrap=n_bootstrap, seed=0)
    row: dict[str, Any] = {
        "method": first["method"], "kind": first["kind"], "modalities": first["modalities"],
        "note": first.get("note", ""), "seeds": [r["seed"] for r in runs],
        "accuracy": t_interval(acc),
        "accuracy_bootstrap": [pooled["ci"]["accuracy"]["lower"], pooled["ci"]["accuracy"]["upper"]],
        "accuracy_se": float(np.mean([r["per_patient"]["accuracy_se"] for r in runs])),
        "accuracy_view": float(np.mean([r["per_view"]["accuracy"] for r in runs])),
        "auc_macro": _mean([r["per_patient"]["auc_macro"] for r in runs]),
        "auc_bootstrap": [pooled["ci"]["auc_macro"]["lower"], pooled["ci"]["auc_macro"]["upper"]],
        "qwk": _mean([r["per_patient"]["qwk"] for r in runs]),
        "ece": _mean([r["per_patient"]["ece"] for r in runs]),
        "test_patients": first["test_cohort"]["patients"],
    }
    if "ceilings" in first:
        row["ceilings"] = {u: first["ceilings"][u] for u in ("per_view", "per_patient")}
        row["gap_joint"] = float(np.mean([r["gaps"]["per_patient"]["joint"] for r in runs]))
        row["gap_late"] = float(np.mean([r["gaps"]["per_patient"]["late"] for r in runs]))
    if "regret" in first:
        row["regret"] = {m: float(np.mean([r["regret"][m]["per_patient"] for r in runs]))
                         for m in first["regret"]}
    if "missing" in first:
        row["missing"] = {m: float(np.mean([r["missing"][m]["per_patient"] for r in runs]))
                          for m in first["missing"]}
    row["params"] = first.get("params")
    row["cost"] = _current_cost().get(first["method"]) or first.get("cost")
    row["seconds"] = float(np.mean([r["wall_seconds"] for r in runs]))
    row["cpu_seconds"] = _mean([r.get("cpu_seconds") for r in runs])
    paired = [r for r in runs if r["seed"] in late_runs] if first["method"] != REFERENCE else []
    if paired:
        row["vs_late_seeds"] = [r["seed"] for r in paired]
        row["vs_late_t"] = paired_t_interval(
            [r["per_patient"]["accuracy"] for r in paired],
            [late_runs[r["seed"]]["per_patient"]["accuracy"] for r in paired])
        pa, y, g = _stacked(paired)
        pb, y_late, g_late = _stacked([late_runs[r["seed"]] for r in paired])
        if np.array_equal(y, y_late) and np.array_equal(g, g_late):
            boot = paired_bootstrap(pa, pb, y, g, n_bootstrap=n_bootstrap, seed=0)
            row["vs_late_bootstrap"] = boot["accuracy"]
    return row


def summarise(runs: Sequence[dict[str, Any]], n_bootstrap: int = 1000) -> dict[str, Any]:
    """Rows per rho (see the module text) from finished runs."""
    by: dict[float, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        by[float(run["rho"])][run["method"]].append(run)
    out: dict[str, Any] = {"rhos": {}, "ceilings": {}}
    for rho in sorted(by):
        known = [r["test_ceilings"] for rs in by[rho].values() for r in rs if r.get("test_ceilings")]
        if known:
            out["ceilings"][f"{rho:g}"] = known[0]
        late = {r["seed"]: r for r in by[rho].get(REFERENCE, [])}
        rows = [_row(rs, late, n_bootstrap) for rs in by[rho].values()]
        kinds = {"fusion": 0, "single": 1, "baseline": 2}
        rows.sort(key=lambda r: (kinds.get(r["kind"], 3), -r["accuracy"]["mean"]))
        out["rhos"][f"{rho:g}"] = rows
    if runs:
        first = runs[0]
        out["settings"] = first["settings"]
        out["machine"] = first.get("machine")
        out["test_cohort"] = first["test_cohort"]
        out["verdicts"] = verdicts(runs, n_bootstrap=n_bootstrap)
    return out


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _interval(lo: float | None, hi: float | None) -> str:
    return "-" if lo is None or hi is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _diff(part: Mapping[str, Any] | None, key: str = "mean") -> str:
    if not part:
        return "-"
    value = part.get(key, part.get("difference"))
    return f"{100 * value:+.1f} {_interval(part['lower'], part['upper'])}"


def _auc_cell(row: Mapping[str, Any]) -> str:
    lo, hi = row.get("auc_bootstrap") or (None, None)
    return _num(row["auc_macro"]) + ("" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]")


def _cost_cell(row: Mapping[str, Any]) -> str:
    cost = row.get("cost")
    params = f"{row['params'] / 1e6:.2f} M" if row.get("params") else "-"
    if not cost:
        return params
    flops = cost.get("fusion_flops_per_pair")
    latency = (cost.get("latency_ms") or {}).get("1")
    return (f"{params}; fusion {flops / 1e6:.1f} MFLOP" if flops is not None else params) + (
        f"; {latency:.1f} ms" if latency is not None else "")


def render_markdown(summary: Mapping[str, Any], figures: Sequence[str]) -> str:
    """The table(s) as Markdown."""
    s = summary.get("settings", {})
    lines = [
        "# Fusion benchmark (issue 28)",
        "",
        "Written by `python -m benchmarks.fusion_bench` from the per-run results in "
        "`benchmarks/results/fusion_bench/` (`--summarise` rewrites it without running anything).",
        "",
    ]
    if not summary["rhos"]:
        return "\n".join([*lines, "No finished runs yet.", ""])
    tc = summary["test_cohort"]
    lines += [
        f"Machine: {summary.get('machine')}. Test cohort: {tc['patients']} patients, {tc['pairs']} "
        f"pairs (seed {tc['seed']}); training cohorts of {s.get('train_patients')} patients (cohort "
        f"seed = run seed). Models: {s.get('backbone')} (feature level {s.get('out_indices')}) at "
        f"{s.get('image_size')} px, {s.get('epochs')} epochs, modality dropout "
        f"{s.get('modality_dropout')}.",
        "",
        "Accuracy per patient (mean of the views' probabilities), in %. *Seeds*: mean over seeds "
        "[Student t 95 % interval over seeds]. *Bootstrap*: 95 % patient-bootstrap interval on "
        "the test cohort (seeds stacked). *vs late*: difference to late fusion, paired t over "
        "seeds / paired patient bootstrap. *Gap*: ceiling minus accuracy (the method's own "
        "ceilings: its modalities; joint sees where the decoy is, late cannot). *Regret*: ceiling "
        "without the modality minus accuracy without it (-SWE / -US / -labs). *AUC*: macro "
        "one-vs-rest AUROC per patient, mean over seeds [patient-bootstrap interval, seeds "
        "stacked].",
        "",
    ]
    header = ["method", "inputs", "n", "accuracy (seeds)", "bootstrap", "vs late (t)",
              "vs late (bootstrap)", "per view", "AUC", "QWK", "ECE", "gap joint", "gap late",
              "regret -SWE/-US/-labs", "cost", "s/run (wall, CPU)"]
    for rho, rows in summary["rhos"].items():
        lines += [f"## rho = {rho}", ""]
        ceilings = summary.get("ceilings", {}).get(rho)
        if ceilings:
            for key, name in (("with_labs", "US + SWE + labs"), ("without_labs", "US + SWE")):
                for unit in ("per_patient", "per_view"):
                    c = ceilings[key][unit]
                    lines.append(f"- Ceilings {unit.replace('_', ' ')}, {name}: " + ", ".join(
                        f"{k} {_pct(v)}" for k, v in c.items()) + ".")
            lines.append(f"  ({ceilings['source']}; Monte-Carlo standard error about 0.1 point.)")
        se = max(r["accuracy_se"] for r in rows)
        lines += [f"- Standard error of one run's per-patient accuracy on the test cohort: at most "
                  f"{_pct(se, 2)} points (sqrt(a (1 - a) / patients)); per view it is smaller.", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for r in rows:
            a = r["accuracy"]
            regret = r.get("regret", {})
            cells = [
                r["method"] + (f" ({r['note']})" if r.get("note") else ""),
                "+".join(r["modalities"]) or "-", str(len(r["seeds"])),
                f"{_pct(a['mean'])} {_interval(a['lower'], a['upper'])}",
                _interval(*r["accuracy_bootstrap"]),
                _diff(r.get("vs_late_t")), _diff(r.get("vs_late_bootstrap"), "difference"),
                _pct(r["accuracy_view"]), _auc_cell(r), _num(r["qwk"]), _num(r["ece"]), _pct(r.get("gap_joint")), _pct(r.get("gap_late")),
                "/".join(_pct(regret.get(m)) for m in MISSING),
                _cost_cell(r), f"{r['seconds']:.0f}, "
                + ("-" if r.get("cpu_seconds") is None else f"{r['cpu_seconds']:.0f}"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if summary.get("verdicts"):
        lines += render_verdicts(summary["verdicts"])
    lines += ["Figures: " + ", ".join(f"![{Path(f).stem}]({f})" for f in figures), ""] if figures else []
    lines += ["Cost: parameters of the benchmark's model; fusion FLOPs per pair and batch-1 CPU "
              "latency from `benchmarks/results/fusion_cost_cpu.json` (the catalogue's cost run, "
              "its own setup), where that file exists.", ""]
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> Path:
    """Lay out ``fig``, write it as a PNG atomically (a temporary file in the folder, then
    renamed: a reader never sees half a figure) and close it; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
    return path


def write_figures(summary: Mapping[str, Any], folder: Path) -> list[Path]:
    """The three figures (PNG) into ``folder``; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos = list(summary["rhos"])
    if not rhos:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, axes = plt.subplots(1, len(rhos), figsize=(6 * len(rhos), 4.5), squeeze=False)
    for ax, rho in zip(axes[0], rhos, strict=True):
        rows = summary["rhos"][rho]
        x = np.arange(len(rows))
        for i, r in enumerate(rows):
            a = r["accuracy"]
            err = None if a["lower"] is None else [[a["mean"] - a["lower"]], [a["upper"] - a["mean"]]]
            ax.errorbar([i], [a["mean"]], yerr=err, fmt="o", color="C0", capsize=3)
            c = r.get("ceilings", {}).get("per_patient")
            if c:
                ax.hlines(c["joint"], i - 0.35, i + 0.35, colors="k", label="joint ceiling" if i == 0 else None)
                ax.hlines(c["late"], i - 0.35, i + 0.35, colors="C3", linestyles="--",
                          label="late ceiling" if i == 0 else None)
        ax.set_xticks(x, [r["method"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"rho = {rho}")
        ax.set_ylabel("accuracy per patient")
        ax.legend(fontsize=8)
    paths.append(_save_figure(fig, folder / "fusion_bench_ceilings.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, rho in enumerate(rhos):
        pts = [(r["params"], r["accuracy"]["mean"], r["method"]) for r in summary["rhos"][rho]
               if r.get("params")]
        if not pts:
            continue
        pts.sort()
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{k}", label=f"rho = {rho}")
        for p in pts:
            ax.annotate(p[2], (p[0], p[1]), fontsize=6)
        best, front = -1.0, []
        for p in pts:  # the Pareto front: no cheaper model is as accurate
            if p[1] > best:
                best = p[1]
                front.append(p)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=f"C{k}", alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("accuracy per patient")
    ax.legend(fontsize=8)
    paths.append(_save_figure(fig, folder / "fusion_bench_pareto.png"))

    fig, axes = plt.subplots(1, len(rhos), figsize=(6 * len(rhos), 4.5), squeeze=False)
    for ax, rho in zip(axes[0], rhos, strict=True):
        rows = [r for r in summary["rhos"][rho] if r.get("regret")]
        x = np.arange(len(rows))
        for j, m in enumerate(MISSING):
            ax.bar(x + (j - 1) * 0.27, [r["regret"].get(m, np.nan) for r in rows], 0.27, label=f"-{m}")
        ax.set_xticks(x, [r["method"] for r in rows], rotation=60, ha="right", fontsize=8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"rho = {rho}")
        ax.set_ylabel("regret (ceiling without - accuracy without)")
        ax.legend(fontsize=8)
    paths.append(_save_figure(fig, folder / "fusion_bench_regret.png"))
    return paths


def write_summary(out: Path, markdown: Path, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Read every finished run under ``out``; write ``markdown``, its JSON twin and the figures
    (in ``out / "figures"``). Runs nothing."""
    runs = load_runs(out)
    n_bootstrap = int(runs[0]["settings"]["n_bootstrap"]) if runs else 0
    summary = summarise(runs, n_bootstrap=n_bootstrap)
    figures = write_figures(summary, Path(out) / "figures")
    rel = []
    for p in figures:
        try:
            rel.append(str(p.resolve().relative_to(Path(markdown).resolve().parent)))
        except ValueError:
            rel.append(str(p))
    atomic_write_text(markdown, render_markdown(summary, rel))
    atomic_write_text(Path(out) / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    say(f"summary of {len(runs)} runs: {markdown}")
    return summary
