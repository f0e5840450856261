"""Checkpoints without pickle, written so that a kill mid-write never corrupts the last good one.

A run folder holds:

* ``model.safetensors`` - the model weights of the last completed epoch (what ``evaluate`` and
  ``predict`` load, together with ``config.json``);
* ``checkpoint.json`` - the commit record of the training state: epoch, optimizer hyper-parameters,
  scheduler state, the fp16 loss scale, how the random generators are seeded, and the name of the
  state folder below;
* ``state/epoch-NNNN/`` - ``model.safetensors`` and ``train_state.safetensors`` (optimizer
  moments) of that epoch.

The random-generator state is derived, not stored: training reseeds Python, NumPy and torch at the
start of every epoch from ``(seed, epoch, rank)`` and draws each sample's augmentation from its own
seed, so a resumed run draws exactly what an uninterrupted one would.

Every file is written to a temporary name and renamed into place (:func:`os.replace` is atomic on
POSIX and Windows). The epoch folder is complete before ``checkpoint.json`` points at it, and older
epoch folders are deleted only afterwards, so at any moment ``checkpoint.json`` names a complete
state. Nothing is pickled: tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from examples.liver_fibrosis.cli import CliError

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
COMMIT_FILE = "checkpoint.json"
FORMAT = "mmfusion-liver-fibrosis-checkpoint/1"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Save tensors as safetensors via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=dict(metadata or {}))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``model`` with ``torch.compile``/DDP wrappers stripped from the names."""
    inner = unwrap(model)
    return {k: v for k, v in inner.state_dict().items()}


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def load_model_weights(model: nn.Module, path: Path, what: str = "checkpoint") -> dict[str, str]:
    """Load ``model.safetensors`` into ``model``; raise a one-line error on any mismatch.

    Returns:
        The file's metadata.

    Raises:
        CliError: The file is missing, unreadable, or belongs to another model configuration.
    """
    if not path.is_file():
        raise CliError(f"{what}: no model weights at {path}; pass the folder of a finished run")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise CliError(f"{what}: {path} is not a readable safetensors file ({err})") from err
    target = unwrap(model)
    expected = target.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape)
    )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k}: file {tuple(tensors[k].shape)}, "
                f"model {tuple(expected[k].shape)})"
            )
        raise CliError(
            f"{what}: {path} was saved from a different model configuration ({'; '.join(parts)} "
            "tensors); use the config.json saved beside it, unchanged"
        )
    target.load_state_dict(tensors, strict=True)
    return metadata


# ----------------------------------------------------------------------------- training state


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, per_param in state["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in state["param_groups"]]
    return {"param_groups": groups, "scalars": scalars}, tensors


def _optimizer_from_files(meta: dict[str, Any], tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    epoch: int,
    extra: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Save the state after ``epoch`` completed epochs (1-based), atomically (see module doc).

    Args:
        run_dir: The run folder.
        model: The (possibly wrapped) model.
        optimizer: Its optimizer.
        scheduler: Its learning-rate scheduler, or ``None``.
        epoch: Number of completed epochs.
        extra: More JSON-able state (e.g. the epoch log) stored in the commit record.
        metadata: String metadata stored in the model file (e.g. the configuration).
        scaler: The fp16 loss scaler, whose scale is saved with the state, or ``None``.

    No random-generator state is saved (see the module docstring: it is derived).
    """
    run_dir = Path(run_dir)
    state_dir = run_dir / "state" / f"epoch-{epoch:04d}"
    weights = model_state(model)
    meta = {"format": FORMAT, "epoch": str(epoch), **dict(metadata or {})}
    atomic_save_tensors(weights, state_dir / MODEL_FILE, meta)
    opt_meta, opt_tensors = _optimizer_to_files(optimizer)
    atomic_save_tensors(opt_tensors, state_dir / STATE_FILE, {"format": FORMAT})
    commit = {
        "format": FORMAT,
        "epoch": epoch,
        "state_dir": str(state_dir.relative_to(run_dir)),
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": "derived: every generator is reseeded from (seed, epoch, rank) at each epoch start",
        "extra": dict(extra or {}),
    }
    atomic_write_text(run_dir / COMMIT_FILE, json.dumps(commit) + "\n")
    # The commit is done; now publish the weights for evaluate/predict and drop older states.
    _publish(state_dir / MODEL_FILE, run_dir / MODEL_FILE)
    for old in (run_dir / "state").glob("epoch-*"):
        if old != state_dir:
            shutil.rmtree(old, ignore_errors=True)


def _publish(source: Path, target: Path) -> None:
    """Make ``target`` a copy of ``source`` atomically (a hard link where possible)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def read_commit(run_dir: Path) -> dict[str, Any] | None:
    """The commit record of ``run_dir``, or ``None`` if it has none."""
    path = Path(run_dir) / COMMIT_FILE
    if not path.is_file():
        return None
    try:
        commit = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CliError(f"--resume: {path} is unreadable ({err}); start again with --overwrite") from err
    if commit.get("format") != FORMAT:
        raise CliError(f"--resume: {path} is not a checkpoint of this example")
    return commit


def load_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and fp16 loss-scaler states from ``run_dir``.

    Returns:
        The commit record (``epoch``, ``extra``, ...).

    Raises:
        CliError: No checkpoint, or one from a different configuration.
    """
    commit = read_commit(run_dir)
    if commit is None:
        raise CliError(f"--resume: {run_dir} holds no checkpoint.json; drop --resume to start afresh")
    state_dir = Path(run_dir) / commit["state_dir"]
    load_model_weights(model, state_dir / MODEL_FILE, what="--resume")
    try:
        tensors = load_file(str(state_dir / STATE_FILE))
    except (SafetensorError, OSError) as err:
        raise CliError(f"--resume: {state_dir / STATE_FILE} is unreadable ({err})") from err
    opt_state = _optimizer_from_files(commit["optimizer"], tensors)
    try:  # load_state_dict moves each moment to its parameter's device and dtype
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError) as err:
        raise CliError(f"--resume: the optimizer state does not fit this model ({err})") from err
    if scheduler is not None and commit.get("scheduler") is not None:
        scheduler.load_state_dict(commit["scheduler"])
    if scaler is not None and commit.get("scaler") is not None:
        scaler.load_state_dict(commit["scaler"])
    return commit
