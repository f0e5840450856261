"""Train the liver fibrosis fusion network (paper section III.E) and evaluate it on held-out patients.

Run from the repository root::

    python -m examples.liver_fibrosis.train --out runs/liver_fibrosis            # phantom, default preset
    python -m examples.liver_fibrosis.train --data my.csv --preset paper --weights resnet50.safetensors
    torchrun --nproc_per_node=4 -m examples.liver_fibrosis.train --out runs/ddp    # data parallel

The run folder gets ``config.json``, ``log.jsonl`` (one line per epoch), ``metrics.json``,
``confusion_matrix.png``, ``roc.png``, ``attention/`` overlays and the checkpoint
(``model.safetensors``, ``checkpoint.json``, ``state/``). ``--resume`` continues from the last
completed epoch; a previous run is never overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from examples.liver_fibrosis import data as data_mod
from examples.liver_fibrosis.checkpoint import (
    COMMIT_FILE,
    MODEL_FILE,
    atomic_write_text,
    load_checkpoint,
    read_commit,
    save_checkpoint,
    unwrap,
)
from examples.liver_fibrosis.cli import CliError, run, say, warn
from examples.liver_fibrosis.config import (
    RESUME_FREE,
    TrainConfig,
    add_model_arguments,
    explicit_overrides,
    load_config,
    parse_modalities,
    preset_config,
    save_config,
    validate,
)
from examples.liver_fibrosis.data import is_phantom
from examples.liver_fibrosis.distributed import (
    DistInfo,
    barrier,
    broadcast_buffers,
    setup,
    teardown,
)
from examples.liver_fibrosis.engine import Runtime, predict, train_epoch
from examples.liver_fibrosis.model import build_model
from examples.liver_fibrosis.report import (
    metrics_from_predictions,
    summary_line,
    write_figures,
    write_json,
    write_overlays,
)
from mmfusion import FeatureFusion
from mmfusion.data import sample_seed

#: Files and folders a run writes; ``--overwrite`` removes exactly these.
RUN_OUTPUTS = (
    "config.json", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png", MODEL_FILE,
    COMMIT_FILE, "state", "attention", "missing_modality.md", "missing_modality.json",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.liver_fibrosis.train",
        description="Train the liver fibrosis fusion network (US + SWE) and evaluate it on "
                    "held-out patients.",
    )
    parser.add_argument("--out", help="run folder (default runs/liver_fibrosis)")
    parser.add_argument("--config", metavar="CONFIG.json",
                        help="rerun a saved config.json (command-line options still win)")
    parser.add_argument("--modalities", type=parse_modalities,
                        help="us, swe or us,swe (default)")
    parser.add_argument("--fusion", choices=["attention", "late"], help="default attention")
    parser.add_argument("--loss", choices=["multi", "single"], help="default multi")
    add_model_arguments(parser)
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue the run in --out from its last completed epoch")
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="replace a previous run in --out")
    return parser


def default_preset(requested: str | None) -> tuple[str, str]:
    """``(preset, reason)`` for a run whose ``--preset`` was not given."""
    if requested == "cpu":
        return "quick", "--device cpu was asked for"
    if torch.cuda.is_available():
        return "paper", f"CUDA is available ({torch.cuda.get_device_name(0)})"
    return "quick", "CUDA is not available, so the paper's ResNet-50 would take hours"


def resolve_config(args: argparse.Namespace, info_device: torch.device) -> TrainConfig:
    """Merge preset, saved configuration (``--config``/``--resume``) and command-line options."""
    overrides = explicit_overrides(args)
    out = Path(overrides.get("out", "runs/liver_fibrosis"))
    overrides["out"] = str(out)
    saved: TrainConfig | None = None
    if args.config:
        saved = load_config(args.config)
    elif args.resume and (out / "config.json").is_file():
        saved = load_config(out / "config.json")
    if saved is not None:
        base = saved.to_json()
        if args.resume:
            conflicts = {
                k: (base[k], v) for k, v in overrides.items()
                if k not in RESUME_FREE and k in base and base[k] != v
            }
            if conflicts:
                listed = "; ".join(f"{k}: saved {a!r}, asked {b!r}" for k, (a, b) in conflicts.items())
                raise CliError(
                    f"--resume: {out} was trained with other settings ({listed}); drop those "
                    "options to resume it, or start a new run with another --out"
                )
        cfg = TrainConfig.from_json({**base, **overrides, "resume": bool(args.resume),
                                     "overwrite": bool(args.overwrite)})
    else:
        cfg = new_config(args.preset, args.device, info_device, overrides)
    validate(cfg)
    return cfg


def new_config(
    preset: str | None, device_arg: str | None, device: torch.device, overrides: dict[str, Any]
) -> TrainConfig:
    """A fresh run's configuration: the preset (chosen by device when ``None``, and said so on
    rank 0), this device's speed defaults (bf16, channels_last and workers on CUDA), then the
    command line's ``overrides``."""
    if preset is None:
        preset, reason = default_preset(device_arg)
        if int(os.environ.get("RANK", "0")) == 0:
            say(f"preset: {preset} ({reason}; choose with --preset paper|quick)")
    cuda = device.type == "cuda"
    auto = {
        "amp": "bf16" if cuda else "off",
        "channels_last": cuda,
        "workers": 0 if not cuda else 4,
        "device": str(device),
    }
    return preset_config(preset, {**auto, **overrides})


def _taken(out: Path) -> list[str]:
    return sorted([name for name in RUN_OUTPUTS if (out / name).exists()]
                  + [p.name for p in out.glob("fold-*")])


def check_out(cfg: TrainConfig) -> Path:
    """Check that ``--out`` may be written (nothing is changed yet)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder; choose another --out")
    taken = _taken(out) if out.is_dir() else []
    if taken and not (cfg.resume or cfg.overwrite):
        raise CliError(
            f"--out: {out} already holds a run ({', '.join(taken[:4])}); pass --resume to "
            "continue it, --overwrite to replace it, or choose another --out"
        )
    return out


def clear_out(cfg: TrainConfig, out: Path, info: DistInfo) -> None:
    """With ``--overwrite`` (and not ``--resume``), remove the previous run's outputs."""
    if cfg.overwrite and not cfg.resume and info.is_main and out.is_dir():
        for name in _taken(out):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    barrier(info)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds third-party users of the global RNG
    torch.manual_seed(seed)


def weights_warning(cfg: TrainConfig) -> None:
    """Warn when an encoder starts from random weights, and say what that costs."""
    missing = [m for m in cfg.modalities if not cfg.weights.get(m)]
    if not missing:
        return
    frozen = (
        f" With --frozen-stages {cfg.frozen_stages}, random stem and stages are frozen: pass "
        "weights or use --frozen-stages 0." if cfg.frozen_stages else
        " Nothing is frozen (--frozen-stages 0), since random stages would learn nothing frozen."
    )
    warn(
        f"no ImageNet weights for the {'/'.join(missing)} encoder(s): they start from random "
        f"initialisation ({cfg.backbone}). The paper fine-tunes ImageNet ResNet-50s; from scratch "
        "a model needs more epochs and reaches lower accuracy on real images." + frozen + " "
        "Nothing is downloaded at run time: pass a local file with --weights PATH (or "
        "--weights-us/--weights-swe), e.g. a timm/torchvision state dict saved as .safetensors/.pth."
    )


def make_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam (fused on CUDA) over the trainable parameters and the epoch-wise scheduler."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    if cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cfg.epochs, eta_min=cfg.lr * 0.01
        )
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def train_one(
    cfg: TrainConfig, info: DistInfo, manifest: Any, split: data_mod.Split, out: Path
) -> dict[str, Any]:
    """Train one model on ``split.train`` and evaluate it on ``split.test``; write ``out``.

    Returns:
        The metrics dict (also written to ``out/metrics.json`` on rank 0).
    """
    out.mkdir(parents=True, exist_ok=True)
    loaders = data_mod.build_loaders(manifest, split, cfg, info)
    seed_everything(cfg.seed)
    model, loss_fn = build_model(**cfg.model_kwargs())
    model.to(info.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_optimizer(model, cfg, info.device)
    rt = Runtime(
        info, amp=cfg.amp, channels_last=cfg.channels_last,
        progress=bool(cfg.progress if cfg.progress is not None else sys.stderr.isatty()) and info.is_main,
        scaler=torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None,
    )
    start_epoch, log = 0, []
    commit = read_commit(out) if cfg.resume else None
    if commit is not None:
        commit = load_checkpoint(out, model, optimizer, scheduler, rt.scaler)
        start_epoch, log = int(commit["epoch"]), list(commit["extra"].get("log", []))
        if info.is_main:
            say(f"resuming {out} after epoch {start_epoch}/{cfg.epochs}")
    net: torch.nn.Module = model
    if info.enabled:
        # The fusion's placeholders get a (zero) gradient in every step, so DDP's reducer never
        # waits for one; find_unused_parameters (an extra graph walk per step) is not needed.
        for fusion in (m for m in model.modules() if isinstance(m, FeatureFusion)):
            fusion.placeholders_in_graph = True
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)
    if info.is_main:
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        n_all = sum(p.numel() for p in model.parameters())
        say(
            f"{out}: {len(split.train)} train / {len(split.test)} test pairs "
            f"({split.description}); model {n_all / 1e6:.1f} M parameters "
            f"({n_train / 1e6:.1f} M trainable, {n_all * 4 / 2**20:.0f} MiB fp32) on {info.device}"
            + (f" x {info.world_size} processes" if info.enabled else "")
        )
    epochs = range(start_epoch, cfg.epochs)
    bar = epochs
    if rt.progress:
        from tqdm.auto import tqdm

        bar = tqdm(epochs, desc="epochs", initial=start_epoch, total=cfg.epochs, dynamic_ncols=True)
    for epoch in bar:
        loaders.train_sampler.set_epoch(epoch)
        seed_everything(sample_seed(cfg.seed, epoch, 1_000_000 + info.rank))
        lr = optimizer.param_groups[0]["lr"]
        stats = train_epoch(net, loss_fn, loaders.train, optimizer, rt, cfg.modalities,
                            desc=f"epoch {epoch + 1}")
        # DDP copies rank 0's buffers (BatchNorm statistics) at the start of each forward only:
        # after the last step the ranks differ. Align them before evaluating and saving rank 0's.
        broadcast_buffers(model, info)
        scheduler.step()
        entry = {"epoch": epoch + 1, "lr": lr, **{k: round(v, 6) for k, v in stats.items()},
                 "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs:
            # Logged for curves only: the final model is the last epoch's, never selected on test.
            preds = predict(net, loaders.test, rt, cfg.modalities, desc="test (log only)")
            entry["test_accuracy_log_only"] = round(
                float((preds.probs["ensemble"].argmax(1) == preds.labels).mean()), 4
            )
        log.append(entry)
        if info.is_main:
            save_checkpoint(out, model, optimizer, scheduler, epoch + 1, extra={"log": log},
                            metadata={"config": _config_metadata(cfg)}, scaler=rt.scaler)
            _write_log(out, log)
            say(_epoch_line(entry, cfg.epochs))
        barrier(info)
    if start_epoch >= cfg.epochs and info.is_main:
        say(f"{out}: all {cfg.epochs} epochs were already done; evaluating")
    preds = predict(net, loaders.test, rt, cfg.modalities, desc="test")
    metrics = metrics_from_predictions(preds, split.description, cfg.n_bootstrap, cfg.seed)
    if is_phantom(cfg):
        metrics["phantom"] = phantom_ceilings(metrics["ensemble"]["accuracy"])
    if info.is_main:
        write_json(out / "metrics.json", metrics)
        write_figures(preds, metrics, out)
        write_overlays(unwrap(net), loaders.test_dataset, preds, out, info.device)
        say(f"{out}: test {summary_line(metrics)}")
        if "phantom" in metrics:
            p = metrics["phantom"]
            say(f"phantom Bayes ceiling (per view) {p['bayes_ceiling_per_view']:.3f}: test "
                f"accuracy / ceiling = {p['accuracy_over_ceiling']:.2f}")
    barrier(info)
    return metrics


def _config_metadata(cfg: TrainConfig) -> str:
    return json.dumps(cfg.to_json())


def _write_log(out: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(out / "log.jsonl", "".join(json.dumps(e) + "\n" for e in log))


def _epoch_line(entry: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"loss {entry['loss']:.4f}"]
    parts += [f"{k} {v:.3f}" for k, v in entry.items() if k.startswith(("ce_", "consistency"))]
    parts += [f"lr {entry['lr']:.2e}", f"{entry['seconds']:.0f} s", f"{entry['pairs_per_s']:.1f} pairs/s"]
    if "test_accuracy_log_only" in entry:
        parts.append(f"test acc (log only) {entry['test_accuracy_log_only']:.3f}")
    return ", ".join(parts)


def summarise_folds(fold_metrics: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over folds of the headline metrics of the ensemble."""
    keys = ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro", "qwk",
            "auc_f2plus", "auc_f3plus", "auc_f4")
    summary: dict[str, Any] = {}
    for key in keys:
        values = [m["ensemble"][key] for m in fold_metrics if m["ensemble"].get(key) is not None]
        if values:
            summary[key] = {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1))
                            if len(values) > 1 else 0.0, "n": len(values)}
    return summary


def run_training(cfg: TrainConfig, info: DistInfo, *, quiet: bool = False) -> dict[str, Any]:
    """Check inputs, then train and evaluate one configuration (one split or K folds).

    Nothing in ``cfg.out`` is touched until the configuration, the model and the data are known
    to be valid.

    Args:
        cfg: The resolved configuration.
        info: Process information.
        quiet: Skip the no-weights warning (e.g. repeated by the ablation).

    Returns:
        The metrics (for K folds: ``{"folds": [...], "summary": {...}, "split": ...}``).
    """
    validate(cfg)
    out = check_out(cfg)
    barrier(info)  # every process has checked --out before any of them writes there
    build_model(**cfg.model_kwargs())  # fail fast on backbone/weights/freezing problems
    manifest = data_mod.load_manifest(cfg, info)
    splits = data_mod.make_splits(manifest, cfg)
    # Inputs are valid: only now touch the run folder.
    clear_out(cfg, out, info)
    if info.is_main:
        save_config(dataclasses.replace(cfg, resume=False, overwrite=False), out / "config.json")
        if not quiet:
            weights_warning(cfg)
    if not cfg.folds:
        metrics = train_one(cfg, info, manifest, splits[0], out)
    else:
        per_fold = []
        for split in splits:
            fold_cfg = dataclasses.replace(cfg, fold=int(split.name.split("-")[1]),
                                           out=str(out / split.name))
            if info.is_main:  # evaluate/predict read a fold's own config.json
                (out / split.name).mkdir(parents=True, exist_ok=True)
                save_config(dataclasses.replace(fold_cfg, resume=False, overwrite=False),
                            out / split.name / "config.json")
            per_fold.append(train_one(fold_cfg, info, manifest, split, out / split.name))
        metrics = {"folds": per_fold, "summary": summarise_folds(per_fold),
                   "split": f"patient {cfg.folds}-fold"}
        if info.is_main:
            write_json(out / "metrics.json", metrics)
            s = metrics["summary"]
            say(f"{out}: {cfg.folds}-fold accuracy {s['accuracy']['mean']:.3f} "
                f"+/- {s['accuracy']['sd']:.3f}")
    return metrics


def phantom_ceilings(accuracy: float) -> dict[str, float]:
    """The phantom's Bayes ceilings (:func:`mmfusion.liver.bayes_ceiling`) and accuracy / ceiling.

    The per-view ceiling is the one for a classifier that sees one image pair, like this model.
    """
    from mmfusion.liver import bayes_ceiling

    per_view = bayes_ceiling(per_view=True)
    return {
        "bayes_ceiling_per_view": per_view,
        "bayes_ceiling_per_patient": bayes_ceiling(),
        "accuracy_over_ceiling": accuracy / per_view,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m examples.liver_fibrosis.train``."""
    args = build_parser().parse_args(argv)
    info = setup(args.device or "auto")
    try:
        started = time.perf_counter()
        cfg = resolve_config(args, info.device)
        run_training(cfg, info)
        if info.is_main:
            say(f"done in {(time.perf_counter() - started) / 60:.1f} min; outputs in {cfg.out}")
        return 0
    finally:
        teardown()


if __name__ == "__main__":
    sys.exit(run(main))
