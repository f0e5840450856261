"""Training and evaluation loops (one epoch each), with the GPU speed defaults.

* Mixed precision: ``torch.autocast`` in bf16 (default on CUDA; no loss scaling needed) or fp16
  (with a :class:`torch.amp.GradScaler`); the losses compute their cross-entropy in float32.
* ``channels_last`` inputs when the model was converted to that memory format.
* Non-blocking host-to-device copies from pinned memory.
* Under DistributedDataParallel every trainable parameter takes part in every step (the training
  script sets the fusion's ``placeholders_in_graph``), so ``find_unused_parameters`` is never
  needed.

Evaluation returns every branch's probabilities, gathered over processes, in dataset order.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from examples.liver_fibrosis.checkpoint import unwrap
from examples.liver_fibrosis.distributed import DistInfo, all_reduce_sum, gather_objects

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    """How steps run: device, precision, memory format, progress bars.

    Attributes:
        info: Process/device information.
        amp: ``"bf16"``, ``"fp16"`` or ``"off"``.
        channels_last: Feed images in channels-last memory format.
        progress: Show tqdm bars.
        scaler: Gradient scaler (fp16 only).
    """

    info: DistInfo
    amp: str = "off"
    channels_last: bool = False
    progress: bool = False
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this runtime (a no-op with ``amp="off"``)."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.info.device.type, dtype=AMP_DTYPES[self.amp])


def move_batch(
    batch: Mapping[str, Any], modalities: Sequence[str], rt: Runtime
) -> tuple[dict[str, Tensor], Tensor]:
    """Images of ``modalities`` and labels of a loader batch, on the runtime's device."""
    fmt = torch.channels_last if rt.channels_last else torch.contiguous_format
    non_blocking = rt.info.device.type == "cuda"
    inputs = {
        m: batch[m].to(rt.info.device, non_blocking=non_blocking, memory_format=fmt)
        for m in modalities
    }
    labels = torch.as_tensor(batch["label"]).to(rt.info.device, non_blocking=non_blocking)
    return inputs, labels


def _progress(iterable: Iterable, rt: Runtime, **kwargs: Any) -> Iterable:
    if not rt.progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kwargs)


def train_epoch(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
    modalities: Sequence[str],
    desc: str = "train",
) -> dict[str, float]:
    """Train one epoch.

    Args:
        model: The (possibly DDP-wrapped / compiled) model, put in train mode here.
        loss_fn: :class:`mmfusion.EnsembleLoss`.
        loader: Training batches ``{modality: [B,3,H,W], "label": [B], ...}``.
        optimizer: The optimizer.
        rt: Runtime.
        modalities: Modalities fed to the model.
        desc: Progress-bar label.

    Returns:
        Mean loss and components over the epoch's pairs (all processes), ``pairs`` (total),
        ``seconds`` and ``pairs_per_s``.
    """
    model.train()
    sums: dict[str, Tensor] = {}  # kept on the device: no host sync per step
    pairs = 0
    start = time.perf_counter()
    for batch in _progress(loader, rt, desc=desc, unit="batch"):
        inputs, labels = move_batch(batch, modalities, rt)
        with rt.autocast():
            out = model(inputs)
            losses = loss_fn(out.logits, labels, out.features, out.available)
        total = losses.total
        optimizer.zero_grad(set_to_none=True)
        if rt.scaler is not None:
            rt.scaler.scale(total).backward()
            rt.scaler.step(optimizer)
            rt.scaler.update()
        else:
            total.backward()
            optimizer.step()
        n = int(labels.shape[0])
        pairs += n
        values = {"loss": losses.total, **losses.components}
        for name, value in values.items():
            term = value.detach().float() * n
            sums[name] = sums[name] + term if name in sums else term
    if rt.info.device.type == "cuda":
        torch.cuda.synchronize(rt.info.device)
    seconds = time.perf_counter() - start
    names = sorted(sums)
    reduced = all_reduce_sum([float(sums[k]) for k in names] + [float(pairs)], rt.info)
    total_pairs = reduced[-1]
    result = {k: v / max(total_pairs, 1.0) for k, v in zip(names, reduced[:-1], strict=True)}
    result.update(pairs=int(total_pairs), seconds=seconds, pairs_per_s=total_pairs / max(seconds, 1e-9))
    return result


@dataclass
class Predictions:
    """Evaluation outputs in dataset order.

    Attributes:
        probs: branch -> ``[N, K]`` float64 probabilities; ``"ensemble"`` is the model's combined
            prediction, the other keys are its branches (``"us"``, ``"swe"``, ``"joint"``).
        labels: ``[N]`` true stages.
        groups: ``[N]`` patient ids.
        indices: ``[N]`` dataset indices.
    """

    probs: dict[str, np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    indices: np.ndarray


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    rt: Runtime,
    modalities: Sequence[str],
    desc: str = "eval",
) -> Predictions:
    """Run the model over ``loader`` (this process's share) and gather everything on every rank.

    Args:
        model: The model (wrappers are removed; no DDP synchronisation in evaluation).
        loader: Batches with ``"label"``, ``"patient_id"`` and ``"index"``.
        rt: Runtime.
        modalities: Modalities given to the model (a subset simulates missing modalities).
        desc: Progress-bar label.

    Returns:
        :class:`Predictions`, sorted by dataset index, each sample once.
    """
    net = unwrap(model)
    net.eval()
    chunks: dict[str, list[np.ndarray]] = {}
    labels, groups, indices = [], [], []
    for batch in _progress(loader, rt, desc=desc, unit="batch"):
        inputs, y = move_batch(batch, modalities, rt)
        with rt.autocast():
            out = net(inputs)
        chunks.setdefault("ensemble", []).append(out.probs.float().cpu().numpy())
        for name, z in out.logits.items():
            chunks.setdefault(name, []).append(torch.softmax(z.float(), 1).cpu().numpy())
        labels.append(y.cpu().numpy())
        groups.extend(str(g) for g in batch["patient_id"])
        indices.append(torch.as_tensor(batch["index"]).cpu().numpy())
    local = {
        "probs": {k: np.concatenate(v).astype(np.float64) for k, v in chunks.items()},
        "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
        "groups": np.array(groups, dtype=object),
        "indices": np.concatenate(indices) if indices else np.zeros(0, np.int64),
    }
    parts = [p for p in gather_objects(local, rt.info) if len(p["indices"])]
    index = np.concatenate([p["indices"] for p in parts])
    order = np.argsort(index, kind="stable")
    keep = order[np.concatenate([[True], np.diff(index[order]) != 0])] if len(order) else order
    return Predictions(
        probs={k: np.concatenate([p["probs"][k] for p in parts])[keep] for k in parts[0]["probs"]},
        labels=np.concatenate([p["labels"] for p in parts])[keep],
        groups=np.concatenate([p["groups"] for p in parts])[keep],
        indices=index[keep],
    )
