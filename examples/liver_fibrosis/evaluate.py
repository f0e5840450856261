"""Evaluate a trained run on any manifest: the same report as training writes.

    python -m examples.liver_fibrosis.evaluate --checkpoint runs/liver_fibrosis --data other.csv
    python -m examples.liver_fibrosis.evaluate --checkpoint runs/liver_fibrosis --missing-modality-report

Without ``--data`` the run's own held-out split is evaluated again (same manifest, same seed).
Writes ``metrics.json``, ``confusion_matrix.png``, ``roc.png`` into ``--out`` (default:
``<checkpoint>/eval-<manifest name>``). ``--missing-modality-report`` also evaluates the model with
only US and only SWE given (the other modality absent, as in a clinic without SWE; issue 7) and
writes ``missing_modality.md`` and ``missing_modality.json``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from examples.liver_fibrosis import data as data_mod
from examples.liver_fibrosis.checkpoint import MODEL_FILE, load_model_weights
from examples.liver_fibrosis.cli import CliError, run, say
from examples.liver_fibrosis.config import TrainConfig, load_config
from examples.liver_fibrosis.distributed import DistInfo, resolve_device
from examples.liver_fibrosis.engine import Predictions, Runtime, predict
from examples.liver_fibrosis.model import build_model
from examples.liver_fibrosis.report import (
    metrics_from_predictions,
    summary_line,
    write_figures,
    write_json,
)
from mmfusion.data import SeededSampler

OUTPUTS = ("metrics.json", "confusion_matrix.png", "roc.png", "missing_modality.md",
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


def load_run(checkpoint: str | Path, device: torch.device) -> tuple[TrainConfig, torch.nn.Module]:
    """Rebuild the model of a run folder and load its weights (no ImageNet file needed).

    Raises:
        CliError: Not a run folder, or weights of another configuration.
    """
    folder = Path(checkpoint)
    if not folder.is_dir():
        raise CliError(f"--checkpoint: {folder} is not a folder; pass the --out folder of a training run")
    cfg = load_config(folder)
    if not (folder / MODEL_FILE).is_file():
        folds = sorted(folder.glob("fold-*"))
        hint = f" (a K-fold run: pass one fold, e.g. {folds[0]})" if folds else " (training unfinished?)"
        raise CliError(f"--checkpoint: {folder} holds no {MODEL_FILE}{hint}")
    kwargs = cfg.model_kwargs()
    kwargs["weights"] = {m: None for m in cfg.modalities}  # the checkpoint holds every weight
    torch.manual_seed(0)
    model, _ = build_model(**kwargs)
    load_model_weights(model, folder / MODEL_FILE, what="--checkpoint")
    model.to(device).eval()
    return cfg, model


def _present_sets(cfg: TrainConfig, args: argparse.Namespace) -> list[tuple[str, ...]]:
    mods = tuple(cfg.modalities)
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
        "| modalities given | accuracy [95% CI] | macro AUC [95% CI] | QWK | AUC F>=2 | AUC F4 |",
        "|---|---|---|---|---|---|",
    ]

    def cell(report: dict[str, Any], key: str) -> str:
        value = report.get(key)
        text = "n/a" if value is None else f"{value:.3f}"
        bounds = (report.get("ci") or {}).get(key) or {}
        if bounds.get("lower") is not None:
            text += f" [{bounds['lower']:.3f}, {bounds['upper']:.3f}]"
        return text

    for name, metrics in results.items():
        e = metrics["ensemble"]
        lines.append(
            f"| {name} | {cell(e, 'accuracy')} | {cell(e, 'auc_macro')} | {cell(e, 'qwk')} | "
            f"{cell(e, 'auc_f2plus')} | {cell(e, 'auc_f4')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.evaluate``."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    info = DistInfo(0, 1, 0, device)
    cfg, model = load_run(args.checkpoint, device)
    if args.batch_size < 1:
        raise CliError("--batch-size: expected >= 1")
    if args.data:
        eval_cfg = TrainConfig.from_json({**cfg.to_json(), "data": args.data})
        manifest = data_mod.load_manifest(eval_cfg, info)
        name, split = Path(args.data).stem, f"all pairs of {args.data}"
    else:
        manifest = data_mod.load_manifest(cfg, info, verify="exists")
        splits = data_mod.make_splits(manifest, cfg)
        manifest, name, split = splits[0].test, "test", f"{splits[0].description} (test part)"
    sets = _present_sets(cfg, args)
    out = Path(args.out) if args.out else Path(args.checkpoint) / f"eval-{name}"
    taken = [n for n in OUTPUTS if (out / n).exists()]
    if taken and not args.overwrite:
        raise CliError(f"--out: {out} already holds an evaluation ({', '.join(taken)}); pass "
                       "--overwrite to replace it or choose another --out")
    for n in taken:
        (out / n).unlink()
    shutil.rmtree(out / "by_modalities", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    dataset = data_mod.eval_dataset(manifest, cfg)
    sampler = SeededSampler(dataset, shuffle=False)
    loader = data_mod.make_loader(dataset, sampler, args.batch_size,
                                  TrainConfig.from_json({**cfg.to_json(), "workers": 0}), info, False)
    rt = Runtime(info, amp="bf16" if device.type == "cuda" else "off",
                 progress=sys.stderr.isatty())
    n_boot = cfg.n_bootstrap if args.n_bootstrap is None else args.n_bootstrap
    results: dict[str, dict[str, Any]] = {}
    first: Predictions | None = None
    for present in sets:
        preds = predict(model, loader, rt, present, desc="+".join(present))
        label = " + ".join(m.upper() for m in present)
        metrics = metrics_from_predictions(preds, split, n_boot, cfg.seed)
        metrics["modalities_present"] = list(present)
        results[label] = metrics
        say(f"{label}: {summary_line(metrics)}")
        if first is None:
            first = preds
            write_json(out / "metrics.json", metrics)
            write_figures(preds, metrics, out)
    if args.missing_modality_report:
        write_json(out / "missing_modality.json", results)
        table = missing_modality_table(results)
        (out / "missing_modality.md").write_text(
            f"# Missing modality: {args.checkpoint} on {split}\n\n"
            f"Model trained with modality dropout {cfg.modality_dropout}. A modality left out is "
            "replaced by the fusion's learned placeholder and its branch leaves the ensemble.\n\n"
            + table
        )
        print(table, end="")
    say(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
