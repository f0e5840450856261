"""PairedImageDataset: decoding, ROI crop, RGB uint8 output, cache, workers, transforms."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mmfusion.data import (
    PairedImageDataset,
    PlannedAugmentationDataset,
    balanced_augmentation_plan,
    eval_transforms,
    load_image,
    read_manifest,
    train_transforms,
)
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset, phantom_truth

CONFIG = PhantomConfig(width=200, height=150)


@pytest.fixture(scope="module")
def phantom_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom")
    return make_phantom_dataset(root, n_patients=5, seed=0, config=CONFIG, workers=0)


def test_items_are_rgb_uint8_crops(phantom_csv: Path) -> None:
    manifest = read_manifest(phantom_csv, labels=METAVIR)
    ds = PairedImageDataset(manifest)
    item = ds[0]
    assert list(item) == ["us", "swe", "available", "label", "patient_id"]
    assert item["available"] == {"us": True, "swe": True}
    assert item["label"] == manifest[0].stage and item["patient_id"] == manifest[0].patient_id
    truth = phantom_truth(manifest[0])
    x0, y0, x1, y1 = truth.sector_bbox()
    for key in ("us", "swe"):
        t = item[key]
        assert t.dtype == torch.uint8 and t.ndim == 3 and t.shape[0] == 3
        assert abs(t.shape[1] - (y1 - y0)) <= 3 and abs(t.shape[2] - (x1 - x0)) <= 3
    us = item["us"]
    assert torch.equal(us[0], us[1]) and torch.equal(us[1], us[2])  # grey replicated
    swe = item["swe"]
    assert not torch.equal(swe[0], swe[2])


def test_colour_order_is_rgb(phantom_csv: Path) -> None:
    manifest = read_manifest(phantom_csv, labels=METAVIR)
    row = next(r for r in manifest if r.extra["site"] == "A")  # v2: site A is the classic style
    frame = load_image(row.paths["swe"])
    s = CONFIG.scale
    x = CONFIG.width - int(30 * s)
    top, bottom = frame[int(0.14 * CONFIG.height) + 1, x], frame[int(0.46 * CONFIG.height) - 2, x]
    assert top[0] > 100 and top[2] < 60  # colour bar top: red (40 kPa)
    assert bottom[2] > 100 and bottom[0] < 60  # bottom: blue (0 kPa)


def test_resize_and_cache(phantom_csv: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(phantom_csv.parent, root)
    ds = PairedImageDataset(root / "manifest.csv", cache=True, size=(40, 56), labels=METAVIR)
    ds.preload()
    first = ds[3]
    assert first["swe"].shape == (3, 40, 56)
    shutil.rmtree(root / manifest_patient(ds, 3))
    again = ds[3]  # served from memory: the files are gone
    assert torch.equal(first["swe"], again["swe"])
    uncached = PairedImageDataset(ds.manifest, size=(40, 56))
    with pytest.raises(ValueError, match="path"):
        uncached[3]


def manifest_patient(ds: PairedImageDataset, index: int) -> str:
    return ds.manifest[index].patient_id


def test_dataloader_workers_and_default_collate(phantom_csv: Path) -> None:
    ds = PairedImageDataset(phantom_csv, transform=train_transforms(32, max_shift=2), size=48, labels=METAVIR)
    pickle.loads(pickle.dumps(ds))
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["us"].shape == (4, 3, 32, 32) and batch["us"].dtype == torch.float32
    assert batch["label"].shape == (4,) and len(batch["patient_id"]) == 4


def test_transform_receives_images_and_applies_one_geometry(
    phantom_csv: Path, tmp_path: Path
) -> None:
    manifest = read_manifest(phantom_csv, labels=METAVIR)
    us = manifest[0].paths["us"]
    csv = tmp_path / "same.csv"
    csv.write_text(f"patient_id,us_path,swe_path,stage\nP1,{us},{us},F1\n")
    ds = PairedImageDataset(csv, transform=train_transforms(32, max_shift=4, intensity={}), labels=METAVIR)
    for _ in range(5):
        item = ds[0]
        assert torch.equal(item["us"], item["swe"])
    # A bare v2 transform (no AsImages first) transforms every modality only if the data set
    # handed it tv_tensors.Image values: v2 would flip just the first plain tensor.
    plain = PairedImageDataset(csv, labels=METAVIR)[0]
    flipped = PairedImageDataset(csv, transform=v2.RandomHorizontalFlip(p=1.0), labels=METAVIR)[0]
    for m in ("us", "swe"):
        assert torch.equal(flipped[m], plain[m].flip(-1))


def test_three_modalities_and_jpeg(phantom_csv: Path, tmp_path: Path) -> None:
    manifest = read_manifest(phantom_csv, labels=METAVIR)
    jpg = tmp_path / "us.jpg"
    row = next(r for r in manifest if r.paths["us"].suffix == ".png")  # v2: site C stores DICOM
    cv2.imwrite(str(jpg), cv2.imread(str(row.paths["us"]), cv2.IMREAD_GRAYSCALE))
    csv = tmp_path / "three.csv"
    csv.write_text(
        "patient_id,swe_path,us_path,jpeg_path,stage\n"
        f"P1,{row.paths['swe']},{row.paths['us']},{jpg},F3\n"
    )
    item = PairedImageDataset(csv, size=24, labels=METAVIR)[0]
    assert list(item) == ["swe", "us", "jpeg", "available", "label", "patient_id"]
    assert item["jpeg"].shape == (3, 24, 24) and item["label"] == 3


def test_blank_image_fails_with_the_file_name_or_falls_back(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((60, 80), np.uint8))
    csv = tmp_path / "blank.csv"
    csv.write_text(f"patient_id,us_path,stage\nP1,{blank},F0\n")
    with pytest.raises(ValueError, match="blank.png"):
        PairedImageDataset(csv, labels=METAVIR)[0]
    with pytest.warns(UserWarning, match="full frame"):
        item = PairedImageDataset(csv, roi_fallback=True, labels=METAVIR)[0]
    assert item["us"].shape == (3, 60, 80)


def test_offline_plan_through_the_dataset(phantom_csv: Path) -> None:
    base = PairedImageDataset(phantom_csv, cache=True, size=32, labels=METAVIR)
    plan = balanced_augmentation_plan(base.labels, target_per_class=None, seed=0)
    planned = PlannedAugmentationDataset(base, plan, transform=eval_transforms(32))
    assert len(planned) >= 4 * len(base)
    flipped = next(k for k, it in enumerate(plan) if it.flip and it.shift == 0)
    original = next(
        k
        for k, it in enumerate(plan)
        if it.index == plan[flipped].index and not it.flip and it.shift == 0
    )
    assert torch.allclose(planned[flipped]["swe"], planned[original]["swe"].flip(-1))


def test_bad_arguments(phantom_csv: Path) -> None:
    with pytest.raises(TypeError, match="manifest"):
        PairedImageDataset(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size: expected positive sizes"):
        PairedImageDataset(phantom_csv, size=(0, 3), labels=METAVIR)
    with pytest.raises(TypeError, match="size: expected an int or"):
        PairedImageDataset(phantom_csv, size=(32.0, 32), labels=METAVIR)
    # One size rule across the library: lists and NumPy integers are sizes too.
    assert PairedImageDataset(phantom_csv, size=[32, 24], labels=METAVIR).size == (32, 24)
    assert PairedImageDataset(phantom_csv, size=np.int64(32), labels=METAVIR).size == (32, 32)
    with pytest.raises(ValueError, match="cache"):
        PairedImageDataset(phantom_csv, labels=METAVIR).preload()
