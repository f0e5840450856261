"""Issue 25, item 2: domain crops are plug-ins (:mod:`mmfusion.data.crops`,
:mod:`mmfusion.elastography`).

A user's own crop works in the data set and reads the manifest's extra columns without the data
set knowing their names; crops with other parameters never share cached crops; the SWE crops of
:mod:`mmfusion.elastography` give what the data set's old SWE modes gave (hand-computed boxes on a
synthetic frame; on the phantom, the 736 arrays of every old mode, size and ``roi`` setting were
compared byte for byte with the old code when the crops moved); ``mmfusion.data`` imports no
domain.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.data import (
    CropNotFoundError,
    CropNotFoundWarning,
    Manifest,
    ManifestRow,
    PairedImageDataset,
    ROICrop,
    image_roi,
    load_image,
    read_manifest,
)
from mmfusion.data.crops import check_crops
from mmfusion.data.pipeline import cached_crops, eval_dataset
from mmfusion.elastography import (
    SWE_CROP_NAMES,
    SWE_SCALE_COLUMN,
    SWEBoxCrop,
    SWEBoxNotFoundError,
    SWEBoxNotFoundWarning,
    colourmap_lut,
    crop_from_name,
    decode_swe_kpa,
    parse_swe_scale_kpa,
    swe_crop,
    swe_scale_kpa,
)

H, W = 192, 256
BOX = (80, 70, 140, 130)  # x0, y0, x1, y1 of the synthetic colour box (end-exclusive)
BAR = (236, 30, 244, 160)  # the legend, low end at the bottom
SCALE = 60.0  # the synthetic scanner's colour scale: TURBO, 0-60 kPa


def _swe_frame() -> tuple[np.ndarray, np.ndarray]:
    """A grey fan on black with a TURBO colour box (stiffness rising left to right, 5-50 kPa)
    and its legend: ``(frame [H, W, 3] uint8 RGB, the box's kPa [h, w])``."""
    frame = np.zeros((H, W, 3), np.uint8)
    cv2.ellipse(frame, (110, 10), (170, 170), 0, 50, 130, (90, 90, 90), -1)
    lut = colourmap_lut("turbo")
    x0, y0, x1, y1 = BOX
    kpa = np.linspace(5, 50, x1 - x0)[None, :].repeat(y1 - y0, 0)
    frame[y0:y1, x0:x1] = lut[np.rint(kpa / SCALE * 255).astype(int)]
    bx0, by0, bx1, by1 = BAR
    frame[by0:by1, bx0:bx1] = lut[np.rint(np.linspace(255, 0, by1 - by0)).astype(int)][:, None]
    return frame, kpa


def _write(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def swe_csv(tmp_path: Path) -> Path:
    """Two rows, each a B-mode-like frame (the fan only) and the synthetic SWE frame."""
    frame, _ = _swe_frame()
    grey = frame.copy()
    x0, y0, x1, y1 = BOX
    grey[y0:y1, x0:x1] = 90
    grey[BAR[1] : BAR[3], BAR[0] : BAR[2]] = 0
    for k in range(2):
        _write(tmp_path / f"p{k}_us.png", grey)
        _write(tmp_path / f"p{k}_swe.png", np.roll(frame, k, axis=0))  # two distinct files
    csv = tmp_path / "manifest.csv"
    csv.write_text(
        f"patient_id,us_path,swe_path,label,margin,{SWE_SCALE_COLUMN}\n"
        f"P0,p0_us.png,p0_swe.png,0,4,{SCALE:g}\nP1,p1_us.png,p1_swe.png,1,9,\n"
    )
    return csv


class Margin:
    """A user's crop: the frame without ``row.extra["margin"] + extra`` pixels on every side."""

    uses_roi = False

    def __init__(self, extra: int = 0) -> None:
        self.extra = extra
        self.key = f"margin(extra={extra})"
        self.seen: list[tuple[str, int, object]] = []

    def __call__(self, frame, row, modality, roi):  # type: ignore[no-untyped-def]
        self.seen.append((modality, row.line, roi))
        m = int(row.extra["margin"]) + self.extra
        return frame[m:-m, m:-m]


# --- the generic protocol -----------------------------------------------------------------------


def test_a_users_crop_reads_its_column_and_gets_no_roi(swe_csv: Path) -> None:
    crop = Margin()
    ds = PairedImageDataset(swe_csv, crop={"us": crop})
    for index, row in enumerate(ds.manifest):
        frame = load_image(row.paths["us"])
        m = int(row.extra["margin"])  # 4, then 9: the column reached the crop
        expected = torch.from_numpy(frame[m:-m, m:-m].transpose(2, 0, 1).copy())
        assert torch.equal(ds.images(index)["us"], expected)
    assert crop.seen == [("us", 2, None), ("us", 3, None)]  # uses_roi False: no ROI looked for
    assert ds.applied_crops == dict.fromkeys((0, 1), {"us": "margin(extra=0)", "swe": "sector"})
    assert ds.roi_sources == dict.fromkeys((0, 1), {"swe": "contour"})  # none for "us"


def test_a_crop_that_uses_the_roi_gets_the_frames_roi(swe_csv: Path, tmp_path: Path) -> None:
    got: list[tuple[int, int, int, int]] = []

    def corner(frame, row, modality, roi):  # type: ignore[no-untyped-def]
        got.append(roi.bbox)
        x0, y0, _, _ = roi.bbox
        return frame[y0 : y0 + 10, x0 : x0 + 12]

    corner.key = "corner"  # type: ignore[attr-defined]
    ds = PairedImageDataset(swe_csv, crop={"swe": corner})
    path = ds.manifest[0].paths["swe"]
    bbox = image_roi(path).roi.bbox
    assert ds.images(0)["swe"].shape == (3, 10, 12) and got == [bbox]
    x0, y0 = bbox[:2]
    assert torch.equal(ds.images(0)["swe"], torch.from_numpy(
        load_image(path)[y0 : y0 + 10, x0 : x0 + 12].transpose(2, 0, 1).copy()))  # fmt: skip
    without = PairedImageDataset(swe_csv, roi=False, crop={"swe": corner})
    without.images(0)
    assert got[-1] == (0, 0, W, H)  # roi=False: the full frame is the ROI


def test_crops_with_other_parameters_never_share_cached_crops(swe_csv: Path) -> None:
    manifest = read_manifest(swe_csv)
    narrow, wide = Margin(0), Margin(6)
    first = cached_crops(manifest, 16, crop={"us": narrow})
    second = cached_crops(manifest, 16, crop={"us": wide})
    assert second is not first
    assert not torch.equal(first.images(0)["us"], second.images(0)["us"])
    assert torch.equal(first.images(0)["swe"], second.images(0)["swe"])
    assert cached_crops(manifest, 16, crop={"us": Margin(6)}) is second  # same key: same crops
    assert cached_crops(manifest, 16, crop={"us": ROICrop()}) is cached_crops(manifest, 16)
    # the SWE crops: the scale default is a parameter too
    plain = cached_crops(manifest, 16, crop={"swe": SWEBoxCrop("box_kpa", scale_kpa=SCALE)})
    other = cached_crops(manifest, 16, crop={"swe": SWEBoxCrop("box_kpa", scale_kpa=30.0)})
    assert other is not plain
    assert torch.equal(plain.images(0)["swe"], other.images(0)["swe"])  # row 0 has its column
    assert not torch.equal(plain.images(1)["swe"], other.images(1)["swe"])  # row 1 has not


def test_not_found_is_an_error_or_the_fallback_with_the_crops_warning(swe_csv: Path) -> None:
    class Missing(CropNotFoundError):
        pass  # the generic warning category

    def never(frame, row, modality, roi):  # type: ignore[no-untyped-def]
        raise Missing(f"crop: no lesion in {row.paths[modality].name}")

    never.key = "lesion"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=re.escape(
        "line 2, us image (")) as err:  # fmt: skip
        PairedImageDataset(swe_csv, crop={"us": never}).images(0)
    assert "crop: no lesion in p0_us.png; crop_fallback=True keeps the sector crop instead" in str(
        err.value
    )
    ds = PairedImageDataset(swe_csv, crop={"us": never}, crop_fallback=True)
    with pytest.warns(CropNotFoundWarning, match="no lesion in p0_us.png; using its sector crop"):
        images = ds.images(0)
    sector = PairedImageDataset(swe_csv).images(0)
    assert torch.equal(images["us"], sector["us"])
    assert ds.applied_crops[0] == {"us": "sector", "swe": "sector"}


def test_bad_crops_and_bad_crop_outputs_are_named(swe_csv: Path) -> None:
    with pytest.raises(TypeError, match=re.escape("non-empty string key for 'swe', got 'swe_box'")):
        PairedImageDataset(swe_csv, crop={"swe": "swe_box"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="crops are objects now"):
        check_crops({"swe": "box"}, ("us", "swe"))  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="key for 'us', got <function"):
        check_crops({"us": lambda f, r, m, roi: f}, ("us", "swe"))  # no key
    with pytest.raises(ValueError, match=re.escape("expected modality keys among ['us', 'swe']")):
        check_crops({"labs": ROICrop()}, ("us", "swe"))

    def grey(frame, row, modality, roi):  # type: ignore[no-untyped-def]
        return frame[:, :, 0]

    grey.key = "grey"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=re.escape(
        "crop: expected crop 'grey' to return an [h, w, 3] uint8 array with h, w > 0, got uint8 "
        "array of shape (192, 256)")):  # fmt: skip
        PairedImageDataset(swe_csv, crop={"us": grey}).images(0)


def test_the_generic_data_package_imports_no_domain() -> None:
    code = (
        "import sys\n"
        "import mmfusion.data\n"
        "from mmfusion.data import PairedImageDataset, ROICrop, read_manifest\n"
        "from mmfusion.data.pipeline import cached_crops, eval_dataset, train_dataset\n"
        "from mmfusion.data import transforms, gpu_augment, splits, augmentation\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.startswith(('mmfusion.liver', 'mmfusion.elastography')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    source = Path(__import__("mmfusion.data").data.__file__).parent
    named = [p.name for p in sorted(source.glob("*.py"))
             if re.search(r"mmfusion\.(liver|elastography)|from \.\.(liver|elastography)",
                          p.read_text())]  # fmt: skip
    assert named == []


# --- the SWE crops ------------------------------------------------------------------------------


def test_box_crop_is_the_box_drawn(swe_csv: Path) -> None:
    ds = PairedImageDataset(swe_csv, crop={"swe": SWEBoxCrop("box")})
    frame, _ = _swe_frame()
    x0, y0, x1, y1 = BOX
    assert torch.equal(ds.images(0)["swe"],
                       torch.from_numpy(frame[y0:y1, x0:x1].transpose(2, 0, 1).copy()))  # fmt: skip
    assert ds.applied_crops[0] == {"us": "sector", "swe": "swe_box"}
    assert ds.roi_sources[0] == {"us": "contour"}  # the box needs no sector


def test_box_mask_crop_is_the_sector_crop_with_zeros_outside_the_box(swe_csv: Path) -> None:
    ds = PairedImageDataset(swe_csv, crop={"swe": SWEBoxCrop("box_mask")})
    frame, _ = _swe_frame()
    roi = image_roi(ds.manifest[0].paths["swe"]).roi
    sx0, sy0, sx1, sy1 = roi.bbox
    x0, y0, x1, y1 = BOX
    expected = np.zeros((sy1 - sy0, sx1 - sx0, 3), np.uint8)
    expected[y0 - sy0 : y1 - sy0, x0 - sx0 : x1 - sx0] = frame[y0:y1, x0:x1]
    assert torch.equal(ds.images(0)["swe"], torch.from_numpy(expected.transpose(2, 0, 1).copy()))
    assert ds.roi_sources[0] == {"us": "contour", "swe": "contour"}


def test_box_kpa_crop_draws_the_stiffness_on_the_reference_scale(swe_csv: Path) -> None:
    ds = PairedImageDataset(swe_csv, crop={"swe": SWEBoxCrop("box_kpa")})
    _, kpa = _swe_frame()
    image = np.ascontiguousarray(ds.images(0)["swe"].permute(1, 2, 0).numpy())
    got = decode_swe_kpa(image, (0.0, 40.0), "jet")  # the reference scale: JET, 0-40 kPa
    step = SCALE / (BAR[3] - BAR[1] - 1) + 40.0 / 255  # the legend's step + the reference's
    assert got.shape == kpa.shape
    assert np.nanmax(np.abs(got - np.minimum(kpa, 40.0))) <= step
    with pytest.raises(ValueError, match=re.escape(
        "line 3, swe image (") ) as err:  # fmt: skip
        ds.images(1)  # row 1 has no scale and the crop no default
    assert "manifest line 3 has no swe_scale_kpa value; add the column or pass SWEBoxCrop(" in str(
        err.value
    )
    given_default = PairedImageDataset(
        swe_csv, crop={"swe": SWEBoxCrop("box_kpa", scale_kpa=SCALE)}
    ).images(1)["swe"]
    assert torch.equal(given_default, ds.images(0)["swe"])  # row 1's frame is row 0's, rolled


def test_a_grey_frame_has_no_box(swe_csv: Path) -> None:
    crop = SWEBoxCrop("box")
    grey = np.full((64, 64, 3), 90, np.uint8)
    with pytest.raises(SWEBoxNotFoundError, match=re.escape(
        "crop: expected an SWE colour box in the frame (crop mode 'swe_box'), found none")):
        crop.crop_frame(grey)  # fmt: skip
    assert SWEBoxNotFoundError.warning is SWEBoxNotFoundWarning
    assert issubclass(SWEBoxNotFoundWarning, CropNotFoundWarning)
    manifest = read_manifest(swe_csv)
    row = manifest[0]
    us_only = Manifest((ManifestRow(2, "P0", 0, {"swe": row.paths["us"]}, dict(row.extra)),),
                       ("swe",), "grey")  # fmt: skip
    ds = PairedImageDataset(us_only, crop={"swe": crop}, crop_fallback=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds.images(0)
    assert [w.category for w in caught] == [SWEBoxNotFoundWarning]
    assert ds.applied_crops == {0: {"swe": "sector"}}


def test_swe_crop_arguments_and_names() -> None:
    assert SWEBoxCrop("box_kpa", scale_kpa=70).key == "swe_box_kpa(scale_kpa=70.0)"
    assert SWEBoxCrop("box") == swe_crop("box") and hash(SWEBoxCrop("box")) == hash(swe_crop("box"))
    assert SWEBoxCrop("box") != SWEBoxCrop("box_mask")
    assert [crop_from_name(n).key for n in SWE_CROP_NAMES] == list(SWE_CROP_NAMES)
    assert isinstance(swe_crop("frame"), ROICrop)
    assert not SWEBoxCrop("box").uses_roi and SWEBoxCrop("box_mask").uses_roi
    with pytest.raises(ValueError, match=re.escape(
        "mode: expected one of ('box', 'box_mask', 'box_kpa'), got 'frame'")):
        SWEBoxCrop("frame")  # fmt: skip
    with pytest.raises(ValueError, match="scale_kpa: only the mode 'box_kpa' reads a colour scale"):
        SWEBoxCrop("box", scale_kpa=40)
    with pytest.raises(ValueError, match="scale_kpa: expected a positive number of kPa, got 0"):
        SWEBoxCrop("box_kpa", scale_kpa=0)
    with pytest.raises(ValueError, match="name: expected one of"):
        crop_from_name("box")


def test_swe_crops_in_the_pipeline_match_the_evaluation_of_the_box(swe_csv: Path) -> None:
    manifest = read_manifest(swe_csv)
    sample = eval_dataset(manifest, ("us", "swe"), 32, [0], crop={"swe": swe_crop("box")})[0]
    frame, _ = _swe_frame()
    x0, y0, x1, y1 = BOX
    box = cv2.resize(frame[y0:y1, x0:x1], (32, 32), interpolation=cv2.INTER_AREA)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    expected = ((box.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)
    np.testing.assert_allclose(sample["swe"].numpy(), expected, atol=1e-5)


# --- the scale column ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e6, allow_nan=False))
def test_parse_swe_scale_kpa_reads_positive_numbers(value: float) -> None:
    assert parse_swe_scale_kpa(f" {value!r} ") == value


@pytest.mark.parametrize("text", ["-3", "0", "forty", "nan", "inf", ""])
def test_parse_swe_scale_kpa_refuses_the_rest(text: str) -> None:
    expected = f"expected a positive number of kPa, got {text!r}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        parse_swe_scale_kpa(text)


def test_swe_scale_kpa_reads_the_parsed_value_else_the_cell(tmp_path: Path) -> None:
    row = ManifestRow(5, "P", 0, {"swe": None}, extra={SWE_SCALE_COLUMN: "70"})
    assert swe_scale_kpa(row) == 70.0
    parsed = ManifestRow(5, "P", 0, {"swe": None}, extra={SWE_SCALE_COLUMN: "70"},
                         values={SWE_SCALE_COLUMN: 65.0})  # fmt: skip
    assert swe_scale_kpa(parsed) == 65.0
    assert swe_scale_kpa(ManifestRow(5, "P", 0, {"swe": None})) is None
    bad = ManifestRow(5, "P", 0, {"swe": None}, extra={SWE_SCALE_COLUMN: "seventy"})
    with pytest.raises(ValueError, match=re.escape(
        "swe_scale_kpa: manifest line 5: expected a positive number of kPa, got 'seventy'")):
        swe_scale_kpa(bad)  # fmt: skip
    assert math.isclose(swe_scale_kpa(ManifestRow(1, "P", 0, {}, {SWE_SCALE_COLUMN: "1e1"})), 10.0)
