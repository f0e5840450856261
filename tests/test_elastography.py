"""SWE colour box detection and kPa decoding, against the liver phantom's ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mmfusion.elastography import (
    colour_bar_lut,
    colourmap_lut,
    decode_swe_kpa,
    detect_colour_bar,
    detect_swe_box,
)
from mmfusion.liver import LiverPhantom, PhantomConfig
from mmfusion.liver.phantom import colour_lut

SMALL = PhantomConfig(width=320, height=240)
KPA_STEP = 40.0 / 255  # one step of the phantom's 256-colour scale over 0-40 kPa


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def synthetic_frame(
    h: int = 240, w: int = 320, box: tuple[int, int, int, int] = (100, 60, 200, 160)
) -> np.ndarray:
    """Grey speckle-free frame with a JET box of 5-35 kPa and grey text."""
    rng = np.random.default_rng(0)
    frame = np.repeat(rng.integers(0, 200, (h, w), dtype=np.uint8)[:, :, None], 3, axis=2)
    x0, y0, x1, y1 = box
    ramp = np.linspace(5 / 40 * 255, 35 / 40 * 255, x1 - x0).astype(np.uint8)
    frame[y0:y1, x0:x1] = colour_lut()[ramp][None, :, :]
    cv2.putText(frame, "SWE 12.3 kPa", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230,) * 3, 1)
    return frame


def test_box_iou_on_50_phantom_frames() -> None:
    phantom = LiverPhantom(SMALL, seed=11)
    scores = []
    for index in range(50):
        pair = phantom.sample(index=index)
        box = detect_swe_box(pair.swe)
        assert box is not None
        scores.append(iou(box, pair.truth.swe_box))
    # Measured: every one of the 50 boxes exact (IoU 1.0).
    assert min(scores) >= 0.90
    assert np.mean(scores) >= 0.98


@pytest.mark.parametrize("size", [(800, 600), (160, 120)])
def test_box_at_other_frame_sizes(size: tuple[int, int]) -> None:
    phantom = LiverPhantom(PhantomConfig(width=size[0], height=size[1]), seed=2)
    for index in range(4):
        pair = phantom.sample(stage=index, index=index)
        assert iou(detect_swe_box(pair.swe), pair.truth.swe_box) >= 0.90


def test_box_survives_a_void_band_across_the_whole_box() -> None:
    frame = synthetic_frame()
    frame[100:104, 100:200] = 90  # a vessel cuts the box into two pieces
    assert detect_swe_box(frame) == (100, 60, 200, 160)


def test_colour_bar_is_never_the_box_even_when_larger() -> None:
    frame = synthetic_frame(box=(100, 100, 130, 130))  # 900 px box
    frame[20:220, 290:302] = colour_lut()[np.linspace(255, 0, 200).astype(int)][:, None, :]
    assert detect_swe_box(frame) == (100, 100, 130, 130)
    assert detect_colour_bar(frame) == (290, 20, 302, 220)


def test_frames_without_a_box_give_none() -> None:
    grey = np.full((120, 160, 3), 128, np.uint8)
    assert detect_swe_box(grey) is None
    assert detect_colour_bar(grey) is None
    bar_only = grey.copy()
    bar_only[10:110, 150:155] = colour_lut()[np.linspace(255, 0, 100).astype(int)][:, None, :]
    assert detect_swe_box(bar_only) is None
    speck = grey.copy()
    speck[50:53, 50:53] = (255, 0, 0)  # 9 px < 0.2% of the frame
    assert detect_swe_box(speck) is None
    bmode = LiverPhantom(SMALL, seed=1).sample(index=0).us
    assert detect_swe_box(np.repeat(bmode[:, :, None], 3, axis=2)) is None


def test_bad_inputs_are_named() -> None:
    with pytest.raises(TypeError, match=r"image: expected dtype uint8, got float32"):
        detect_swe_box(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"image: expected a colour image \[H, W, 3\]"):
        detect_swe_box(np.zeros((64, 64), np.uint8))
    with pytest.raises(TypeError, match=r"image: expected a numpy array"):
        decode_swe_kpa([[0, 0, 0]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"box: expected 0 <= x0 < x1 <= 64"):
        decode_swe_kpa(np.zeros((64, 64, 3), np.uint8), box=(10, 10, 80, 20))
    with pytest.raises(ValueError, match=r"kpa_range: expected finite lo < hi"):
        decode_swe_kpa(np.zeros((64, 64, 3), np.uint8), kpa_range=(40, 0))
    with pytest.raises(ValueError, match=r"colormap: expected an OpenCV colour map .*'nope'"):
        decode_swe_kpa(np.zeros((64, 64, 3), np.uint8), colormap="nope")
    with pytest.raises(ValueError, match=r"colormap: expected an \[N, 3\] uint8 RGB table"):
        colourmap_lut(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"min_area_fraction: expected a value in \(0, 1\]"):
        detect_swe_box(np.zeros((64, 64, 3), np.uint8), min_area_fraction=0)


def test_decode_hand_computed_colours() -> None:
    lut = colourmap_lut("jet")
    assert np.array_equal(lut, colour_lut())  # the phantom's scale is OpenCV's JET, RGB
    image = np.zeros((8, 8, 3), np.uint8)
    image[0, 0], image[0, 1], image[0, 2] = lut[0], lut[255], lut[51]
    image[0, 3] = (128, 128, 128)  # grey: not colour-coded
    off = lut[51].astype(int)
    off[off.argmax()] -= 10
    image[0, 4] = off  # 10 levels off: still colour 51
    kpa = decode_swe_kpa(image, kpa_range=(0, 40))
    assert kpa.dtype == np.float32 and kpa.shape == (8, 8)
    assert kpa[0, 0] == 0.0 and kpa[0, 1] == 40.0
    assert kpa[0, 2] == pytest.approx(51 / 255 * 40) and kpa[0, 4] == kpa[0, 2]
    assert np.isnan(kpa[0, 3]) and np.isnan(kpa[1:]).all()  # black is far from JET too
    shifted = decode_swe_kpa(image, kpa_range=(2, 12), box=(0, 0, 3, 1))
    assert shifted.shape == (1, 3)
    assert shifted[0].tolist() == pytest.approx([2.0, 12.0, 2 + 51 / 255 * 10])
    two = np.array([[0, 0, 255], [255, 0, 0]], np.uint8)  # a 2-colour table: blue 0, red 1
    # (0, 0, 128) and (128, 0, 0) are 127 from blue and red, (0, 76, 255) is 76 from blue:
    # all beyond the default max_distance of 40.
    assert np.isnan(decode_swe_kpa(image[:1, :3], (0, 1), colormap=two)).all()
    loose = decode_swe_kpa(image[:1, :3], (0, 1), colormap=two, max_distance=130)[0]
    assert loose.tolist() == [0.0, 1.0, 0.0]


def test_decode_matches_the_phantoms_exact_stiffness_per_pixel() -> None:
    phantom = LiverPhantom(SMALL, seed=21)
    errors, median_errors = [], []
    for index in range(12):
        stage = index % 5
        pair = phantom.sample(stage=stage, index=index)
        truth = pair.swe_kpa  # what the renderer encoded, NaN where void
        void = np.isnan(truth)
        x0, y0, x1, y1 = pair.truth.swe_box
        assert truth.shape == (y1 - y0, x1 - x0)
        kpa = decode_swe_kpa(pair.swe, (0, 40), "jet", box=pair.truth.swe_box)
        assert np.array_equal(np.isnan(kpa), void)  # NaN exactly at the void pixels
        coded = ~void & (np.nan_to_num(truth) < 40)  # the colour scale saturates at 40 kPa
        error = kpa[coded] - truth[coded]
        # The phantom floors kPa to its 256-colour scale: decoded <= true < decoded + one step.
        assert error.max() <= 1e-4 and error.min() >= -KPA_STEP - 1e-4
        errors.append(np.abs(error))
        median_errors.append(np.nanmedian(kpa) - np.median(truth[~void]))
    assert max(np.abs(median_errors)) <= KPA_STEP
    assert np.quantile(np.concatenate(errors), 0.99) <= KPA_STEP


def test_median_in_the_detected_box_tracks_the_view_stiffness() -> None:
    # Phantom v2 puts a quarter of the boxes too close to the capsule (wall values 10-30 kPa in
    # their top rows, up to 60 % overestimated below): those boxes' medians are biased (up to
    # +11.7 % measured with the default). Here every box sits 5-10 % of the depth below it.
    phantom = LiverPhantom(PhantomConfig(width=320, height=240, box_near_capsule_prob=0), seed=3)
    relative = []
    for index in range(50):
        pair = phantom.sample(index=index)
        kpa = decode_swe_kpa(pair.swe, box=detect_swe_box(pair.swe))
        if pair.truth.stiffness_kpa < 30:  # leave the saturating top of the scale out
            relative.append(np.nanmedian(kpa) / pair.truth.stiffness_kpa - 1)
    # The box median differs from the view stiffness by the median of the smooth spatial field
    # (log sd 0.08 with ~10 px correlation), the near-capsule overestimate decaying below the
    # box's top, void vessels and shadows, plus the flooring: measured at most 5.0 % here (median
    # 1.2 %; phantom v2).
    assert np.max(np.abs(relative)) <= 0.08
    assert np.median(np.abs(relative)) <= 0.03


def test_decode_with_the_legend_read_from_the_frame() -> None:
    pair = LiverPhantom(PhantomConfig(), seed=4).sample(stage=3, index=0)
    bar = detect_colour_bar(pair.swe)
    s = 1.0  # the phantom's bar at 800 x 600: x 764..776, y 84..276 (overlays.py)
    assert bar == (800 - int(36 * s), int(0.14 * 600), 800 - int(24 * s), int(0.46 * 600))
    lut = colour_bar_lut(pair.swe, bar)
    assert lut.shape == (192, 3)
    assert np.array_equal(lut[0], colour_lut()[0]) and np.array_equal(lut[-1], colour_lut()[255])
    box = detect_swe_box(pair.swe)
    from_legend = decode_swe_kpa(pair.swe, (0, 40), lut, box=box)
    from_name = decode_swe_kpa(pair.swe, (0, 40), "jet", box=box)
    assert np.array_equal(np.isnan(from_legend), np.isnan(from_name))
    step = 40 / (len(lut) - 1)
    assert np.nanmax(np.abs(from_legend - from_name)) <= step + KPA_STEP
    flipped = colour_bar_lut(pair.swe, bar, reverse=True)
    assert np.array_equal(flipped, lut[::-1])


def test_matplotlib_names_and_horizontal_bars() -> None:
    viridis = colourmap_lut("matplotlib:viridis")
    assert viridis.shape == (256, 3) and viridis.dtype == np.uint8
    assert tuple(viridis[0]) == (68, 1, 84)  # matplotlib's viridis starts at #440154
    image = np.zeros((20, 100, 3), np.uint8)
    image[5:10, 10:90] = colour_lut()[np.linspace(0, 255, 80).astype(int)][None]
    assert detect_colour_bar(image) == (10, 5, 90, 10)
    lut = colour_bar_lut(image, (10, 5, 90, 10))
    assert np.array_equal(lut[0], colour_lut()[0]) and np.array_equal(lut[-1], colour_lut()[255])
