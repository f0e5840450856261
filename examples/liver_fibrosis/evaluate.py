"""``evaluate``: a trained run on any manifest (default: its test split); ``--missing_modality_report``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.options import command_parser, flag, normalise
from mmfusion.files import atomic_write_text
from mmfusion.runs import remove_outputs

OUTPUTS = ("metrics.json", "confusion_matrix.png", "roc.png", "reliability", "missing_modality.md",
           "missing_modality.json")


def build_parser() -> Any:
    """The ``evaluate`` command line."""
    p = command_parser("python -m examples.liver_fibrosis.evaluate",
                       "Evaluate a trained liver fibrosis run on a manifest of image pairs.")
    p.add_argument("--checkpoint", required=True, help="folder of a training run")
    p.add_argument("--data", type=str | None, default=None, help="pairs to evaluate (default: the run's test split)")
    p.add_argument("--out", type=str | None, default=None, help="output folder (default <checkpoint>/eval-<name>)")
    p.add_argument("--modalities_present", type=str | None, default=None,
                   help="give the model only these modalities, M[,M] (e.g. us: SWE missing)")
    flag(p, "missing_modality_report", False, "also evaluate with US only and SWE only; write missing_modality.md")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch_size", type=int, default=32, help="pairs per batch")
    p.add_argument("--n_bootstrap", type=int | None, default=None, help="default: the run's")
    flag(p, "overwrite", False, "replace a previous evaluation in --out")
    return p


def missing_modality_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one row per set of given modalities."""
    from examples.liver_fibrosis.runner import metric_text

    lines = ["| modalities given | pairs | accuracy [95% CI] | macro AUC [95% CI] | QWK | AUC F>=2 | AUC F4 |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['n_test_pairs']} | "
              + " | ".join(metric_text(m["ensemble"], k) for k in ("accuracy", "auc_macro", "qwk", "auc_f2plus", "auc_f4"))
              + " |" for name, m in results.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.evaluate``."""
    args = build_parser().parse_args(normalise(argv))
    from examples.liver_fibrosis import runs  # torch: after parsing, so that --help is fast

    runs.require("matplotlib", "lightning")
    if args.batch_size < 1:
        raise CliError("--batch-size: expected >= 1")
    device = runs.resolve_device(args.device)
    cfg, model = runs.load_run(args.checkpoint, device)
    if args.data:
        manifest = runs.load_manifest(dataclasses.replace(cfg, run=cfg.run.replace(data=args.data)))
        name, split = Path(args.data).stem, f"all pairs of {args.data}"
    else:
        runs.load_manifest(cfg, verify="exists")
        manifest, name, split = None, "test", f"{cfg.run.split} split (test part)"
    mods = tuple(cfg.model.modalities)
    sets = [mods]
    if args.modalities_present:
        chosen = tuple(m.strip() for m in args.modalities_present.split(",") if m.strip())
        if not chosen or any(m not in mods for m in chosen):
            raise CliError(f"--modalities-present: the model knows {list(mods)}, got {list(chosen)}")
        sets = [chosen]
    if args.missing_modality_report:
        if len(mods) < 2:
            raise CliError("--missing-modality-report: the model has one modality; nothing to drop")
        sets = [mods] + [(m,) for m in mods]
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{name}"
    runs.check_free(out, OUTPUTS, args.overwrite, "an evaluation")
    inside = out.resolve().is_relative_to(Path(args.checkpoint).resolve())
    with runs.holding_lock(Path(args.checkpoint) if inside else out):
        remove_outputs(out, runs.check_free(out, OUTPUTS, args.overwrite, "an evaluation"))
        out.mkdir(parents=True, exist_ok=True)
        evaluate_sets(args, cfg, model, device, manifest, sets, split, out)
    say(f"wrote {out}")
    return 0


def evaluate_sets(args: Any, cfg: Any, model: Any, device: Any, manifest: Any,
                  sets: list[tuple[str, ...]], split: str, out: Path) -> None:
    """Evaluate ``model`` with each set of given modalities; write the reports into ``out``."""
    from torch.utils.data import DataLoader

    from examples.liver_fibrosis import runs
    from examples.liver_fibrosis.runner import (
        make_datamodule,
        make_module,
        make_trainer,
        metrics_document,
        modalities_label,
        summary_line,
        write_figures,
    )
    from mmfusion.data import SeededSampler
    from mmfusion.data.pipeline import eval_dataset

    # The run's own precision and device type, so that its metrics.json is reproduced.
    run_cfg = dataclasses.replace(cfg, run=cfg.run.replace(
        device=str(device), devices=1, num_nodes=1, compile=False, progress=None,
        n_bootstrap=cfg.run.n_bootstrap if args.n_bootstrap is None else args.n_bootstrap))
    module = make_module(run_cfg, model)
    results: dict[str, dict[str, Any]] = {}
    for present in sets:
        if manifest is not None:  # every pair of --data
            dataset = eval_dataset(manifest, present, cfg.model.image_size, crop=runs.swe_crop(cfg))
        else:  # the run's own held-out part, rebuilt exactly as in training
            dm = make_datamodule(cfg, cfg.run.fold or 0, modalities=present)
            dm.setup("test")
            dataset, split = dm.test_set, f"{dm.split.description} (test part)"
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=SeededSampler(dataset, shuffle=False))
        make_trainer(run_cfg, out, epochs=1, test_only=True).test(module, dataloaders=loader, verbose=False)
        preds = module.predictions
        # Pairs with none of the given modalities have no image to predict from: counted, left out.
        given = np.any([preds.available[m] for m in present], axis=0)
        kept = preds if given.all() else preds.subset(given)
        metrics = {**metrics_document(module.metrics if given.all() else module.report(kept), split, kept.available),
                   "modalities_present": list(present), "n_pairs_without_given_modalities": int((~given).sum())}
        label = " + ".join(m.upper() for m in present)
        if not given.all():
            say(f"{label}: {int((~given).sum())} pair(s) have none of these modalities; left out")
        results[label] = metrics
        say(f"{modalities_label(present, metrics)}: {summary_line(metrics)}")
        if len(results) == 1:
            runs.write_json(out / "metrics.json", metrics)
            write_figures(module.predictions, metrics, out)
    if args.missing_modality_report:
        runs.write_json(out / "missing_modality.json", results)
        table = missing_modality_table(results)
        atomic_write_text(out / "missing_modality.md",
                          f"# Missing modality: {args.checkpoint} on {split}\n\nModel trained with modality "
                          f"dropout {cfg.model.modality_dropout}. A modality left out is replaced by the "
                          "fusion's learned placeholder and its branch leaves the ensemble.\n\n" + table)
        print(table, end="")


if __name__ == "__main__":
    sys.exit(run(main))
