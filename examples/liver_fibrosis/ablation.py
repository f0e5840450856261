"""``ablation``: the paper's Table I on the same splits and seeds, with paired differences (:data:`CONTRASTS`)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.liver_fibrosis import options
from examples.liver_fibrosis.cli import CliError, run, say
from mmfusion.files import atomic_write_text
from mmfusion.liver.presets import TABLE_I, TABLE_I_ROWS

#: Table I rows: name -> ModelConfig changes (from the registry). The last one is the paper's model.
CONFIGS: dict[str, dict[str, Any]] = {
    **{TABLE_I_ROWS[suffix]: dict(changes) for suffix, changes in TABLE_I.items()},
    TABLE_I_ROWS[""]: dict(fusion="attention", loss="multi"),
}
#: The paper's Table I (accuracy %, AUC x 100, sensitivity, specificity), for reference only.
PAPER_TABLE_I = {
    "US": (55.10, 89.86, 0.56, 0.69), "SWE": (52.42, 91.37, 0.97, 0.68),
    "US+SWE+late+single": (61.32, 91.77, 0.76, 0.84), "US+SWE+late+multi": (62.45, 91.93, 0.82, 0.85),
    "US+SWE+att+single": (73.86, 93.85, 0.83, 0.87), "US+SWE+att+multi": (76.21, 95.01, 0.97, 0.86),
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
#: Settings each configuration sets itself.
OWN = frozenset({"out", "modalities", "fusion", "loss", "seed"})


def build_parser(preset: str = "quick") -> Any:
    """The ``ablation`` command line (the settings default to ``preset``'s)."""
    p = options.command_parser("python -m examples.liver_fibrosis.ablation",
                       "Run the six Table I configurations on the same splits and seeds.")
    p.add_argument("--out", default="runs/ablation", help="output folder")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--configs", type=str | None, default=None,
                   help=f"subset of {', '.join(CONFIGS)} (comma-separated)")
    options.flag(p, "report_only", False, "rewrite ablation.csv and ablation.md from the run folders in --out; train nothing")
    options.add_settings(p, options.preset_config(preset, {}), skip=OWN)
    return p


def run_rows(name: str, seed: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """CSV rows of one run (one per fold, or per held-out site, named)."""
    parts = metrics["folds"] if "folds" in metrics else [metrics]
    labels = (metrics.get("sites") or list(range(len(parts)))) if "folds" in metrics else [""]
    rows = []
    for label, m in zip(labels, parts, strict=True):
        patients, branches = m.get("patients", {}), m.get("branches", {})
        rows.append({"config": name, "seed": seed, "fold": label, "n_test_pairs": m["n_test_pairs"],
                     "n_test_patients": m["n_test_patients"], **{c: m["ensemble"].get(c) for c in COLUMNS},
                     "patient_accuracy": patients.get("accuracy"), "patient_auc_macro": patients.get("auc_macro"),
                     **{f"branch_{b}": branches.get(b, {}).get("accuracy") for b in ("us", "swe", "joint")}})
    return rows


def _mean_sd(rows: list[dict[str, Any]], key: str, scale: float, digits: int) -> str:
    values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    if not values:
        return "n/a"
    text = f"{float(np.mean(values)) * scale:.{digits}f}"
    return text if len(values) == 1 else f"{text} +/- {float(np.std(values, ddof=1)) * scale:.{digits}f}"


def paired_differences(rows: list[dict[str, Any]], metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per :data:`CONTRASTS` entry: per-(seed, fold) differences in ``metric``, mean and 95 % t-interval."""
    from mmfusion.metrics import paired_t_interval

    value = {(r["config"], r["seed"], r["fold"]): r[metric] for r in rows if r.get(metric) not in (None, "")}
    out = []
    for claim, config, versus in CONTRASTS:
        keys = sorted({(s, f) for c, s, f in value if c == config} & {(s, f) for c, s, f in value if c == versus})
        if keys:
            a, b = ([float(value[(name, *k)]) for k in keys] for name in (config, versus))
            t = paired_t_interval(a, b)
            out.append({"claim": claim, "config": config, "versus": versus, "n": len(keys), "mean": t["mean"],
                        "differences": [x - y for x, y in zip(a, b, strict=True)],
                        "low": math.nan if t["lower"] is None else t["lower"],
                        "high": math.nan if t["upper"] is None else t["upper"]})
    return out


def table_markdown(rows: list[dict[str, Any]], header: str) -> str:
    """``ablation.md``: Table I (mean +/- sd), per patient and branch, paired differences, the paper's numbers."""
    lines = [header, "", "| Experimental settings | Accuracy (%) | AUC (x100) | Sensitivity | Specificity "
             "| QWK | n |", "|---|---|---|---|---|---|---|"]
    present = [(name, [r for r in rows if r["config"] == name]) for name in CONFIGS]
    present = [(name, mine) for name, mine in present if mine]
    for name, mine in present:
        cells = [_mean_sd(mine, k, s, 2) for k, s in (("accuracy", 100), ("auc_macro", 100),
                 ("sensitivity_macro", 1), ("specificity_macro", 1), ("qwk", 1))]
        lines.append(f"| {'*' * (name == 'US+SWE+att+multi')}{name} | {' | '.join(cells)} | {len(mine)} |")
    lines += ["", "Per patient (the mean of each patient's view probabilities) and per branch "
              "(accuracy %; a branch is one head of the ensemble):", "",
              "| Experimental settings | Patient accuracy (%) | Patient AUC (x100) | US branch | "
              "SWE branch | joint branch |", "|---|---|---|---|---|---|"]
    for name, mine in present:
        lines.append(f"| {name} | " + " | ".join(_mean_sd(mine, k, 100, 1) for k in EXTRA_COLUMNS) + " |")
    lines += ["", "Paired differences (configuration minus the one compared, same split and seed; "
              "points of accuracy % and of AUC x 100; 95 % t-interval over the pairs):", "",
              "| claim | configuration | versus | accuracy: per pair | mean [95 % CI] | "
              "AUC: mean [95 % CI] | n |", "|---|---|---|---|---|---|---|"]
    auc = {(d["config"], d["versus"]): d for d in paired_differences(rows, "auc_macro")}

    def ci(d: dict[str, Any] | None) -> str:
        return f"{100 * d['mean']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]" if d else "n/a"

    for d in paired_differences(rows, "accuracy"):
        lines.append(f"| {d['claim']} | {d['config']} | {d['versus']} | "
                     f"{', '.join(f'{100 * x:+.1f}' for x in d['differences'])} | {ci(d)} | "
                     f"{ci(auc.get((d['config'], d['versus'])))} | {d['n']} |")
    lines += ["", "For reference, the paper's Table I (one image-level split, one seed; its data are "
              "private, so these numbers are not comparable with the phantom's):", "",
              "| Experimental settings | Accuracy (%) | AUC (x100) | Sensitivity | Specificity |",
              "|---|---|---|---|---|"]
    lines += [f"| {'*' * (name == 'US+SWE+att+multi')}{name} | {acc:.2f} | {auc_:.2f} | {sens:.2f} | {spec:.2f} |"
              for name, (acc, auc_, sens, spec) in PAPER_TABLE_I.items()]
    return "\n".join(lines) + "\n"


def write_csv(out: Path, rows: list[dict[str, Any]]) -> None:
    """``ablation.csv``: one row per run (and fold)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["config", "seed", "fold", "n_test_pairs", "n_test_patients",
                                                *COLUMNS, *EXTRA_COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "ablation.csv", buffer.getvalue())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.ablation``."""
    argv = options.normalise(argv)
    args = build_parser(str(options.named(argv).get("preset") or "quick")).parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        return report_only(out)
    try:
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    except ValueError:
        raise CliError(f"--seeds: expected comma-separated ints, got {args.seeds!r}") from None
    names = list(CONFIGS) if not args.configs else [c.strip() for c in args.configs.split(",")]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not seeds:
        raise CliError(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    settings = options.settings_of(args, OWN)
    base = options.preset_config(args.preset, {k: v for k, v in settings.items() if k not in ("resume", "overwrite")})
    from examples.liver_fibrosis.runner import run_training, weights_check

    weights_check(base)  # every configuration shares the weights and frozen stages
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    split = ("leave-one-site-out" if base.run.split == "site" else
             f"patient {base.run.folds}-fold" if base.run.folds else "patient 80/20")
    for seed in seeds:
        for name in names:
            run_dir = out / name / f"seed-{seed}"
            changes = dict(CONFIGS[name])
            if len(changes.get("modalities", base.model.modalities)) == 1:
                changes["modality_dropout"] = 0.0
            cfg = base.replace(**changes, seed=seed, out=str(run_dir), resume=settings["resume"],
                               overwrite=settings["overwrite"])
            options.validate(cfg)
            say(f"--- {name}, seed {seed} -> {run_dir}")
            rows += run_rows(name, seed, run_training(cfg))
            write_csv(out, rows)
            header = (f"# Table I ablation ({base.preset} preset, {base.run.data or 'phantom'}, {split} "
                      f"split, seeds {', '.join(map(str, seeds))}; {(time.perf_counter() - started) / 60:.1f} "
                      "min)\n\nEnsemble test metrics, mean +/- sd over seeds and folds (n runs). Sensitivity "
                      "and specificity are macro averages over the five stages; AUC is the one-vs-rest "
                      "macro AUC.")
            atomic_write_text(out / "ablation.md", table_markdown(rows, header))
    say(f"ablation done in {(time.perf_counter() - started) / 60:.1f} min: {out / 'ablation.md'}")
    print((out / "ablation.md").read_text(), end="")
    return 0


def report_only(out: Path) -> int:
    """Rewrite ``ablation.csv`` and ``ablation.md`` from ``<out>/<configuration>/seed-<s>/metrics.json``."""
    rows: list[dict[str, Any]] = []
    for name in CONFIGS:
        for path in sorted((out / name).glob("seed-*/metrics.json"), key=lambda p: int(p.parent.name[5:])):
            rows += run_rows(name, int(path.parent.name[5:]), json.loads(path.read_text()))
    if not rows:
        raise CliError(f"--report-only: no <configuration>/seed-<s>/metrics.json under {out}")
    write_csv(out, rows)
    old = out / "ablation.md"
    header = old.read_text().split("\n\n", 2) if old.is_file() else []
    text = "\n\n".join(header[:2]) if len(header) >= 2 else "# Table I ablation"
    seeds = ", ".join(map(str, sorted({int(r["seed"]) for r in rows})))
    text = re.sub(r"seeds [\d, ]+; [\d.]+ min\)", f"seeds {seeds}; rebuilt by --report-only)", text, count=1)
    atomic_write_text(old, table_markdown(rows, text))
    print(old.read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
