"""The paper's Table I ablation: six configurations on the same patient split(s) and seeds.

    python -m examples.liver_fibrosis.ablation --out runs/ablation                 # quick preset on CPU
    python -m examples.liver_fibrosis.ablation --out runs/ablation --seeds 0,1,2   # mean +/- sd
    python -m examples.liver_fibrosis.ablation --out runs/ablation --folds 5

Configurations (paper Table I): US; SWE; US+SWE+late+single; US+SWE+late+multi;
US+SWE+att+single; US+SWE+att+multi (the paper's model). Every configuration sees the same splits:
a split depends only on the manifest and the seed. Each run is a normal training run folder
(``<out>/<configuration>/seed-<s>``); ``ablation.csv`` has one row per run (and fold),
``ablation.md`` the Table I layout with mean +/- sd over seeds and folds, and the paired
differences behind the paper's three claims (:data:`CONTRASTS`): each seed's difference between
two configurations on the same split and initialisation, their mean and a 95 % t-interval.
``--report-only`` rewrites both from the run folders' ``metrics.json`` without training.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import (
    add_settings_arguments,
    explicit_overrides,
    preset_config,
    validate,
)
from examples.liver_fibrosis.runner import run_training, weights_check
from mmfusion.files import atomic_write_text
from mmfusion.liver.presets import TABLE_I, TABLE_I_ROWS

#: Table I rows: name -> ModelConfig changes (from the registry). The last one is the paper's model.
CONFIGS: dict[str, dict[str, Any]] = {
    **{TABLE_I_ROWS[suffix]: dict(changes) for suffix, changes in TABLE_I.items()},
    TABLE_I_ROWS[""]: dict(fusion="attention", loss="multi"),
}

#: The paper's Table I (accuracy %, AUC x 100, sensitivity, specificity), for reference only.
PAPER_TABLE_I = {
    "US": (55.10, 89.86, 0.56, 0.69),
    "SWE": (52.42, 91.37, 0.97, 0.68),
    "US+SWE+late+single": (61.32, 91.77, 0.76, 0.84),
    "US+SWE+late+multi": (62.45, 91.93, 0.82, 0.85),
    "US+SWE+att+single": (73.86, 93.85, 0.83, 0.87),
    "US+SWE+att+multi": (76.21, 95.01, 0.97, 0.86),
}

#: The contrasts behind the paper's three claims: (claim, configuration, compared with).
CONTRASTS = (
    ("fusion beats each modality", "US+SWE+att+multi", "US"),
    ("fusion beats each modality", "US+SWE+att+multi", "SWE"),
    ("attention beats late fusion", "US+SWE+att+multi", "US+SWE+late+multi"),
    ("attention beats late fusion", "US+SWE+att+single", "US+SWE+late+single"),
    ("the ensemble loss helps", "US+SWE+att+multi", "US+SWE+att+single"),
    ("the ensemble loss helps", "US+SWE+late+multi", "US+SWE+late+single"),
)

COLUMNS = ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro", "qwk",
           "auc_f2plus", "auc_f3plus", "auc_f4")
#: Per-patient (mean of the views' probabilities) and per-branch accuracies, after COLUMNS.
EXTRA_COLUMNS = ("patient_accuracy", "patient_auc_macro", "branch_us", "branch_swe", "branch_joint")


def build_parser() -> argparse.ArgumentParser:
    """The ``ablation`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.ablation",
        description="Run the six Table I configurations on the same splits and seeds.",
    )
    p.add_argument("--out", default="runs/ablation", help="output folder (default runs/ablation)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--configs", help=f"subset of {', '.join(CONFIGS)} (comma-separated)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite ablation.csv and ablation.md from the run folders in --out; train nothing")
    add_settings_arguments(p, skip=frozenset({"out", "modalities", "fusion", "loss", "seed"}))
    return p


def run_rows(name: str, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows of one run (one per fold for K-fold runs; per held-out site, named, for
    ``--split site``)."""
    parts = metrics["folds"] if "folds" in metrics else [metrics]
    labels = (metrics.get("sites") or list(range(len(parts)))) if "folds" in metrics else [""]
    rows = []
    for label, m in zip(labels, parts, strict=True):
        e = m["ensemble"]
        row = {"config": name, "seed": seed, "fold": label,
               "n_test_pairs": m["n_test_pairs"], "n_test_patients": m["n_test_patients"]}
        row.update({c: e.get(c) for c in COLUMNS})
        patients, branches = m.get("patients", {}), m.get("branches", {})
        row.update(patient_accuracy=patients.get("accuracy"), patient_auc_macro=patients.get("auc_macro"),
                   **{f"branch_{b}": branches.get(b, {}).get("accuracy") for b in ("us", "swe", "joint")})
        rows.append(row)
    return rows


def _column(rows: list[dict[str, Any]], key: str) -> list[float]:
    """The values of ``key`` in ``rows`` that were measured (empty fields left out)."""
    return [float(r[key]) for r in rows if r.get(key) not in (None, "")]


def _mean_sd(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "n/a"
    mean = float(np.mean(values)) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +/- {float(np.std(values, ddof=1)) * scale:.{digits}f}"


def paired_differences(rows: list[dict[str, Any]], metric: str = "accuracy") -> list[dict[str, Any]]:
    """Each :data:`CONTRASTS` entry's per-seed (and fold) differences in ``metric``.

    Runs pair up by (seed, fold): same split, same initialisation seed. The interval is the 95 %
    Student t-interval of the mean difference (n - 1 degrees of freedom; none for n < 2).

    Returns:
        One dict per contrast with both configurations' runs: ``claim``, ``config``, ``versus``,
        ``differences`` (per pair), ``mean``, ``low``, ``high``, ``n``.
    """
    from scipy import stats

    value = {(r["config"], r["seed"], r["fold"]): r[metric] for r in rows
             if r.get(metric) not in (None, "")}
    out = []
    for claim, config, versus in CONTRASTS:
        keys = sorted({(s, f) for c, s, f in value if c == config} & {(s, f) for c, s, f in value if c == versus})
        diffs = [float(value[(config, *k)]) - float(value[(versus, *k)]) for k in keys]
        if not diffs:
            continue
        mean = float(np.mean(diffs))
        half = (float(stats.t.ppf(0.975, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs)))
                if len(diffs) > 1 else float("nan"))
        out.append({"claim": claim, "config": config, "versus": versus, "differences": diffs,
                    "mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)})
    return out


def paired_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The ``ablation.md`` section of paired differences (accuracy and AUC, in points)."""
    lines = ["", "Paired differences (configuration minus the one compared, same split and seed; "
             "points of accuracy % and of AUC x 100; 95 % t-interval over the pairs):", "",
             "| claim | configuration | versus | accuracy: per pair | mean [95 % CI] | "
             "AUC: mean [95 % CI] | n |", "|---|---|---|---|---|---|---|"]
    auc = {(d["config"], d["versus"]): d for d in paired_differences(rows, "auc_macro")}
    for d in paired_differences(rows, "accuracy"):
        a = auc.get((d["config"], d["versus"]))
        auc_text = (f"{100 * a['mean']:+.2f} [{100 * a['low']:+.2f}, {100 * a['high']:+.2f}]"
                    if a else "n/a")
        lines.append(
            f"| {d['claim']} | {d['config']} | {d['versus']} | "
            f"{', '.join(f'{100 * x:+.1f}' for x in d['differences'])} | "
            f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] | {auc_text} | "
            f"{d['n']} |"
        )
    return lines


def table_markdown(rows: list[dict[str, Any]], header: str) -> str:
    """``ablation.md``: Table I layout, mean +/- sd over seeds/folds, plus the paper's numbers."""
    lines = [
        header, "",
        "| Experimental settings | Accuracy (%) | AUC (x100) | Sensitivity | Specificity | QWK | n |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        if not mine:
            continue
        col = partial(_column, mine)
        star = "*" if name == "US+SWE+att+multi" else ""
        lines.append(
            f"| {star}{name} | {_mean_sd(col('accuracy'), 100, 2)} | "
            f"{_mean_sd(col('auc_macro'), 100, 2)} | {_mean_sd(col('sensitivity_macro'), 1, 2)} | "
            f"{_mean_sd(col('specificity_macro'), 1, 2)} | {_mean_sd(col('qwk'), 1, 2)} | "
            f"{len(mine)} |"
        )
    lines += ["", "Per patient (the mean of each patient's view probabilities) and per branch "
              "(accuracy %; a branch is one head of the ensemble):", "",
              "| Experimental settings | Patient accuracy (%) | Patient AUC (x100) | US branch | "
              "SWE branch | joint branch |", "|---|---|---|---|---|---|"]
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        if not mine:
            continue
        extra = partial(_column, mine)
        lines.append(f"| {name} | {_mean_sd(extra('patient_accuracy'), 100, 1)} | "
                     f"{_mean_sd(extra('patient_auc_macro'), 100, 1)} | "
                     + " | ".join(_mean_sd(extra(f"branch_{b}"), 100, 1) for b in ("us", "swe", "joint"))
                     + " |")
    lines += paired_markdown(rows)
    lines += [
        "", "For reference, the paper's Table I (one image-level split, one seed; its data are "
        "private, so these numbers are not comparable with the phantom's):", "",
        "| Experimental settings | Accuracy (%) | AUC (x100) | Sensitivity | Specificity |",
        "|---|---|---|---|---|",
    ]
    for name, (acc, auc, sens, spec) in PAPER_TABLE_I.items():
        star = "*" if name == "US+SWE+att+multi" else ""
        lines.append(f"| {star}{name} | {acc:.2f} | {auc:.2f} | {sens:.2f} | {spec:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.ablation``."""
    args = build_parser().parse_args(argv)
    if args.report_only:
        return report_only(Path(args.out))
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise CliError(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    names = list(CONFIGS) if not args.configs else [c.strip() for c in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not seeds:
        raise CliError(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    overrides = explicit_overrides(args)
    for key in ("out", "resume", "overwrite"):
        overrides.pop(key, None)
    base = preset_config(args.preset or "quick", overrides)
    weights_check(base)  # every configuration shares the weights and frozen stages
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in seeds:
        for name in names:
            run_dir = out / name / f"seed-{seed}"
            changes = dict(CONFIGS[name])
            if len(changes.get("modalities", base.model.modalities)) == 1:
                changes["modality_dropout"] = 0.0
            cfg = base.replace(**changes, seed=seed, out=str(run_dir), resume=bool(args.resume),
                               overwrite=bool(args.overwrite))
            validate(cfg)
            say(f"--- {name}, seed {seed} -> {run_dir}")
            rows += run_rows(name, seed, run_training(cfg))
            write_outputs(out, rows, base.preset, seeds, args, time.perf_counter() - started)
    say(f"ablation done in {(time.perf_counter() - started) / 60:.1f} min: {out / 'ablation.md'}")
    print((out / "ablation.md").read_text(), end="")
    return 0


def report_only(out: Path) -> int:
    """Rewrite ``out/ablation.csv`` and ``ablation.md`` from the runs' ``metrics.json`` files
    (``<out>/<configuration>/seed-<s>/metrics.json``; the header of ``ablation.md`` is kept)."""
    rows: list[dict[str, Any]] = []
    for name in CONFIGS:
        for path in sorted((out / name).glob("seed-*/metrics.json"),
                           key=lambda p: int(p.parent.name.split("-", 1)[1])):
            rows += run_rows(name, int(path.parent.name.split("-", 1)[1]), json.loads(path.read_text()))
    if not rows:
        raise CliError(f"--report-only: no <configuration>/seed-<s>/metrics.json under {out}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["config", "seed", "fold", "n_test_pairs",
                                                "n_test_patients", *COLUMNS, *EXTRA_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ablation.csv", buffer.getvalue())
    old = out / "ablation.md"
    header = old.read_text().split("\n\n", 2) if old.is_file() else []
    text = "\n\n".join(header[:2]) if len(header) >= 2 else "# Table I ablation"
    # The kept header names the seeds and minutes of the invocation that wrote it last; runs made
    # by several invocations (or processes) are reported together, so name every seed found.
    seeds = sorted({int(r["seed"]) for r in rows})
    text = re.sub(r"seeds [\d, ]+; [\d.]+ min\)",
                  f"seeds {', '.join(map(str, seeds))}; rebuilt by --report-only)", text, count=1)
    atomic_write_text(old, table_markdown(rows, text))
    print(old.read_text(), end="")
    return 0


def write_outputs(out: Path, rows: list[dict[str, Any]], preset: str, seeds: list[int],
                  args: argparse.Namespace, seconds: float) -> None:
    """Write ``ablation.csv`` and ``ablation.md`` (after every run, so partial results show)."""
    buffer = io.StringIO()
    fields = ["config", "seed", "fold", "n_test_pairs", "n_test_patients", *COLUMNS, *EXTRA_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ablation.csv", buffer.getvalue())
    if args.split == "site":
        split = "leave-one-site-out"
    else:
        split = f"patient {args.folds}-fold" if args.folds else "patient 80/20"
    header = (
        f"# Table I ablation ({preset} preset, {'phantom' if not args.data else args.data}, "
        f"{split} split, seeds {', '.join(map(str, seeds))}; {seconds / 60:.1f} min)\n\n"
        "Ensemble test metrics, mean +/- sd over seeds and folds (n runs). Sensitivity and "
        "specificity are macro averages over the five stages; AUC is the one-vs-rest macro AUC."
    )
    atomic_write_text(out / "ablation.md", table_markdown(rows, header))


if __name__ == "__main__":
    sys.exit(run(main))
