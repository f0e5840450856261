"""FLOP counting with :class:`torch.utils.flop_counter.FlopCounterMode` and the GPU peak table.

FLOPs are counted by PyTorch's dispatcher-level counter on the eager model (no hand-written
formula): one training step (forward + :class:`~mmfusion.EnsembleLoss` + backward; the optimizer
update is elementwise and not counted) and one inference forward. The counter counts the matrix
products and convolutions only (2 FLOPs per multiply-add), which is the usual convention for
"model FLOPs".

The peak table holds the dense (no structured sparsity) BF16 tensor-core peak of a few data-centre
GPUs, from NVIDIA's datasheets, which print the "with sparsity" figure: dense is half of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class PeakEntry:
    """One row of the peak table.

    Attributes:
        must_contain: Substrings that ``torch.cuda.get_device_name()`` must all contain.
        must_not_contain: Substrings that rule the row out.
        tflops: Dense BF16 tensor-core peak in TFLOP/s, or ``None`` for "known, not tabulated".
        source: Where the figure comes from.
    """

    must_contain: tuple[str, ...]
    must_not_contain: tuple[str, ...]
    tflops: float | None
    source: str


_H100_SHEET = "NVIDIA H100 Tensor Core GPU datasheet"
_H200_SHEET = "NVIDIA H200 Tensor Core GPU datasheet"
_A100_SHEET = "NVIDIA A100 Tensor Core GPU datasheet"

PEAK_TABLE: tuple[PeakEntry, ...] = (
    # NVL variants have their own (lower) clocks and power limits: not tabulated, fraction null.
    PeakEntry(("NVL",), (), None, "NVL variants are not tabulated"),
    PeakEntry(
        ("H200",), (), 989.4,
        f"{_H200_SHEET}: BF16 Tensor Core 1,979 TFLOPS with sparsity (H200 SXM) / 2 = dense",
    ),
    PeakEntry(
        ("H100", "PCIE"), (), 756.0,
        f"{_H100_SHEET}: BF16 Tensor Core 1,513 TFLOPS with sparsity (H100 PCIe) / 2 = dense",
    ),
    PeakEntry(
        ("H100",), ("PCIE",), 989.4,
        f"{_H100_SHEET}: BF16 Tensor Core 1,979 TFLOPS with sparsity (H100 SXM) / 2 = dense",
    ),
    PeakEntry(
        ("A100",), (), 312.0,
        f"{_A100_SHEET}: BF16 Tensor Core 624 TFLOPS with sparsity / 2 = dense",
    ),
)


def peak_bf16_tflops(device_name: str | None) -> tuple[float | None, str]:
    """Look up the dense BF16 peak of a GPU by its ``torch.cuda.get_device_name()``.

    Args:
        device_name: The CUDA device name (``"NVIDIA H100 80GB HBM3"``, ``"NVIDIA H100 PCIe"``,
            ``"NVIDIA H200"``, ...), or ``None`` for a CPU.

    Returns:
        ``(tflops, source)``; ``tflops`` is ``None`` for a CPU or an unknown device, and the
        achieved fraction of peak is then not reported.

    Example:
        >>> peak_bf16_tflops("NVIDIA H100 PCIe")[0]
        756.0
        >>> peak_bf16_tflops("NVIDIA GeForce RTX 4090")[0] is None
        True
    """
    if not device_name:
        return None, "no peak for a CPU"
    name = device_name.upper()
    for entry in PEAK_TABLE:
        if all(s in name for s in entry.must_contain) and not any(
            s in name for s in entry.must_not_contain
        ):
            return entry.tflops, entry.source
    return None, f"{device_name!r} is not in the peak table"


def count_train_flops(
    model: nn.Module,
    loss_fn: nn.Module,
    inputs: Mapping[str, Tensor],
    target: Tensor,
) -> int:
    """FLOPs of one training step's forward, loss and backward, in the model's current state.

    The model is used as it is (train mode, ``frozen_no_grad`` and ``requires_grad`` flags as
    set by the caller), so the count is what that configuration executes. Gradients are cleared
    afterwards.

    Args:
        model: A :class:`~mmfusion.MultiModalClassifier` in train mode.
        loss_fn: Its :class:`~mmfusion.EnsembleLoss`.
        inputs: modality -> ``[B, 3, H, W]`` batch.
        target: ``[B]`` class labels.

    Returns:
        Total FLOPs counted.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(inputs)
        loss = loss_fn(out.logits, target, out.features, out.available).total
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def count_inference_flops(model: nn.Module, inputs: Mapping[str, Tensor]) -> int:
    """FLOPs of one inference forward (eval mode, ``torch.inference_mode``).

    Args:
        model: A :class:`~mmfusion.MultiModalClassifier`; it is put in eval mode and the
            previous mode is restored.
        inputs: modality -> ``[B, 3, H, W]`` batch.

    Returns:
        Total FLOPs counted.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            model(inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
