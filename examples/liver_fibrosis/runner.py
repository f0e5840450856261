"""Train and evaluate one configuration on Lightning's Trainer; what a run reports."""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from examples.liver_fibrosis import runs
from examples.liver_fibrosis.cli import CliError, say, warn
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.runs import save_run_model
from mmfusion.lightning.checkpoints import AtomicCheckpointIO, EpochLog, check_checkpoint
from mmfusion.liver import METAVIR, STAGE_NAMES
from mmfusion.metrics import format_interval
from mmfusion.models import build_model
from mmfusion.plots import plot_confusion_matrix, plot_examples, plot_reliability, plot_roc
from mmfusion.runs import summarise_runs

PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed", "off": "32-true"}


def resume_checkpoint(ckpt: Path, main: bool) -> Path:
    """``ckpt`` once it loads; else rank 0 moves it aside and the resume is refused."""
    try:
        return check_checkpoint(ckpt, move_aside=main)
    except ValueError as err:
        raise CliError(f"--resume: {err}; no complete checkpoint is left to resume from: pass "
                       "--overwrite to train again from the start") from err


def make_trainer(cfg: RunConfig, out: Path, *, epochs: int, test_only: bool = False) -> Any:
    """A Lightning ``Trainer`` for ``cfg`` writing into ``out`` (banners and tips silenced)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (r".*does not have many workers.*", r".*smaller than the logging interval.*",
                    r".*isinstance\(treespec, LeafSpec\).*", r".*validation_step.*but have no `val_dataloader`.*"):
        warnings.filterwarnings("ignore", message=message)
    r = cfg.run
    device = runs.resolve_device(r.device)
    per_node, nodes = runs.launch_world()
    devices, num_nodes = r.devices or per_node, r.num_nodes or nodes
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = r.amp != "off"
    loggers = [CSVLogger(str(out), name="logs", version="")] + (  # TensorBoard where installed
        [TensorBoardLogger(str(out), name="logs", version="tensorboard")] if find_spec("tensorboard") else [])
    world = devices * num_nodes
    return pl.Trainer(
        accelerator=device.type, devices=devices if world > 1 or device.index is None else [device.index],
        num_nodes=num_nodes, strategy=DDPStrategy(find_unused_parameters=False) if world > 1 else "auto",
        precision=PRECISION[r.amp], max_epochs=epochs, logger=False if test_only else loggers,
        callbacks=[] if test_only else [ModelCheckpoint(  # one checkpoint, replaced every epoch
            dirpath=str(out / "checkpoints"), filename="last", monitor=None, save_top_k=1,
            every_n_epochs=1, enable_version_counter=False)],
        enable_checkpointing=not test_only,
        enable_progress_bar=bool(r.progress if r.progress is not None else sys.stderr.isatty()),
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=r.eval_every or 1,
        limit_val_batches=1.0 if r.val_size and (r.eval_every or test_only) else 0,
        deterministic=False, default_root_dir=str(out), plugins=[AtomicCheckpointIO()])


def make_datamodule(cfg: RunConfig, fold: int = 0, modalities: tuple[str, ...] | None = None) -> Any:
    """The run's :class:`~mmfusion.lightning.FusionDataModule`, optionally with some modalities only."""
    from mmfusion.lightning import FusionDataModule

    manifest, r = runs.load_manifest(cfg) if cfg.run.data else None, cfg.run
    return FusionDataModule(
        manifest if manifest is not None else Path(r.phantom_dir) / "manifest.csv",
        modalities or cfg.model.modalities, cfg.model.image_size, cfg.training.batch_size,
        augment=cfg.training.augment, split=r.split, test_size=r.test_size, folds=r.folds, fold=fold,
        seed=r.seed, workers=r.workers, pin_memory=runs.resolve_device(r.device).type == "cuda",
        crop=runs.swe_crop(cfg), val_size=r.val_size, labels=METAVIR,
        prepare=None if manifest is not None else (lambda: runs.prepare_phantom(cfg)))


def make_module(cfg: RunConfig, model: torch.nn.Module) -> Any:
    """The :class:`~mmfusion.lightning.FusionModule` of ``cfg`` around ``model``."""
    from mmfusion.lightning import FusionModule

    if cfg.run.compile:
        model.compile()
    return FusionModule(model, training=cfg.training, seed=cfg.run.seed, labels=METAVIR,
                        n_bootstrap=cfg.run.n_bootstrap, channels_last=cfg.run.channels_last)


def build(cfg: RunConfig) -> Any:
    """The model of ``cfg`` (seeded), with clear errors for weights problems."""
    torch.manual_seed(cfg.run.seed)
    try:
        return build_model(cfg.model, weights=dict(cfg.run.weights) or None)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise CliError(f"--weights: {' '.join(str(err).split())}") from err


def train_one(cfg: RunConfig, out: Path, fold: int = 0, model: Any = None) -> dict[str, Any]:
    """Train one model and evaluate it on its held-out patients; write ``out``."""
    dm = make_datamodule(cfg, fold)
    model = build(cfg) if model is None else model  # a fresh, seeded build of cfg
    module = make_module(cfg, model)
    trainer = make_trainer(cfg, out, epochs=cfg.training.epochs)
    main = trainer.is_global_zero
    ckpt = out / "checkpoints" / "last.ckpt"
    resume = str(resume_checkpoint(ckpt, main)) if cfg.run.resume and ckpt.is_file() else None
    if main:
        n_all = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        say(f"{out}: model {n_all / 1e6:.1f} M parameters ({n_train / 1e6:.1f} M trainable, "
            f"{n_all * 4 / 2**20:.0f} MiB fp32) on {trainer.strategy.root_device}"
            + (f" x {trainer.world_size} processes" if trainer.world_size > 1 else "")
            + (f"; resuming from {ckpt}" if resume else ""))
    trainer.callbacks.append(EpochLog(out, cfg.training.epochs, say=say))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except (ValueError, FloatingPointError) as err:
        if str(err).startswith("non-finite loss"):  # FusionModule stops at the first one
            raise CliError(f"{' '.join(str(err).split())} (--lr {cfg.training.lr:g}); no model was saved") from err
        if cfg.run.val_size and dm.split is not None and dm.val_set is None:  # the val split failed
            n = len({dm.manifest.rows[i].patient_id for i in dm.split.train_idx})
            raise CliError(f"--val-size {cfg.run.val_size}: no validation split of the {n} training "
                           f"patients (those --test-size {cfg.run.test_size} leaves) keeps every stage "
                           f"on both sides ({' '.join(str(err).split())}); lower --val-size, or pass "
                           "--val-size 0") from err
        raise
    runs.check_finite(module.model, cfg)  # every rank: a diverged run stops everywhere, unsaved
    if cfg.run.val_size:  # temperature scaling, fitted on the validation patients only
        make_trainer(cfg, out, epochs=1, test_only=True).validate(module, datamodule=dm, verbose=False)
        temperatures = module.calibrate(module.predictions)
        if main:
            say(f"temperature scaling on {len(module.predictions)} validation pairs: "
                + ", ".join(f"{b} T={t:.2f}" for b, t in temperatures.items()))
    trainer.test(module, datamodule=dm, verbose=False)
    preds = module.predictions
    metrics = metrics_document(module.metrics, dm.split.description, preds.available)
    if not cfg.run.data:  # the phantom: its Bayes ceilings for these modalities and test mix
        from mmfusion.liver import phantom_ceilings

        metrics["phantom"] = phantom_ceilings(
            cfg.model.modalities, preds.labels, metrics["ensemble"]["accuracy"], swe_input=cfg.run.swe_input,
            test_groups=None if cfg.run.split == "paper" else preds.groups)
    if main:  # the model is saved once it is evaluated (a model giving NaN never is)
        save_run_model(module.model, cfg, out)
        runs.write_json(out / "metrics.json", metrics)
        write_figures(preds, metrics, out)
        plot_examples(module.model, dm.test_set, preds, out / "attention", STAGE_NAMES, *runs.MEAN_STD,
                      device=trainer.strategy.root_device)
        say(f"{out}: test {summary_line(metrics)}")
        if "phantom" in metrics:
            p = metrics["phantom"]
            say(f"phantom Bayes ceiling (per view) {p['bayes_ceiling_per_view']:.3f}: test "
                f"accuracy / ceiling = {p['accuracy_over_ceiling']:.2f}")
    return metrics


def metrics_document(metrics: Mapping[str, Any], split: str,
                     available: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``metrics.json`` from ``FusionModule.metrics``; a modality no pair had is marked ``not_measured``."""
    document: dict[str, Any] = {k: v for k, v in metrics.items() if k not in ("n_pairs", "n_patients")}
    if available is not None:
        counts = {m: int(np.asarray(v, dtype=bool).sum()) for m, v in available.items()}
        document["n_test_pairs_with"] = counts
        absent = {m: f"no evaluated pair has a {m.upper()} image: the {m} branch saw only the "
                     "placeholder" for m, n in counts.items() if n == 0}
        if absent:
            for section in ("branches", "calibration"):
                document[section] = {b: {"not_measured": absent[b]} if b in absent else r
                                     for b, r in document.get(section, {}).items()}
            document["not_measured"] = absent
    return {**document, "n_test_pairs": metrics["n_pairs"], "n_test_patients": metrics["n_patients"],
            "split": split}


def modalities_label(present: Sequence[str], metrics: Mapping[str, Any]) -> str:
    """``"US + SWE"``, or ``"US (SWE absent from every pair)"`` when no pair had a SWE image."""
    absent = set(metrics.get("not_measured") or ())
    missing = [m.upper() for m in present if m in absent]
    label = " + ".join(m.upper() for m in present if m not in absent) or "none"
    return label + (f" ({', '.join(missing)} absent from every pair)" if missing else "")


def write_figures(preds: Any, metrics: Mapping[str, Any], out: Path) -> list[Path]:
    """``confusion_matrix.png``, ``roc.png`` and ``reliability/<branch>.png`` (measured branches)."""
    names = list(STAGE_NAMES)
    paths = [plot_confusion_matrix(metrics["ensemble"]["confusion_matrix"], names,
                                   out / "confusion_matrix.png", title="Confusion matrix (test)"),
             plot_roc(preds.probs["ensemble"], preds.labels, names, out / "roc.png",
                      title="ROC curves, one-vs-rest (test)")]
    not_measured = metrics.get("not_measured") or {}
    return paths + [plot_reliability(probs, preds.labels, out / "reliability" / f"{branch}.png",
                                     title=f"Reliability, {branch} (test)")
                    for branch, probs in preds.probs.items() if branch not in not_measured]


def metric_text(e: Mapping[str, Any], key: str) -> str:
    """``e[key]`` with three decimals and its interval, if any (``n/a`` if not measured)."""
    ci = e.get("ci") or {}
    text = "n/a" if e.get(key) is None else f"{e[key]:.3f}"
    return text + (" " + format_interval(ci[key], ci["level"], ci["n_bootstrap"]) if ci.get(key) else "")


def summary_line(metrics: Mapping[str, Any]) -> str:
    """One line: accuracy and macro AUC with intervals, QWK, pairs and patients."""
    e, absent = metrics["ensemble"], metrics.get("not_measured") or {}
    note = f"; {'/'.join(m.upper() for m in absent)} absent from every pair (branch not measured)" if absent else ""
    return (f"accuracy {metric_text(e, 'accuracy')}, macro AUC {metric_text(e, 'auc_macro')}, QWK "
            f"{'n/a' if e['qwk'] is None else format(e['qwk'], '.3f')} on {metrics['n_test_pairs']} pairs / "
            f"{metrics['n_test_patients']} patients{note}")


def site_parts(cfg: RunConfig, manifest: Any) -> list[str]:
    """The ``site-<name>`` sub-folders of a ``--split site`` run (``manifest``: None for the phantom)."""
    from mmfusion.lightning import make_splits

    if manifest is None:  # the phantom: generated here, as its sites are needed before training
        if not runs.manifest_path(cfg).is_file() and runs.launch_world() != (1, 1):
            raise CliError("--split site: generate the phantom first (run once without torchrun/SLURM), or pass --data")
        runs.prepare_phantom(cfg)
        manifest = runs.load_manifest(cfg)
    try:
        names = [split.name for split in make_splits(manifest, "site")]
    except ValueError as err:
        raise CliError(f"--split site: {' '.join(str(err).split())}") from err
    bad = [name.removeprefix("site-") for name in names if not re.fullmatch(r"site-[\w.-]+", name)]
    if bad:
        raise CliError(f"--split site: site name(s) {bad} cannot name a folder (site-<name>); use "
                       "letters, digits, '-', '_' and '.' in the site column")
    if cfg.run.fold is not None and cfg.run.fold >= len(names):
        raise CliError(f"--fold: expected 0 <= I < {len(names)} (the sites "
                       f"{', '.join(n.removeprefix('site-') for n in names)}, in order)")
    return names


def run_training(cfg: RunConfig) -> dict[str, Any]:
    """Check everything, then train and evaluate: one split, K folds, or one model per held-out site."""
    out = Path(cfg.run.out)
    runs.check_free(out, runs.RUN_OUTPUTS, cfg.run.resume or cfg.run.overwrite)
    model = build(cfg)  # fail fast on backbone / weights / freezing problems
    manifest = runs.load_manifest(cfg) if cfg.run.data else None
    parts = site_parts(cfg, manifest) if cfg.run.split == "site" else [f"fold-{k}" for k in range(cfg.run.folds)]
    absent = [m for m in cfg.model.modalities
              if manifest is not None and not any(row.paths.get(m) is not None for row in manifest.rows)]
    if absent and runs.global_rank() == 0:  # that branch trains and is evaluated on the placeholder only
        warn(f"--data: no pair of {cfg.run.data} has a {'/'.join(m.upper() for m in absent)} image (the "
             f"{', '.join(f'{m}_path' for m in absent)} column is empty): that branch sees only the "
             f"placeholder and its metrics are not measured; pass --modalities "
             f"{','.join(m for m in cfg.model.modalities if m not in absent)} to train without it")
    with runs.run_folder(cfg, main=runs.global_rank() == 0):
        if not parts:
            return train_one(cfg, out, model=model)  # folds and sites each build their own
        chosen = [cfg.run.fold] if cfg.run.fold is not None else list(range(len(parts)))
        per_part = [train_one(dataclasses.replace(cfg, run=cfg.run.replace(fold=k, out=str(out / parts[k]))),
                              out / parts[k], fold=k) for k in chosen]
        summary = summarise_runs(per_part, ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro",
                                                "qwk", "auc_f2plus", "auc_f3plus", "auc_f4"))
        if cfg.run.split == "site":
            names = [parts[k].removeprefix("site-") for k in chosen]
            metrics = {"folds": per_part, "sites": names, "summary": summary,
                       "split": f"leave-one-site-out, test sites {', '.join(names)}"}
            each = ", ".join(f"{n} {m['ensemble']['accuracy']:.3f}" for n, m in zip(names, per_part, strict=True))
            line = f"leave-one-site-out accuracy {{}} (test site {each})"
        else:
            metrics = {"folds": per_part, "summary": summary, "split": f"patient {cfg.run.folds}-fold"}
            line = f"{cfg.run.folds}-fold accuracy {{}}"
        if runs.global_rank() == 0:
            runs.write_json(out / "metrics.json", metrics)
            say(f"{out}: " + line.format(f"{summary['accuracy']['mean']:.3f} +/- {summary['accuracy']['sd']:.3f}"))
        return metrics


def weights_check(cfg: RunConfig) -> None:
    """Frozen stages need real weights: refuse frozen random stages; warn about random encoders."""
    missing = [m for m in cfg.model.modalities if not cfg.run.weights.get(m)]
    if missing and cfg.model.frozen_stages:
        raise CliError(f"--weights: the {'/'.join(missing)} encoder(s) would start from random weights with "
                       f"{cfg.model.frozen_stages} frozen stage(s), which then learn nothing; pass --weights "
                       "imagenet (or a local file), or --frozen-stages 0")
    if missing and runs.global_rank() == 0:
        warn(f"no pretrained weights for the {'/'.join(missing)} encoder(s): they train from random "
             f"initialisation ({cfg.model.backbone}); pass --weights imagenet or a local file to "
             "start from ImageNet, as the paper does")
