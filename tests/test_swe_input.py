"""SWE input modes: the colour-box crop, the box mask, and the unchanged sector default (issue 13)."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmfusion.data import (
    PairedImageDataset,
    ROICrop,
    image_roi,
    load_image,
    read_manifest,
)
from mmfusion.data.pipeline import (
    cached_crops,
    eval_dataset,
    train_dataset,
)
from mmfusion.elastography import (
    SWE_INPUTS,
    SWEBoxCrop,
    SWEBoxNotFoundWarning,
    crop_from_name,
    detect_swe_box,
    swe_crop,
)
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset, phantom_truth

CONFIG = PhantomConfig(width=256, height=192)
BOX = {"swe": SWEBoxCrop("box")}
MASK = {"swe": SWEBoxCrop("box_mask")}


@pytest.fixture(scope="module")
def phantom_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("swe_phantom")
    return make_phantom_dataset(root, n_patients=4, seed=3, config=CONFIG, workers=1)


def _old_recipe(path: Path, size: int | None) -> torch.Tensor:
    """The crop as PairedImageDataset made it before crop modes: sector ROI -> resize."""
    image = load_image(path)
    image = image_roi(path, image=image).roi.crop(image)
    if size is not None:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _saturated_fraction(chw: torch.Tensor) -> float:
    hsv = cv2.cvtColor(np.ascontiguousarray(chw.permute(1, 2, 0).numpy()), cv2.COLOR_RGB2HSV)
    return float((hsv[:, :, 1] >= 80).mean())


@pytest.mark.parametrize("size", [None, 48])
@pytest.mark.parametrize("crop", [None, {}, {"swe": ROICrop()}, {"us": ROICrop(), "swe": ROICrop()}])
def test_default_is_the_sector_crop_bit_for_bit(
    phantom_csv: Path, size: int | None, crop: dict[str, str] | None
) -> None:
    ds = PairedImageDataset(phantom_csv, labels=METAVIR, size=size, crop=crop)
    for index in (0, len(ds) - 1):
        images = ds.images(index)
        for modality, path in ds.manifest[index].paths.items():
            assert torch.equal(images[modality], _old_recipe(path, size))
    assert ds.crop_keys == {"us": "sector", "swe": "sector"}
    assert ds.applied_crops == dict.fromkeys((0, len(ds) - 1), {"us": "sector", "swe": "sector"})


def test_box_crop_is_the_true_colour_box(phantom_csv: Path) -> None:
    ds = PairedImageDataset(phantom_csv, labels=METAVIR, crop=BOX)  # no resize: the crop's own size
    frame_crops = PairedImageDataset(phantom_csv, labels=METAVIR)
    for index, row in enumerate(ds.manifest):
        x0, y0, x1, y1 = phantom_truth(row).swe_box
        swe = ds.images(index)["swe"]
        assert abs(swe.shape[1] - (y1 - y0)) <= 2 and abs(swe.shape[2] - (x1 - x0)) <= 2
        # the box holds the stiffness colours; the sector crop around it is mostly grey B-mode.
        # Phantom v2 leaves vessels, rib shadows, a gallbladder and part of the deepest fifth
        # uncoloured (void): measured 0.67-0.95 in the box, 0.03-0.07 in the sector crop.
        assert _saturated_fraction(swe) > 0.6
        assert _saturated_fraction(frame_crops.images(index)["swe"]) < 0.2
        assert torch.equal(ds.images(index)["us"], frame_crops.images(index)["us"])
    assert ds.applied_crops == dict.fromkeys(range(len(ds)), {"us": "sector", "swe": "swe_box"})
    # no sector for swe; v2's site C stores DICOM, whose B-mode crop is the tagged region
    expected = {i: {"us": "dicom_region" if row.paths["us"].suffix == ".dcm" else "contour"}
                for i, row in enumerate(ds.manifest)}
    assert ds.roi_sources == expected
    assert {"contour", "dicom_region"} == {v["us"] for v in expected.values()}


def test_box_crop_pixels_are_the_frames(phantom_csv: Path) -> None:
    ds = PairedImageDataset(phantom_csv, labels=METAVIR, crop=BOX, size=32)
    path = ds.manifest[1].paths["swe"]
    frame = load_image(path)
    x0, y0, x1, y1 = detect_swe_box(frame)
    expected = cv2.resize(frame[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA)
    assert torch.equal(ds.images(1)["swe"], torch.from_numpy(expected.transpose(2, 0, 1)))


def test_box_mask_zeroes_everything_outside_the_box(phantom_csv: Path) -> None:
    masked = PairedImageDataset(phantom_csv, labels=METAVIR, crop=MASK)
    sector = PairedImageDataset(phantom_csv, labels=METAVIR)
    for index, row in enumerate(masked.manifest):
        path = row.paths["swe"]
        frame = load_image(path)
        roi = image_roi(path, image=frame).roi
        bx0, by0, bx1, by1 = (int(v) for v in roi.box_to_crop(detect_swe_box(frame)))
        got, plain = masked.images(index)["swe"], sector.images(index)["swe"]
        assert got.shape == plain.shape  # the sector crop's geometry is kept
        inside = torch.zeros(got.shape[1:], dtype=torch.bool)
        inside[by0:by1, bx0:bx1] = True
        assert torch.equal(got[:, inside], plain[:, inside])
        assert int(got[:, ~inside].count_nonzero()) == 0
        assert int(plain[:, ~inside].count_nonzero()) > 0  # there was B-mode to remove
        assert torch.equal(masked.images(index)["us"], sector.images(index)["us"])
    assert masked.applied_crops[0] == {"us": "sector", "swe": "swe_box_mask"}


def test_box_mask_without_roi_uses_frame_coordinates(phantom_csv: Path) -> None:
    ds = PairedImageDataset(phantom_csv, labels=METAVIR, roi=False, crop=MASK)
    frame = load_image(ds.manifest[0].paths["swe"])
    x0, y0, x1, y1 = detect_swe_box(frame)
    expected = np.zeros_like(frame)
    expected[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
    assert torch.equal(ds.images(0)["swe"], torch.from_numpy(expected.transpose(2, 0, 1)))


@pytest.fixture
def grey_swe_csv(phantom_csv: Path, tmp_path: Path) -> Path:
    """A pair whose "SWE" file is a B-mode frame: no colour box."""
    row = read_manifest(phantom_csv, labels=METAVIR)[0]
    csv = tmp_path / "grey.csv"
    csv.write_text(
        f"patient_id,us_path,swe_path,stage\nP1,{row.paths['us']},{row.paths['us']},F1\n"
    )
    return csv


@pytest.mark.parametrize("mode", ["swe_box", "swe_box_mask"])
def test_frame_without_a_box_fails_with_its_name_or_falls_back(
    grey_swe_csv: Path, mode: str
) -> None:
    us_path = read_manifest(grey_swe_csv, labels=METAVIR)[0].paths["us"]
    expected = (
        f"crop: expected an SWE colour box in {str(us_path)!r} (crop mode {mode!r} for modality "
        "'swe'), found none; crop_fallback=True keeps the sector crop instead"
    )
    crop = {"swe": crop_from_name(mode)}
    with pytest.raises(ValueError, match=re.escape(expected)):
        PairedImageDataset(grey_swe_csv, labels=METAVIR, crop=crop).images(0)
    ds = PairedImageDataset(grey_swe_csv, labels=METAVIR, crop=crop, crop_fallback=True)
    with pytest.warns(SWEBoxNotFoundWarning, match="using its sector crop"):
        images = ds.images(0)
    assert torch.equal(images["swe"], _old_recipe(us_path, None))
    assert ds.applied_crops == {0: {"us": "sector", "swe": "sector"}}


def test_bad_crop_arguments(phantom_csv: Path) -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("crop: expected modality keys among ['us', 'swe'], got 'elasto'"),
    ):
        PairedImageDataset(phantom_csv, labels=METAVIR, crop={"elasto": SWEBoxCrop("box")})
    with pytest.raises(  # crops are objects now: a mode string is refused, naming the modality
        TypeError, match=re.escape("with a non-empty string key for 'swe', got 'box'")
    ):
        PairedImageDataset(phantom_csv, labels=METAVIR,
                           crop={"swe": "box"})  # type: ignore[dict-item]  # fmt: skip
    with pytest.raises(TypeError, match="crop: expected a mapping"):
        PairedImageDataset(phantom_csv, labels=METAVIR, crop="swe_box")  # type: ignore[arg-type]


def test_swe_input_names() -> None:
    assert SWE_INPUTS == ("frame", "box", "box_mask", "box_kpa")
    assert swe_crop("frame").key == "sector"
    assert swe_crop("box").key == "swe_box"
    assert swe_crop("box_mask").key == "swe_box_mask"
    with pytest.raises(
        ValueError,
        match=re.escape(
            "swe_input: expected one of ('frame', 'box', 'box_mask', 'box_kpa'), got 'roi'"
        ),
    ):
        swe_crop("roi")


def test_pipeline_keys_its_cache_by_crop(phantom_csv: Path) -> None:
    manifest = read_manifest(phantom_csv, labels=METAVIR)
    frame = cached_crops(manifest, 32)
    assert cached_crops(manifest, 32, crop={"swe": ROICrop()}) is frame
    box = cached_crops(manifest, 32, crop=BOX)
    assert box is not frame and box.crop_keys == {"us": "sector", "swe": "swe_box"}
    assert box.applied_crops == dict.fromkeys(range(len(manifest)), box.crop_keys)
    test_set = eval_dataset(manifest, ("us", "swe"), 32, [0, 1], crop=BOX)
    train_set = train_dataset(manifest, ("us", "swe"), 32, [2, 3], "paper", crop=BOX)
    assert cached_crops(manifest, 32, crop=BOX) is box  # the data sets above reused it
    # the SWE input is the box's crop (normalised), the US input the sector crop
    expected = box.images(0)["swe"].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert torch.allclose(test_set[0]["swe"], (expected - mean) / std, atol=1e-5)
    assert train_set[0]["swe"].shape == (3, 32, 32)
