"""Activation memory of a training step, counted with autograd's saved-tensor hooks.

What autograd keeps for the backward pass is most of a training step's memory beyond weights,
gradients and optimizer state, and it is what "frozen stages under ``no_grad``" saves. It is
counted here with :func:`torch.autograd.graph.saved_tensors_hooks`, on any device (the CPU
included): every tensor saved during forward + loss is recorded by its storage, so views of one
storage count once, and parameters (which exist anyway) are left out. Counting at two batch sizes
separates the part that grows with the batch (bytes per pair) from the part that does not (e.g.
bf16 copies of the weights under autocast).

This is a count of saved tensors, not a measurement of a device's peak memory: kernels' workspaces,
the allocator's caching and temporaries freed during the forward are not in it, and CPU and CUDA
autocast cast slightly different operator lists.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn


def saved_bytes(
    model: nn.Module,
    loss_fn: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor,
    *,
    bf16: bool = False,
) -> int:
    """Bytes of the non-parameter tensors autograd saves in one training forward + loss.

    Args:
        model: A :class:`~mmfusion.MultiModalClassifier`, configured as the caller wants (train
            mode, ``frozen_no_grad`` flags).
        loss_fn: Its :class:`~mmfusion.EnsembleLoss`.
        inputs: modality -> ``[B, 3, H, W]`` batch.
        target: ``[B]`` labels.
        bf16: Run under ``torch.autocast(dtype=torch.bfloat16)`` on the inputs' device.

    Returns:
        Total bytes of the distinct storages saved for backward (no backward is run).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[tuple[str, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            key = (str(t.device), storage.data_ptr())
            storages[key] = max(storages.get(key, 0), storage.nbytes())
        return t

    device = next(iter(inputs.values())).device
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    )
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = model(inputs)
        loss_fn(out.logits, target, out.features, out.available).total.detach()
    return sum(storages.values())


def per_pair(
    model: nn.Module,
    loss_fn: nn.Module,
    batches: tuple[tuple[Mapping[str, Tensor], Tensor], tuple[Mapping[str, Tensor], Tensor]],
    *,
    bf16: bool = False,
) -> dict[str, Any]:
    """Saved bytes at two batch sizes, split into per-pair and fixed parts.

    Args:
        model: As for :func:`saved_bytes`.
        loss_fn: As for :func:`saved_bytes`.
        batches: Two ``(inputs, target)`` batches of different sizes.
        bf16: As for :func:`saved_bytes`.

    Returns:
        ``{"batch_sizes", "saved_mb", "mb_per_pair", "fixed_mb"}`` (MB = 10^6 bytes).
    """
    (x1, t1), (x2, t2) = batches
    b1, b2 = int(t1.shape[0]), int(t2.shape[0])
    if b1 == b2:
        raise ValueError(f"batches: expected two different batch sizes, got {b1} twice")
    s1 = saved_bytes(model, loss_fn, x1, t1, bf16=bf16)
    s2 = saved_bytes(model, loss_fn, x2, t2, bf16=bf16)
    slope = (s2 - s1) / (b2 - b1)
    return {
        "batch_sizes": [b1, b2],
        "saved_mb": [s1 / 1e6, s2 / 1e6],
        "mb_per_pair": slope / 1e6,
        "fixed_mb": (s1 - slope * b1) / 1e6,
    }
