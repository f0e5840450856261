"""Issue 24, items 8, 17 and 24: the sector ROI is the fan's convex shape, not its bright parts;
detection works on a bounded copy of a huge frame; an ROI prints as one short line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data import detect_sector, image_roi, load_image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _fan(
    height: int, width: int, *, dark: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A grey convex-probe fan (apex at the top centre, 70 degree opening) on black, with speckle,
    and (``dark``) an anechoic ellipse (a full bladder) that reaches the fan's left edge.

    Returns:
        ``(frame, fan)``: uint8 ``[H, W]`` frame and the bool ``[H, W]`` true fan mask (convex).
    """
    fan = np.zeros((height, width), np.uint8)
    apex = (width // 2, height // 20)
    radius = int(height * 0.9)
    cv2.ellipse(fan, apex, (radius, radius), 0, 90 - 35, 90 + 35, 1, thickness=cv2.FILLED)
    rng = np.random.default_rng(seed)
    frame = np.where(fan > 0, rng.integers(60, 160, (height, width)), 0).astype(np.uint8)
    if dark:  # a bladder centred on the fan's left edge, a third of the way down
        centre = (int(width / 2 - 0.35 * height * np.tan(np.radians(35))), int(height * 0.38))
        axes = (int(height * 0.16), int(height * 0.11))
        cv2.ellipse(frame, centre, axes, 0, 0, 360, 2, thickness=cv2.FILLED)
    return frame, fan > 0


def _hull_mask(mask: np.ndarray) -> np.ndarray:
    points = cv2.findNonZero(mask.astype(np.uint8))
    out = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(out, cv2.convexHull(points), 1)
    return out > 0


# -- item 8: dark tissue is tissue ----------------------------------------------------------------


def test_contour_mask_is_the_fans_convex_shape_with_a_dark_bladder() -> None:
    frame, fan = _fan(240, 320)
    assert (frame[fan] <= 2).mean() > 0.05  # the bladder really darkens part of the fan
    roi = detect_sector(frame)
    bladder = fan & (frame <= 2)
    # Measured: original code IoU 0.949 with the fan, bladder kept 0.0, mask vs its hull
    # 0.942; now IoU 0.992, bladder kept 1.0, mask vs hull 0.992 (rasterisation only).
    assert _iou(roi.mask, fan) >= 0.98
    assert roi.mask[bladder].mean() >= 0.98
    assert _iou(roi.mask, _hull_mask(roi.mask)) >= 0.985  # convex within rasterisation
    x0, y0, x1, y1 = roi.bbox
    assert roi.mask[y0:y1, x0:x1].any(axis=0).all()  # bbox is the mask's own


def corpus(name: str) -> Path:
    """A file of pydicom's test corpus, from the installed packages only (never downloaded)."""
    pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom / pydicom-data test corpus")
    return Path(str(path))


def test_tagged_region_keeps_the_anechoic_bladder_of_a_real_dual_view_file() -> None:
    path = corpus("gdcm-US-ALOKA-16.dcm")  # Aloka dual view, pelvis with a full bladder
    found = image_roi(path)
    x0, y0, x1, y1 = found.region.box
    kept = float(found.roi.mask[y0:y1, x0:x1].mean())
    # Measured: 0.559 on the original code (the bladder cut out), 1.0 now (the fan's hull covers
    # 0.867 of the box, not clearly narrower than it, so the tagged region itself is the mask).
    assert kept >= 0.9
    assert not found.roi.mask[:, x1:].any()  # never the other view
    assert not found.roi.mask[:y0].any() and not found.roi.mask[y1:].any()
    image = load_image(path)
    assert _iou(found.roi.mask, _hull_mask(found.roi.mask)) >= 0.99
    assert found.roi.crop(image).shape == (y1 - y0, x1 - x0, 3)


# -- item 17: bounded detection on huge frames ----------------------------------------------------


def test_huge_frame_is_detected_on_a_bounded_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, fan = _fan(6000, 6000, dark=False)
    sizes: list[tuple[int, ...]] = []
    morphology = cv2.morphologyEx

    def spy(src: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        sizes.append(src.shape)
        return morphology(src, *args, **kwargs)

    monkeypatch.setattr(cv2, "morphologyEx", spy)
    roi = detect_sector(frame)
    assert sizes and max(max(s) for s in sizes) <= 1024  # original: 6000 x 6000 (minutes at 20k)
    assert roi.mask.shape == (6000, 6000)
    assert _iou(roi.mask, fan) >= 0.98


def test_downscaled_detection_matches_native_detection() -> None:
    frame, fan = _fan(1500, 2000, seed=3)
    bounded, native = detect_sector(frame), detect_sector(frame, max_side=None)
    assert native.mask.shape == bounded.mask.shape == (1500, 2000)
    assert _iou(bounded.mask, native.mask) >= 0.99
    assert all(abs(a - b) <= 4 for a, b in zip(bounded.bbox, native.bbox, strict=True))
    assert _iou(bounded.mask, fan) >= 0.97
    with pytest.raises(ValueError, match="max_side"):
        detect_sector(frame, max_side=4)


# -- item 24: a short repr and the region used ----------------------------------------------------


def test_roi_repr_is_one_short_line(tmp_path: Path) -> None:
    frame, _ = _fan(240, 320, dark=False)
    png = tmp_path / "fan.png"
    cv2.imwrite(str(png), frame)
    found = image_roi(png)
    text = repr(found)
    # Original: the dataclass repr prints the whole mask and contour arrays (thousands of chars).
    assert len(text) < 300 and "\n" not in text
    assert "source='contour'" in text and f"bbox={found.roi.bbox}" in text
    assert f"{len(found.roi.contour)} contour points" in text
    assert f"area_fraction={found.roi.area_fraction:.3f}" in text
    assert str(found) == text
    assert len(repr(found.roi)) < 200 and "\n" not in repr(found.roi)
    assert found.roi.contour.shape[1] == 2 and found.roi.mask.shape == (240, 320)  # data kept
    assert found.region_index is None and found.as_dict()["region"] is None


def test_dual_view_roi_records_the_region_used() -> None:
    path = corpus("gdcm-US-ALOKA-16.dcm")  # two tissue regions: the first is used
    found = image_roi(path)
    assert found.region_index == 0
    assert "region=0 tissue (32, 24, 336, 416)" in repr(found)
    info = found.as_dict()
    assert info["source"] == "dicom_region" and info["bbox"] == [32, 24, 336, 416]
    assert info["region"] == {"index": 0, "kind": "tissue", "box": [32, 24, 336, 416]}
    assert info["tissue_regions"] == 2
    second = image_roi(path, region=1)
    assert second.region_index == 1 and second.as_dict()["region"]["box"] == [336, 24, 640, 416]
