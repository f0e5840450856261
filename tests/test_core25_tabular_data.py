"""Issue 25, item 4 (data side): a tabular modality's data items.

``read_manifest(tabular={"labs": (...)})`` makes a modality of numeric columns; the data set
yields it as a float32 ``[F]`` tensor with NaN where a cell is empty, flags it available when any
value is present, and decodes, crops and caches nothing for it; the image transforms leave it
alone and :func:`~mmfusion.data.transforms.zero_unavailable` sets a missing one to NaN.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from mmfusion.data import (
    AsImages,
    PairedImageDataset,
    PerModality,
    ROICrop,
    eval_transforms,
    read_manifest,
    train_transforms,
    zero_unavailable,
)
from mmfusion.data.gpu_augment import random_flip_shift
from mmfusion.data.pipeline import cached_crops, eval_dataset, train_dataset

LABS = ("age", "ast", "platelets")
NAN = math.nan


def _frame(value: int) -> np.ndarray:
    """A 48 x 64 frame: a bright rectangle (the scan region), a value-dependent ramp, on black."""
    frame = np.zeros((48, 64, 3), np.uint8)
    ramp = np.linspace(0, 80, 48, dtype=np.float64)[None, :, None]
    frame[8:40, 8:56] = np.clip(value + ramp, 0, 255).astype(np.uint8)
    return frame


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    """Four rows: full labs; labs with gaps; no labs (image only); labs only (no image)."""
    for k in range(3):
        assert cv2.imwrite(str(tmp_path / f"p{k}_us.png"), _frame(60 + 40 * k))
    path = tmp_path / "manifest.csv"
    path.write_text(
        "patient_id,us_path,label,age,ast,platelets\n"
        "P0,p0_us.png,0,61,40.5,210\n"
        "P1,p1_us.png,1,,88,\n"
        "P2,p2_us.png,2,,,\n"
        "P3,,1,45,,150\n"
    )
    return path


def _manifest(csv: Path):  # type: ignore[no-untyped-def]
    return read_manifest(csv, tabular={"labs": LABS})


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN."""
    same_nan = torch.equal(torch.isnan(a), torch.isnan(b))
    return bool(same_nan and torch.equal(a.nan_to_num(), b.nan_to_num()))


EXPECTED = [
    torch.tensor([61.0, 40.5, 210.0]),
    torch.tensor([NAN, 88.0, NAN]),
    torch.tensor([NAN, NAN, NAN]),
    torch.tensor([45.0, NAN, 150.0]),
]


def test_items_carry_the_values_as_float32_with_nan_for_missing(csv: Path) -> None:
    ds = PairedImageDataset(_manifest(csv), size=16)
    assert ds.modalities == ("us", "labs") and ds.image_modalities == ("us",)
    assert ds.tabular == {"labs": LABS}
    for index, expected in enumerate(EXPECTED):
        item = ds[index]
        assert list(item) == ["us", "labs", "available", "label", "patient_id"]
        assert item["labs"].dtype == torch.float32 and item["labs"].shape == (3,)
        assert _same(item["labs"], expected)
    flags = [ds[i]["available"] for i in range(4)]
    assert flags == [{"us": True, "labs": True}, {"us": True, "labs": True},
                     {"us": True, "labs": False}, {"us": False, "labs": True}]  # fmt: skip
    # the row without an image: a zero placeholder of the data set's size
    assert ds[3]["us"].shape == (3, 16, 16) and int(ds[3]["us"].count_nonzero()) == 0


def test_nothing_is_decoded_cropped_or_cached_for_a_tabular_modality(csv: Path) -> None:
    ds = PairedImageDataset(_manifest(csv), size=16, cache=True).preload()
    assert set(ds.images(0)) == {"us"}
    assert ds.crop_keys == {"us": "sector"}
    assert ds.roi_sources == dict.fromkeys((0, 1, 2), {"us": "contour"})
    assert ds.applied_crops == dict.fromkeys((0, 1, 2), {"us": "sector"})
    with pytest.raises(ValueError, match=re.escape(
        "crop: expected modality keys among ['us'], got 'labs'")):  # fmt: skip
        PairedImageDataset(_manifest(csv), crop={"labs": ROICrop()})
    # a row with only tabular values needs size= for its image placeholders
    with pytest.raises(ValueError, match=re.escape(
        "size: manifest line 5 has none of the images ['us']")):  # fmt: skip
        PairedImageDataset(_manifest(csv))[3]


@pytest.mark.parametrize("train", [False, True])
def test_image_transforms_leave_tabular_values_alone(csv: Path, train: bool) -> None:
    transform = train_transforms(16, max_shift=2) if train else eval_transforms(16)
    ds = PairedImageDataset(_manifest(csv), transform=transform, size=16)
    for index, expected in enumerate(EXPECTED):
        item = ds[index]
        assert item["us"].dtype == torch.float32 and item["us"].shape == (3, 16, 16)
        assert _same(item["labs"], expected)  # not normalised, flipped or zeroed
        assert type(item["labs"]) is torch.Tensor


def test_transforms_on_a_sample_without_any_image_leave_it_alone() -> None:
    """torchvision treats a plain tensor as the image when a sample has none; ours do not."""
    labs = torch.tensor([1.0, NAN, 3.0])
    for transform in (eval_transforms(8), train_transforms(8, max_shift=1, intensity={})):
        out = transform({"labs": labs, "label": 0})
        assert out["labs"] is labs and out["label"] == 0


def test_as_images_and_per_modality_leave_tabular_values_alone() -> None:
    labs = torch.tensor([1.0, 2.0])
    sample = {"us": torch.zeros(3, 4, 4, dtype=torch.uint8), "labs": labs}
    wrapped = AsImages()(sample)
    assert type(wrapped["labs"]) is torch.Tensor and wrapped["labs"] is labs
    jittered = PerModality({"us": v2.ColorJitter(brightness=0.5)})(sample)
    assert jittered["labs"] is labs


def test_zero_unavailable_sets_a_missing_tabular_modality_to_nan() -> None:
    sample = {
        "us": torch.ones(3, 2, 2),
        "labs": torch.tensor([0.5, -1.0]),
        "vitals": torch.tensor([2.0]),
        "available": {"us": False, "labs": False, "vitals": True},
    }
    out = zero_unavailable(sample)
    assert int(out["us"].count_nonzero()) == 0
    assert torch.isnan(out["labs"]).all() and out["labs"].dtype == torch.float32
    assert out["vitals"] is sample["vitals"]
    assert not torch.isnan(sample["labs"]).any()  # the input is not changed


def test_batches_collate_tabular_values_to_b_by_f(csv: Path) -> None:
    ds = PairedImageDataset(_manifest(csv), transform=eval_transforms(16), size=16)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["labs"].shape == (4, 3) and batch["labs"].dtype == torch.float32
    assert batch["available"]["labs"].tolist() == [True, True, False, True]
    assert _same(batch["labs"], torch.stack(EXPECTED))
    augmented, _ = random_flip_shift({"us": batch["us"], "labs": batch["labs"]},
                                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert augmented["labs"] is batch["labs"]


def test_the_pipeline_serves_tabular_values_and_keys_its_cache_by_them(csv: Path) -> None:
    manifest = _manifest(csv)
    sample = eval_dataset(manifest, ("us", "labs"), 16, [0, 1])[1]
    assert _same(sample["labs"], EXPECTED[1]) and sample["available"] == {"us": True, "labs": True}
    trained = train_dataset(manifest, ("us", "labs"), 16, [0, 1, 2, 3], "online")
    assert all(_same(trained[i]["labs"], EXPECTED[i]) for i in range(4))
    first = cached_crops(manifest, 16)
    csv.write_text(csv.read_text().replace("61,40.5", "62,40.5"))  # same file, images, source
    second = cached_crops(_manifest(csv), 16)
    assert second is not first  # other values: not the cached manifest's rows
    assert float(second[0]["labs"][0]) == 62.0


def test_the_offline_augmentation_flips_images_and_leaves_tabular_values_alone(csv: Path) -> None:
    """The paper's planned augmentation (flip + shift) given the data set itself: the image is
    mirrored, the lab values are passed through as they came."""
    from mmfusion.data import PlannedAugmentationDataset

    ds = PairedImageDataset(_manifest(csv), size=16)
    planned = PlannedAugmentationDataset(ds, [(0, True, 0), (1, False, 2)])
    flipped, shifted = planned[0], planned[1]
    assert torch.equal(flipped["us"], ds[0]["us"].flip(-1))
    assert _same(flipped["labs"], EXPECTED[0]) and _same(shifted["labs"], EXPECTED[1])
    assert torch.equal(shifted["us"][..., 2:], ds[1]["us"][..., :-2])
