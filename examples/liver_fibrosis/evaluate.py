"""Evaluate a trained run on any manifest: the same report as training writes.

    python -m examples.liver_fibrosis.evaluate --checkpoint runs/liver_fibrosis --data other.csv
    python -m examples.liver_fibrosis.evaluate --checkpoint runs/liver_fibrosis --missing-modality-report

Without ``--data`` the run's own held-out split is evaluated again (same manifest, same seed).
Writes ``metrics.json``, ``confusion_matrix.png``, ``roc.png`` into ``--out`` (default:
``<checkpoint>/eval-<manifest name>``), holding the run folder's lock (the ``--out`` folder's
when it lies outside the run), so that a training run into that folder cannot start meanwhile. ``--missing-modality-report`` also evaluates the model with
only US and only SWE given (the other modality absent, as in a clinic without SWE; issue 7) and
writes ``missing_modality.md`` and ``missing_modality.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.runs import (
    check_free,
    holding_lock,
    load_manifest,
    load_run,
    remove,
    require,
    resolve_device,
    swe_crop,
    write_json,
)
from mmfusion.data import SeededSampler
from mmfusion.data.pipeline import eval_dataset
from mmfusion.files import atomic_write_text
from mmfusion.metrics import format_interval

OUTPUTS = ("metrics.json", "confusion_matrix.png", "roc.png", "reliability", "missing_modality.md",
           "missing_modality.json")


def build_parser() -> argparse.ArgumentParser:
    """The ``evaluate`` command line."""
    p = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.evaluate",
        description="Evaluate a trained liver fibrosis run on a manifest of image pairs.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="folder of a training run")
    p.add_argument("--data", metavar="MANIFEST.csv",
                   help="pairs to evaluate (default: the run's own test split)")
    p.add_argument("--out", metavar="DIR", help="output folder (default <checkpoint>/eval-<name>)")
    p.add_argument("--modalities-present", metavar="M[,M]",
                   help="give the model only these modalities (e.g. us: SWE missing)")
    p.add_argument("--missing-modality-report", action="store_true",
                   help="also evaluate with US only and SWE only; write missing_modality.md")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--n-bootstrap", type=int, default=None, help="default: the run's")
    p.add_argument("--overwrite", action="store_true", help="replace a previous evaluation in --out")
    return p


def _present_sets(cfg: RunConfig, args: argparse.Namespace) -> list[tuple[str, ...]]:
    mods = tuple(cfg.model.modalities)
    if args.modalities_present:
        chosen = tuple(m.strip() for m in args.modalities_present.split(",") if m.strip())
        unknown = [m for m in chosen if m not in mods]
        if unknown or not chosen:
            raise CliError(f"--modalities-present: the model knows {list(mods)}, got {list(chosen)}")
        sets = [chosen]
    else:
        sets = [mods]
    if args.missing_modality_report:
        if len(mods) < 2:
            raise CliError("--missing-modality-report: the model has one modality; nothing to drop")
        sets = [mods] + [(m,) for m in mods]
    return sets


def missing_modality_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per set of given modalities."""
    lines = [
        "| modalities given | pairs | accuracy [95% CI] | macro AUC [95% CI] | QWK | AUC F>=2 | AUC F4 |",
        "|---|---|---|---|---|---|---|",
    ]

    def cell(report: dict[str, Any], key: str) -> str:
        value = report.get(key)
        text = "n/a" if value is None else f"{value:.3f}"
        ci = report.get("ci") or {}
        if ci.get(key):
            text += " " + format_interval(ci[key], ci["level"], ci["n_bootstrap"])
        return text

    for name, metrics in results.items():
        e = metrics["ensemble"]
        lines.append(
            f"| {name} | {metrics['n_test_pairs']} | {cell(e, 'accuracy')} | {cell(e, 'auc_macro')} | "
            f"{cell(e, 'qwk')} | "
            f"{cell(e, 'auc_f2plus')} | {cell(e, 'auc_f4')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.evaluate``."""
    args = build_parser().parse_args(argv)
    require("matplotlib", "lightning")
    if args.batch_size < 1:
        raise CliError("--batch-size: expected >= 1")
    device = resolve_device(args.device)
    cfg, model = load_run(args.checkpoint, device)
    if args.data:
        eval_cfg = dataclasses.replace(cfg, run=cfg.run.replace(data=args.data))
        manifest = load_manifest(eval_cfg)
        name, split = Path(args.data).stem, f"all pairs of {args.data}"
    else:
        load_manifest(cfg, verify="exists")
        manifest, name, split = None, "test", f"{cfg.run.split} split (test part)"
    sets = _present_sets(cfg, args)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{name}"
    check_free(out, OUTPUTS, args.overwrite, "an evaluation")
    run_folder = Path(args.checkpoint)
    inside = out.resolve().is_relative_to(run_folder.resolve())
    with holding_lock(run_folder if inside else out):
        remove(out, check_free(out, OUTPUTS, args.overwrite, "an evaluation"))
        out.mkdir(parents=True, exist_ok=True)
        evaluate_sets(args, cfg, model, device, manifest, sets, name, split, out)
    say(f"wrote {out}")
    return 0


def evaluate_sets(args: argparse.Namespace, cfg: RunConfig, model: Any, device: Any, manifest: Any,
                  sets: list[tuple[str, ...]], name: str, split: str, out: Path) -> None:
    """Evaluate ``model`` with each set of given modalities; write the reports into ``out``."""
    from examples.liver_fibrosis.report import (
        metrics_document,
        modalities_label,
        summary_line,
        write_figures,
    )
    from examples.liver_fibrosis.runner import make_datamodule, make_module, make_trainer

    # The run's own precision and device type, so that its metrics.json is reproduced.
    run_cfg = dataclasses.replace(cfg, run=cfg.run.replace(device=str(device), devices=1, num_nodes=1,
                                                           compile=False, progress=None))
    if args.n_bootstrap is not None:
        run_cfg = dataclasses.replace(run_cfg, run=run_cfg.run.replace(n_bootstrap=args.n_bootstrap))
    module = make_module(run_cfg, model)
    results: dict[str, dict[str, Any]] = {}
    for present in sets:
        if manifest is not None:  # every pair of --data
            dataset = eval_dataset(manifest, present, cfg.model.image_size, crop=swe_crop(cfg))
        else:  # the run's own held-out part, rebuilt exactly as in training
            dm = make_datamodule(cfg, cfg.run.fold or 0, modalities=present)
            dm.setup("test")
            dataset = dm.test_set
            split = f"{dm.split.description} (test part)"
        loader = DataLoader(dataset, batch_size=args.batch_size,
                            sampler=SeededSampler(dataset, shuffle=False))
        make_trainer(run_cfg, out, epochs=1, test_only=True).test(module, dataloaders=loader, verbose=False)
        preds = module.predictions
        assert module.metrics is not None and preds is not None
        label = " + ".join(m.upper() for m in present)
        # Pairs with none of the given modalities (e.g. SWE asked for, SWE path empty) have no
        # image to predict from: they are counted and left out of the metrics, never scored.
        given = np.any([preds.available[m] for m in present], axis=0)
        kept = preds if given.all() else preds.subset(given)
        report = module.metrics if given.all() else module.report(kept)
        metrics = {**metrics_document(report, split, kept.available),
                   "modalities_present": list(present),
                   "n_pairs_without_given_modalities": int((~given).sum())}
        if not given.all():
            say(f"{label}: {int((~given).sum())} pair(s) have none of these modalities; left out")
        results[label] = metrics
        say(f"{modalities_label(present, metrics)}: {summary_line(metrics)}")
        if len(results) == 1:
            write_json(out / "metrics.json", metrics)
            write_figures(module.predictions, metrics, out)
    if args.missing_modality_report:
        write_json(out / "missing_modality.json", results)
        table = missing_modality_table(results)
        atomic_write_text(
            out / "missing_modality.md",
            f"# Missing modality: {args.checkpoint} on {split}\n\n"
            f"Model trained with modality dropout {cfg.model.modality_dropout}. A modality left out is "
            "replaced by the fusion's learned placeholder and its branch leaves the ensemble.\n\n"
            + table
        )
        print(table, end="")


if __name__ == "__main__":
    sys.exit(run(main))
