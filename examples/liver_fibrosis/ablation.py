"""The paper's Table I ablation: six configurations on the same patient split(s) and seeds.

    python -m examples.liver_fibrosis.ablation --out runs/ablation                 # quick preset on CPU
    python -m examples.liver_fibrosis.ablation --out runs/ablation --seeds 0,1,2   # mean +/- sd
    python -m examples.liver_fibrosis.ablation --out runs/ablation --folds 5

Configurations (paper Table I): US; SWE; US+SWE+late+single; US+SWE+late+multi;
US+SWE+att+single; US+SWE+att+multi (the paper's model). Every configuration sees the same splits:
a split depends only on the manifest and the seed. Each run is a normal training run folder
(``<out>/<configuration>/seed-<s>``); ``ablation.csv`` has one row per run (and fold),
``ablation.md`` the Table I layout with mean +/- sd over seeds and folds.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Sequence
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
from mmfusion.models import TABLE_I, TABLE_I_ROWS

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

COLUMNS = ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro", "qwk",
           "auc_f2plus", "auc_f3plus", "auc_f4")


def build_parser() -> argparse.ArgumentParser:
    """The ``ablation`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.ablation",
        description="Run the six Table I configurations on the same splits and seeds.",
    )
    p.add_argument("--out", default="runs/ablation", help="output folder (default runs/ablation)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--configs", help=f"subset of {', '.join(CONFIGS)} (comma-separated)")
    add_settings_arguments(p, skip=frozenset({"out", "modalities", "fusion", "loss", "seed"}))
    return p


def run_rows(name: str, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows of one run (one per fold for K-fold runs)."""
    parts = metrics["folds"] if "folds" in metrics else [metrics]
    rows = []
    for k, m in enumerate(parts):
        e = m["ensemble"]
        row = {"config": name, "seed": seed, "fold": k if "folds" in metrics else "",
               "n_test_pairs": m["n_test_pairs"], "n_test_patients": m["n_test_patients"]}
        row.update({c: e.get(c) for c in COLUMNS})
        rows.append(row)
    return rows


def _mean_sd(values: list[float], scale: float, digits: int) -> str:
    if not values:
        return "n/a"
    mean = float(np.mean(values)) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +/- {float(np.std(values, ddof=1)) * scale:.{digits}f}"


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

        def col(key: str, mine: list[dict[str, Any]] = mine) -> list[float]:
            return [float(r[key]) for r in mine if r[key] not in (None, "")]

        star = "*" if name == "US+SWE+att+multi" else ""
        lines.append(
            f"| {star}{name} | {_mean_sd(col('accuracy'), 100, 2)} | "
            f"{_mean_sd(col('auc_macro'), 100, 2)} | {_mean_sd(col('sensitivity_macro'), 1, 2)} | "
            f"{_mean_sd(col('specificity_macro'), 1, 2)} | {_mean_sd(col('qwk'), 1, 2)} | "
            f"{len(mine)} |"
        )
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


def write_outputs(out: Path, rows: list[dict[str, Any]], preset: str, seeds: list[int],
                  args: argparse.Namespace, seconds: float) -> None:
    """Write ``ablation.csv`` and ``ablation.md`` (after every run, so partial results show)."""
    buffer = io.StringIO()
    fields = ["config", "seed", "fold", "n_test_pairs", "n_test_patients", *COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ablation.csv", buffer.getvalue())
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
