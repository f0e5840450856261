"""Train and evaluate one configuration on Lightning's Trainer (shared by train and ablation).

The loop, precision, DDP / multi-node, checkpointing and resume are Lightning's; this module only
maps a :class:`~examples.liver_fibrosis.options.RunConfig` onto a
:class:`~mmfusion.lightning.FusionModule`, a :class:`~mmfusion.lightning.FusionDataModule` and a
``Trainer``, and writes the run folder.

* Precision: ``--amp bf16`` -> ``"bf16-mixed"``, ``fp16`` -> ``"16-mixed"`` (loss scaling),
  ``off`` -> ``"32-true"`` (and TF32 off on CUDA, so "off" means fp32).
* Processes: under ``torchrun`` (or SLURM) Lightning's DDP strategy takes the launch's world;
  ``--devices``/``--num-nodes`` default to it. DDP runs without ``find_unused_parameters``.
* Resume: ``checkpoints/last.ckpt`` is written after every epoch, atomically
  (:class:`~examples.liver_fibrosis.checkpoint_io.AtomicCheckpointIO`: a kill mid-write leaves the
  previous epoch's file); ``--resume`` checks that it is complete, then continues from it, loaded
  with ``weights_only=True`` (no arbitrary unpickling).
* Validation: a validation loop runs only on a validation split (``--val-size``), never on the
  test patients.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from examples.liver_fibrosis.cli import CliError, say, warn
from examples.liver_fibrosis.options import RunConfig
from examples.liver_fibrosis.report import (
    metrics_document,
    summary_line,
    write_figures,
    write_overlays,
)
from examples.liver_fibrosis.runs import (  # noqa: F401 - resolve_device, swe_crop re-exported
    RUN_OUTPUTS,
    RunFolder,
    check_finite,
    check_free,
    global_rank,
    is_phantom,
    launch_world,
    load_manifest,
    manifest_path,
    prepare_phantom,
    resolve_device,
    save_run_model,
    swe_crop,
    write_json,
)
from mmfusion.files import atomic_write_text
from mmfusion.liver import METAVIR
from mmfusion.models import build_model

PRECISION = {"bf16": "bf16-mixed", "fp16": "16-mixed", "off": "32-true"}


def quiet_lightning() -> None:
    """Lightning's start-up banners and tips go; its warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # No validation split (--val-size 0): no validation loop, by design.
    warnings.filterwarnings("ignore", message=r".*validation_step.*but have no `val_dataloader`.*")


def make_trainer(cfg: RunConfig, out: Path, *, epochs: int, test_only: bool = False) -> Any:
    """A Lightning ``Trainer`` for ``cfg`` writing into ``out``."""
    quiet_lightning()
    r = cfg.run
    device = resolve_device(r.device)
    per_node, nodes = launch_world()
    devices, num_nodes = r.devices or per_node, r.num_nodes or nodes
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = r.amp != "off"
        torch.backends.cudnn.allow_tf32 = r.amp != "off"
    loggers: list[Any] = [CSVLogger(str(out), name="logs", version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(out), name="logs", version="tensorboard"))
    except ImportError:
        pass
    from examples.liver_fibrosis.checkpoint_io import AtomicCheckpointIO

    # One checkpoint, replaced after every epoch (atomically: temporary file, fsync, rename).
    callbacks = [] if test_only else [ModelCheckpoint(
        dirpath=str(out / "checkpoints"), filename="last", monitor=None, save_top_k=1,
        every_n_epochs=1, enable_version_counter=False)]
    progress = r.progress if r.progress is not None else sys.stderr.isatty()
    world = devices * num_nodes
    if world > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy: Any = DDPStrategy(find_unused_parameters=False)
    else:
        strategy = "auto"
    accelerator = device.type
    return pl.Trainer(
        accelerator=accelerator,
        devices=devices if world > 1 or device.index is None else [device.index],
        num_nodes=num_nodes,
        strategy=strategy,
        precision=PRECISION[r.amp],
        max_epochs=epochs,
        logger=False if test_only else loggers,
        callbacks=callbacks,
        enable_checkpointing=not test_only,
        enable_progress_bar=bool(progress),
        enable_model_summary=False,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=r.eval_every or 1,
        # A validation loop only on a validation split (--val-size): never on the test patients.
        limit_val_batches=1.0 if r.val_size and (r.eval_every or test_only) else 0,
        deterministic=False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
    )


def make_datamodule(cfg: RunConfig, fold: int = 0, modalities: tuple[str, ...] | None = None) -> Any:
    """The run's :class:`~mmfusion.lightning.FusionDataModule` (phantom generated per node);
    ``modalities`` gives the model only some of its modalities (evaluation without SWE)."""
    from mmfusion.lightning import FusionDataModule

    manifest = load_manifest(cfg) if cfg.run.data else None
    r = cfg.run
    cuda = resolve_device(r.device).type == "cuda"
    return FusionDataModule(
        manifest if manifest is not None else Path(r.phantom_dir) / "manifest.csv",
        modalities or cfg.model.modalities, cfg.model.image_size, cfg.training.batch_size,
        augment=cfg.training.augment, split=r.split, test_size=r.test_size, folds=r.folds, fold=fold,
        seed=r.seed, workers=r.workers, pin_memory=cuda, crop=swe_crop(cfg), val_size=r.val_size,
        prepare=None if manifest is not None else (lambda: prepare_phantom(cfg)),
        labels=METAVIR,
    )


def make_module(cfg: RunConfig, model: torch.nn.Module) -> Any:
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
    trainer.callbacks.append(EpochLog(out, cfg.training.epochs))
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    except (ValueError, FloatingPointError) as err:
        if str(err).startswith("non-finite loss"):  # FusionModule stops at the first one
            raise CliError(f"{' '.join(str(err).split())} (--lr {cfg.training.lr:g}); no model "
                           "was saved") from err
        if cfg.run.val_size and dm.split is not None and dm.val_set is None:  # the val split failed
            n = len({dm.manifest.rows[i].patient_id for i in dm.split.train_idx})
            raise CliError(f"--val-size {cfg.run.val_size}: no validation split of the {n} training "
                           f"patients (those --test-size {cfg.run.test_size} leaves) keeps every stage "
                           f"on both sides ({' '.join(str(err).split())}); lower --val-size, or pass "
                           "--val-size 0") from err
        raise
    check_finite(module.model, cfg)  # every rank: a diverged run stops everywhere, unsaved
    if cfg.run.val_size:  # temperature scaling, fitted on the validation patients only
        make_trainer(cfg, out, epochs=1, test_only=True).validate(module, datamodule=dm, verbose=False)
        assert module.predictions is not None
        temperatures = module.calibrate(module.predictions)
        if main:
            say(f"temperature scaling on {len(module.predictions)} validation pairs: "
                + ", ".join(f"{b} T={t:.2f}" for b, t in temperatures.items()))
    trainer.test(module, datamodule=dm, verbose=False)
    assert dm.split is not None and module.metrics is not None and module.predictions is not None
    metrics = metrics_document(module.metrics, dm.split.description, module.predictions.available)
    if is_phantom(cfg):
        from examples.liver_fibrosis.ceilings import phantom_ceilings

        metrics["phantom"] = phantom_ceilings(
            cfg.model.modalities, module.predictions.labels, metrics["ensemble"]["accuracy"],
            swe_input=cfg.run.swe_input,
            test_groups=None if cfg.run.split == "paper" else module.predictions.groups,
        )
    if main:  # the model is saved once it is evaluated (a model giving NaN never is)
        save_run_model(module.model, cfg, out)
        write_json(out / "metrics.json", metrics)
        write_figures(module.predictions, metrics, out)
        write_overlays(module.model, dm.test_set, module.predictions, out, trainer.strategy.root_device)
        say(f"{out}: test {summary_line(metrics)}")
        if "phantom" in metrics:
            p = metrics["phantom"]
            say(f"phantom Bayes ceiling (per view) {p['bayes_ceiling_per_view']:.3f}: test "
                f"accuracy / ceiling = {p['accuracy_over_ceiling']:.2f}")
    return metrics


def resume_checkpoint(ckpt: Path, main: bool) -> Path:
    """``ckpt`` once checked complete (it loads with ``weights_only=True``).

    Raises:
        CliError: It is truncated or damaged (rank 0 moves it aside, as ``<name>.corrupt-<time>``,
            so that it is never loaded again); no complete checkpoint is left to resume from.
    """
    from examples.liver_fibrosis.checkpoint_io import usable_checkpoint

    path, problem = usable_checkpoint(ckpt, quarantine=main)
    if path is None:
        raise CliError(f"--resume: {ckpt} is not a complete checkpoint ({problem}); no complete "
                       "checkpoint is left to resume from: pass --overwrite to train again from the "
                       "start")
    return path


class EpochLog(Callback):
    """Writes ``log.jsonl`` (one line per completed epoch, from the module's history, which the
    checkpoint carries over a resume) and prints one status line per epoch on rank 0."""

    def __init__(self, out: Path, epochs: int) -> None:
        self.out, self.epochs, self._said = out, epochs, 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._write(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._write(trainer, module)

    def _write(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        history = module.history
        atomic_write_text(self.out / "log.jsonl", "".join(json.dumps(e) + "\n" for e in history))
        if history and history[-1]["epoch"] != self._said:
            self._said = history[-1]["epoch"]
            say(_epoch_line(history[-1], self.epochs))


def _epoch_line(entry: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"loss {entry['loss']:.4f}"]
    parts += [f"{k} {v:.3f}" for k, v in entry.items() if k.startswith(("ce_", "consistency"))]
    parts += [f"lr {entry['lr']:.2e}", f"{entry['seconds']:.0f} s", f"{entry['pairs_per_s']:.1f} pairs/s"]
    return ", ".join(parts)


def summarise_folds(fold_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over folds (or held-out sites) of the ensemble's headline metrics."""
    keys = ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro", "qwk",
            "auc_f2plus", "auc_f3plus", "auc_f4")
    summary: dict[str, Any] = {}
    for key in keys:
        values = [m["ensemble"][key] for m in fold_metrics if m["ensemble"].get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)),
                            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                            "n": len(values)}
    return summary


def site_parts(cfg: RunConfig, manifest: Any) -> list[str]:
    """The split names (``site-<name>``, sites in sorted order) of a ``--split site`` run, which
    are also its sub-folders; ``manifest`` is the ``--data`` one, or None for the phantom.

    Raises:
        CliError: The manifest cannot be split by site (no site column, one site, a patient at two
            sites...), a site's name cannot be a folder name, or ``--fold`` is not a site's index.
    """
    from mmfusion.lightning import make_splits

    if manifest is None:  # the phantom: generated here, as its sites are needed before training
        if not manifest_path(cfg).is_file() and launch_world() != (1, 1):
            raise CliError("--split site: generate the phantom first (run once without "
                           "torchrun/SLURM), or pass --data")
        prepare_phantom(cfg)
        manifest = load_manifest(cfg)
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
    """Check everything, then train and evaluate one configuration (one split, K folds, or one
    model per held-out site).

    Nothing in ``--out`` is touched until the configuration, the model and the data are valid.
    """
    out = Path(cfg.run.out)
    check_free(out, RUN_OUTPUTS, cfg.run.resume or cfg.run.overwrite)
    model = build(cfg)  # fail fast on backbone / weights / freezing problems
    manifest = load_manifest(cfg) if cfg.run.data else None
    sites = cfg.run.split == "site"
    parts = (site_parts(cfg, manifest) if sites
             else [f"fold-{k}" for k in range(cfg.run.folds)])  # fmt: skip
    warn_absent_modalities(cfg, manifest)
    with RunFolder(cfg, main=global_rank() == 0):
        return _train_parts(cfg, out, parts, model)


def _train_parts(cfg: RunConfig, out: Path, parts: list[str], model: Any) -> dict[str, Any]:
    """Train the run (one model, or one per fold or held-out site) into ``out``."""
    main = global_rank() == 0
    sites = cfg.run.split == "site"
    if not parts:
        return train_one(cfg, out, model=model)  # folds and sites each build their own
    chosen = [cfg.run.fold] if cfg.run.fold is not None else list(range(len(parts)))
    per_part = []
    for k in chosen:
        part_out = out / parts[k]
        part_cfg = dataclasses.replace(cfg, run=cfg.run.replace(fold=k, out=str(part_out)))
        per_part.append(train_one(part_cfg, part_out, fold=k))
    summary = summarise_folds(per_part)
    if sites:
        names = [parts[k].removeprefix("site-") for k in chosen]
        metrics = {"folds": per_part, "sites": names, "summary": summary,
                   "split": f"leave-one-site-out, test sites {', '.join(names)}"}
        each = ", ".join(f"{name} {m['ensemble']['accuracy']:.3f}"
                         for name, m in zip(names, per_part, strict=True))
        line = (f"leave-one-site-out accuracy {summary['accuracy']['mean']:.3f} +/- "
                f"{summary['accuracy']['sd']:.3f} (test site {each})")
    else:
        metrics = {"folds": per_part, "summary": summary, "split": f"patient {cfg.run.folds}-fold"}
        line = (f"{cfg.run.folds}-fold accuracy {summary['accuracy']['mean']:.3f} +/- "
                f"{summary['accuracy']['sd']:.3f}")
    if main:
        write_json(out / "metrics.json", metrics)
        say(f"{out}: {line}")
    return metrics


def absent_modalities(cfg: RunConfig, manifest: Any) -> list[str]:
    """The model's modalities that no pair of the ``--data`` manifest has (an empty column)."""
    if manifest is None:  # the phantom has every modality
        return []
    return [m for m in cfg.model.modalities
            if not any(row.paths.get(m) is not None for row in manifest.rows)]


def warn_absent_modalities(cfg: RunConfig, manifest: Any) -> None:
    """Warn (rank 0) when a modality's column is empty in every row: its branch would train and
    be evaluated on the learned placeholder only."""
    absent = absent_modalities(cfg, manifest)
    if not absent or global_rank() != 0:
        return
    kept = [m for m in cfg.model.modalities if m not in absent]
    warn(f"--data: no pair of {cfg.run.data} has a {'/'.join(m.upper() for m in absent)} image "
         f"(the {', '.join(f'{m}_path' for m in absent)} column is empty): that branch sees only "
         f"the placeholder and its metrics are not measured; pass --modalities {','.join(kept)} "
         "to train without it")


def weights_check(cfg: RunConfig) -> None:
    """Frozen stages need real weights: refuse frozen random stages (every rank); warn about
    random encoders (rank 0)."""
    missing = [m for m in cfg.model.modalities if not cfg.run.weights.get(m)]
    if not missing:
        return
    if cfg.model.frozen_stages:
        raise CliError(
            f"--weights: the {'/'.join(missing)} encoder(s) would start from random weights with "
            f"{cfg.model.frozen_stages} frozen stage(s), which then learn nothing; pass --weights "
            "imagenet (or a local file), or --frozen-stages 0"
        )
    if global_rank() == 0:
        warn(f"no pretrained weights for the {'/'.join(missing)} encoder(s): they train from random "
             f"initialisation ({cfg.model.backbone}); pass --weights imagenet or a local file to "
             "start from ImageNet, as the paper does")
