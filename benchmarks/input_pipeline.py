"""Input-pipeline throughput: is a training run bound by data or by compute?

Measured on a small phantom written to a temporary folder (:func:`mmfusion.liver.make_phantom_dataset`),
one CPU core (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``), pairs per second:

1. ``png -> roi -> augment``: decode both PNGs, detect and crop the scan sector, resize, then the
   training transforms (intensity jitter on US, flip, shift, normalise): no cache.
2. ``png -> roi``: the same without augmentation (decode + ROI cost alone).
3. ``cache -> augment``: from the in-memory cache (decoded crops), full training transforms.
4. ``cache -> flip/shift``: from the cache, only flip + shift + normalise on the CPU (the same
   work as the on-device path, for a like-for-like comparison).
5. ``cache -> device flip/shift``: from the cache, collate a uint8 batch, copy it to the
   benchmark device, then :func:`mmfusion.data.gpu_augment.random_flip_shift` and normalisation
   on the whole batch there (one CPU thread drives it).
6. ``device flip/shift only``: the batched on-device augmentation of a batch already there.

The PNG files sit in the OS page cache after generation, so "from PNG" measures decoding, not disk.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import torch

from benchmarks import ladder
from benchmarks.results_io import available_cores, cpu_model, machine_name


@contextmanager
def one_core() -> Iterator[None]:
    """Limit torch and OpenCV to one thread, restoring the previous settings afterwards."""
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)


def _per_item(fetch: Callable[[int], object], n: int) -> Callable[[], None]:
    """A step that fetches the next item, cycling over ``n`` items."""
    order: Iterator[int] = itertools.cycle(range(n))

    def step() -> None:
        fetch(next(order))

    return step


def _device_step(
    crops: list[dict[str, torch.Tensor]],
    batch: int,
    device: torch.device,
    from_host: bool,
) -> Callable[[], None]:
    """Batched path: (collate uint8 crops -> copy to device ->) flip/shift -> float -> normalise."""
    from mmfusion.data import IMAGENET_MEAN, IMAGENET_STD
    from mmfusion.data.gpu_augment import random_flip_shift

    modalities = tuple(crops[0])
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    pick = torch.Generator().manual_seed(0)
    gen = torch.Generator(device=device).manual_seed(0)

    def collate() -> dict[str, torch.Tensor]:
        idx = torch.randint(len(crops), (batch,), generator=pick).tolist()
        return {m: torch.stack([crops[i][m] for i in idx]) for m in modalities}

    resident = {m: t.to(device) for m, t in collate().items()}

    def step() -> None:
        host = collate() if from_host else resident
        images = {m: t.to(device, non_blocking=True) for m, t in host.items()}
        augmented, _ = random_flip_shift(images, max_shift=5, generator=gen)
        for t in augmented.values():
            t.to(torch.float32).sub_(mean).div_(std)

    return step


def _stage(
    name: str, where: str, step: Callable[[], None], device: torch.device,
    plan: ladder.TimingPlan, pairs_per_call: int, per_core: bool,
) -> dict[str, Any]:
    timing = ladder.time_step(step, device, plan)
    rate = pairs_per_call / timing.median_s
    return {
        "name": name,
        "where": where,
        "pairs_per_s": rate,
        "pairs_per_s_per_core": rate if per_core else None,
        "ms_per_call": timing.median_s * 1e3,
        "pairs_per_call": pairs_per_call,
    }


def measure(
    device: torch.device,
    quick: bool,
    image_size: int,
    train_pairs_per_s: float | None,
    *,
    n_patients: int | None = None,
    batch: int | None = None,
    max_pairs: int | None = None,
    root: Path | None = None,
) -> dict[str, Any]:
    """Measure the input pipeline and say whether data or compute bounds training.

    Args:
        device: The benchmark device (for the batched on-device augmentation).
        quick: Quick mode (fewer patients and shorter timings).
        image_size: Side of the crops fed to the model.
        train_pairs_per_s: Best model training throughput of this run (for the verdict).
        n_patients: Phantom patients (default 8 quick, 20 full).
        batch: Batch of the on-device path (default 8 quick, 256 full).
        max_pairs: Use at most this many pairs of the phantom (default 16 quick, 64 full).
        root: Folder for the phantom (default: a temporary folder, removed afterwards).

    Returns:
        A dict with ``stages`` (list of rows), ``verdict`` (one paragraph) and the settings.
    """
    n_patients = n_patients or (8 if quick else 20)
    batch = batch or (8 if quick else 256)
    max_pairs = max_pairs or (16 if quick else 64)
    if root is None:
        with tempfile.TemporaryDirectory(prefix="mmfusion-bench-") as tmp:
            return measure(device, quick, image_size, train_pairs_per_s, n_patients=n_patients,
                           batch=batch, max_pairs=max_pairs, root=Path(tmp))
    from mmfusion.data import Manifest, PairedImageDataset, read_manifest, train_transforms
    from mmfusion.liver import METAVIR, make_phantom_dataset

    full_manifest = read_manifest(make_phantom_dataset(root, n_patients=n_patients, seed=0,
                                                       workers=1), labels=METAVIR)
    manifest = Manifest(full_manifest.rows[:max_pairs], full_manifest.modalities,
                        full_manifest.source, label_spec=METAVIR)
    cpu = torch.device("cpu")
    plan = ladder.TimingPlan(warmup=1, repeats=3, min_repeat_s=0.1 if quick else 0.5)
    full = train_transforms(size=image_size)
    flip_shift_only = train_transforms(size=image_size, intensity={})
    stages: list[dict[str, Any]] = []
    with one_core():
        png_aug = PairedImageDataset(manifest, transform=full, size=image_size)
        png = PairedImageDataset(manifest, size=image_size)
        cached = PairedImageDataset(manifest, cache=True, size=image_size).preload(1)
        n = len(cached)
        for name, ds, transform in (
            ("png -> roi -> augment", png_aug, full),
            ("png -> roi", png, None),
            ("cache -> augment", cached, full),
            ("cache -> flip/shift", cached, flip_shift_only),
        ):
            ds.transform = transform
            step = _per_item(ds.__getitem__, n)
            stages.append(_stage(name, f"{cpu_model()}, 1 core", step, cpu, plan, 1, True))
        cached.transform = None
        crops = [cached.images(i) for i in range(n)]
        where = f"{machine_name(device)}, batch {batch}"
        stages.append(_stage("cache -> device flip/shift", where + " (1 CPU thread collates)",
                             _device_step(crops, batch, device, True), device, plan, batch, True))
        stages.append(_stage("device flip/shift only", where,
                             _device_step(crops, batch, device, False), device, plan, batch, False))
    return {
        "phantom_patients": n_patients,
        "pairs": n,
        "image_size": image_size,
        "device_batch": batch,
        "cpu_cores_available": available_cores(),
        "stages": stages,
        "model_train_pairs_per_s": train_pairs_per_s,
        "verdict": verdict(stages, train_pairs_per_s, available_cores(), machine_name(device)),
    }


def verdict(
    stages: list[dict[str, Any]], train_pairs_per_s: float | None, cores: int, machine: str
) -> str:
    """One paragraph: cores needed per CPU path to feed the model (trained on ``machine``, named
    in the text), and which side bounds."""
    if not train_pairs_per_s:
        return "No model training throughput to compare with (no ladder row succeeded)."
    rate = {s["name"]: s["pairs_per_s"] for s in stages}
    need = {k: train_pairs_per_s / rate[k] for k in
            ("png -> roi -> augment", "cache -> augment", "cache -> device flip/shift")}
    parts = [
        f"The best training rung of this run reaches {train_pairs_per_s:,.0f} pairs/s on "
        f"{machine}. Feeding it needs about {need['png -> roi -> augment']:,.1f} cores "
        "decoding PNGs (without a cache; with it, only the first epoch decodes), "
        f"{need['cache -> augment']:,.1f} cores augmenting from the cache on the CPU, or "
        f"{need['cache -> device flip/shift']:,.2f} cores collating for on-device flip/shift; "
        f"this machine has {cores}."
    ]
    if need["cache -> augment"] <= cores:
        parts.append("CPU augmentation from the cache keeps up: compute bounds training.")
    elif need["cache -> device flip/shift"] <= cores:
        parts.append(
            "CPU augmentation cannot keep up (data-bound); cache the crops and augment on the "
            "device (mmfusion.data.gpu_augment), which keeps up: compute bounds training again."
        )
    else:
        parts.append(
            "Even the cached, on-device path cannot keep up: data (collation and host-to-device "
            "copy) bounds training; use DataLoader workers with pinned memory, or keep the "
            "cached uint8 crops resident on the device."
        )
    return " ".join(parts)
