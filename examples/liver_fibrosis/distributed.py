"""Data-parallel training under ``torchrun``: process group, device, sampling, gathering.

``torchrun --nproc_per_node=N -m examples.liver_fibrosis.train ...`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on GPUs, gloo on CPU) and picks
``cuda:LOCAL_RANK``. Without torchrun everything degrades to one process. Only rank 0 writes files.

The sampler is :class:`mmfusion.data.SeededSampler`, for one process or many: torch's
:class:`~torch.utils.data.DistributedSampler` (permutation seeded by ``(seed, epoch)``, padded to a
multiple of the world size, dealt to the ranks) that yields a per-sample augmentation seed with
every index, so that augmentation does not depend on worker processes or on where a run was
resumed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from examples.liver_fibrosis.cli import CliError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands.

    Attributes:
        rank: Global rank (0 without torchrun).
        world_size: Number of processes (1 without torchrun).
        local_rank: Rank on this machine.
        device: The torch device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device; fail clearly without CUDA."""
    if requested == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise CliError(f"--device: unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CliError(
                f"--device {requested}: CUDA is not available on this machine (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu"
            )
        index = device.index if device.index is not None else local_rank
        if index >= torch.cuda.device_count():
            raise CliError(
                f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise CliError(f"--device: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def setup(requested_device: str) -> DistInfo:
    """Join the process group when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return DistInfo(rank, world, local_rank, device)


def teardown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for one)."""
    if info.enabled:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Element-wise sum of a list of numbers over processes."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's buffers (e.g. BatchNorm running statistics) to every process."""
    if not info.enabled:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)
