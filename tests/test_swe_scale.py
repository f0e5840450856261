"""SWE boxes of any colour scale re-drawn on the reference scale
(:mod:`mmfusion.elastography.standardise`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmfusion.data import (
    PairedImageDataset,
    load_image,
    read_manifest,
    write_manifest,
)
from mmfusion.elastography import (
    REFERENCE_COLORMAP,
    REFERENCE_KPA_MAX,
    SWE_INPUTS,
    SWE_SCALE_COLUMN,
    SWEBoxCrop,
    colourmap_lut,
    decode_swe_kpa,
    detect_colour_bar,
    detect_swe_box,
    parse_swe_scale_kpa,
    standardise_swe_box,
    swe_crop,
    swe_scale_kpa,
)
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset

BOX = (20, 30, 100, 110)  # x0, y0, x1, y1 of the colour box in the synthetic frames
BAR = (180, 20, 188, 140)  # the legend: 120 rows, low end at the bottom
GREY = 90


def _frame(kpa: np.ndarray, colormap: str, kpa_max: float, *, reverse: bool = False) -> np.ndarray:
    """A grey 200 x 160 frame with ``kpa`` drawn in the box and the legend beside it, on the scale
    ``colormap`` from 0 to ``kpa_max``; NaN pixels of ``kpa`` stay grey (not colour-coded)."""
    lut = colourmap_lut(colormap)
    if reverse:
        lut = lut[::-1].copy()
    frame = np.full((160, 200, 3), GREY, np.uint8)
    x0, y0, x1, y1 = BOX
    box = np.full((y1 - y0, x1 - x0, 3), GREY, np.uint8)
    coded = np.isfinite(kpa)
    index = np.rint(np.clip(kpa[coded] / kpa_max, 0, 1) * 255).astype(int)
    box[coded] = lut[index]
    frame[y0:y1, x0:x1] = box
    bx0, by0, bx1, by1 = BAR
    rows = np.linspace(255, 0, by1 - by0).round().astype(int)  # top = high end
    frame[by0:by1, bx0:bx1] = lut[rows][:, None, :]
    return frame


def _field(low: float, high: float) -> np.ndarray:
    """A kPa ramp over the box, left to right, with a 10 x 10 void (NaN) square."""
    x0, y0, x1, y1 = BOX
    kpa = np.tile(np.linspace(low, high, x1 - x0, dtype=np.float32), (y1 - y0, 1))
    kpa[30:40, 30:40] = np.nan
    return kpa


def _as_reference_kpa(rgb: np.ndarray) -> np.ndarray:
    return decode_swe_kpa(rgb, (0.0, REFERENCE_KPA_MAX), REFERENCE_COLORMAP, max_distance=1.0)


def test_the_box_comes_out_on_the_reference_scale_by_hand() -> None:
    """TURBO 0-60 kPa in, JET 0-40 kPa out: each pixel's stiffness within the legend's step
    (60 kPa over 120 rows), stiffer than 40 kPa saturated, void pixels black."""
    kpa = _field(2.0, 58.0)
    out = standardise_swe_box(_frame(kpa, "turbo", 60.0), 60.0)
    assert out.shape == (80, 80, 3) and out.dtype == np.uint8
    void = np.isnan(kpa)
    assert (out[void] == 0).all()
    got = _as_reference_kpa(out)
    assert np.isfinite(got[~void]).all()  # every coded pixel is exactly a JET colour
    expected = np.minimum(kpa[~void], REFERENCE_KPA_MAX)
    step = 60.0 / (BAR[3] - BAR[1] - 1)
    assert np.abs(got[~void] - expected).max() <= step / 2 + REFERENCE_KPA_MAX / 255 + 1e-4
    jet = colourmap_lut("jet")
    assert (out[~void][expected.ravel() >= REFERENCE_KPA_MAX] == jet[-1]).all()


@settings(max_examples=25, deadline=None)
@given(
    kpa=arrays(np.float32, (80, 80), elements=st.floats(0.5, 35.0, width=32)),
    scale_a=st.sampled_from([("jet", 40.0, False), ("turbo", 60.0, False)]),
    scale_b=st.sampled_from([("rainbow", 70.0, True), ("hsv", 50.0, False), ("jet", 40.0, False)]),
)
def test_the_same_stiffness_on_two_scanners_scales_gives_the_same_input(
    kpa: np.ndarray, scale_a: tuple[str, float, bool], scale_b: tuple[str, float, bool]
) -> None:
    """Invariant: whatever the scanner's colour map, direction and top, the output codes the
    same stiffness (to the coarser legend's step), while the raw colours differ."""
    a_map, a_max, a_rev = scale_a
    b_map, b_max, b_rev = scale_b
    a = standardise_swe_box(_frame(kpa, a_map, a_max, reverse=a_rev), a_max, box=BOX)
    b = standardise_swe_box(_frame(kpa, b_map, b_max, reverse=b_rev), b_max, box=BOX)
    got_a, got_b = _as_reference_kpa(a), _as_reference_kpa(b)
    step = max(a_max, b_max) / (BAR[3] - BAR[1] - 1) + 2 * REFERENCE_KPA_MAX / 255
    assert np.abs(got_a - kpa).max() <= step
    assert np.abs(got_a - got_b).max() <= 2 * step


def test_a_raw_box_read_on_the_reference_scale_is_wrong_for_another_scanner() -> None:
    """The shift the function removes: a reversed RAINBOW 0-70 kPa box read as JET 0-40 kPa."""
    kpa = _field(3.0, 20.0)
    frame = _frame(kpa, "rainbow", 70.0, reverse=True)
    x0, y0, x1, y1 = BOX
    raw = decode_swe_kpa(frame, (0.0, 40.0), "jet", box=BOX)
    fixed = _as_reference_kpa(standardise_swe_box(frame, 70.0))
    coded = np.isfinite(kpa)
    assert np.nanmedian(np.abs(raw[coded] - kpa[coded])) > 5.0
    assert np.abs(fixed[coded] - kpa[coded]).max() < 1.0


@pytest.mark.parametrize("bad", [0, -3.0, float("nan"), float("inf"), True, "40"])
def test_bad_kpa_max_names_the_argument(bad: object) -> None:
    frame = _frame(_field(2, 20), "jet", 40.0)
    with pytest.raises(ValueError, match=re.escape(f"kpa_max: expected a positive number of kPa, got {bad!r}")):
        standardise_swe_box(frame, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference_kpa_max: expected a positive number"):
        standardise_swe_box(frame, 40.0, reference_kpa_max=bad)  # type: ignore[arg-type]


def test_a_frame_without_legend_or_box_is_an_error() -> None:
    frame = _frame(_field(2, 20), "jet", 40.0)
    no_legend = frame.copy()
    no_legend[BAR[1] : BAR[3], BAR[0] : BAR[2]] = GREY
    with pytest.raises(ValueError, match=r"image: expected an SWE frame with a colour bar \(legend\)"):
        standardise_swe_box(no_legend, 40.0)
    with pytest.raises(ValueError, match="image: expected an SWE frame with a colour box"):
        standardise_swe_box(np.full((160, 200, 3), GREY, np.uint8), 40.0)


# --- the crop mode on the phantom's three scanner styles ---------------------------------------


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three patients, one per site (JET 0-40, TURBO 0-60, reversed RAINBOW 0-70 kPa; 17 views),
    at 400 x 300 px: smaller frames often have no room for the legend."""
    root = tmp_path_factory.mktemp("swe_scale_phantom")
    csv = make_phantom_dataset(root, n_patients=3, seed=0, workers=1,
                               config=PhantomConfig(width=400, height=300))  # fmt: skip
    assert {r.extra["site"] for r in read_manifest(csv, labels=METAVIR).rows} == {"A", "B", "C"}
    return csv


def test_box_kpa_crop_reads_each_sites_scale_like_its_true_colour_map(three_sites: Path) -> None:
    """Decoding the crop on the reference scale gives the stiffness that the site's true colour
    map (which the crop never sees: it reads the legend) gives, to the legend's step."""
    ds = PairedImageDataset(three_sites, labels=METAVIR, crop={"swe": SWEBoxCrop("box_kpa")})
    config = PhantomConfig(width=400, height=300)
    for index, row in enumerate(ds.manifest.rows):
        image = np.ascontiguousarray(ds.images(index)["swe"].permute(1, 2, 0).numpy())
        raw = load_image(row.paths["swe"], frame=row.frame("swe"))
        style = config.style(row.extra["site"])
        assert float(row.extra[SWE_SCALE_COLUMN]) == style.kpa_max
        true = decode_swe_kpa(raw, (0.0, style.kpa_max), style.colour_lut(), box=detect_swe_box(raw))
        got = _as_reference_kpa(image)
        assert got.shape == true.shape
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(true))  # same void pixels
        bar = detect_colour_bar(raw)
        assert bar is not None
        step = style.kpa_max / (bar[3] - bar[1] - 1) + REFERENCE_KPA_MAX / 255
        diff = np.abs(got - true)[np.isfinite(true)]
        assert abs(np.median(got[np.isfinite(got)]) - np.median(true[np.isfinite(true)])) <= step
        assert (diff <= step).mean() >= 0.95, row.extra["site"]
    assert set(ds.applied_crops[0].values()) == {"sector", "swe_box_kpa"}


def test_box_kpa_needs_the_scale_column_or_a_default(three_sites: Path, tmp_path: Path) -> None:
    manifest = read_manifest(three_sites, labels=METAVIR)
    rows = [
        {"patient_id": r.patient_id, "us_path": str(r.paths["us"]), "swe_path": str(r.paths["swe"]),
         "stage": r.stage}
        for r in manifest.rows
    ]  # fmt: skip
    bare = write_manifest(tmp_path / "bare.csv", rows, ["patient_id", "us_path", "swe_path", "stage"])
    with pytest.raises(ValueError, match=re.escape(
        "swe_scale_kpa: crop mode 'swe_box_kpa' needs the top of each SWE frame's colour scale in "
        "kPa; manifest line 2 has no swe_scale_kpa value; add the column or pass "
        "SWEBoxCrop('box_kpa', scale_kpa=...)"  # the default scale moved to the crop
    )):  # fmt: skip
        PairedImageDataset(bare, labels=METAVIR, crop={"swe": SWEBoxCrop("box_kpa")})[0]
    site_a = next(i for i, r in enumerate(manifest.rows) if r.extra["site"] == "A")
    given = PairedImageDataset(bare, labels=METAVIR,
                               crop={"swe": SWEBoxCrop("box_kpa", scale_kpa=40.0)})  # fmt: skip
    column = PairedImageDataset(three_sites, labels=METAVIR, crop={"swe": SWEBoxCrop("box_kpa")})
    assert float(manifest.rows[site_a].extra[SWE_SCALE_COLUMN]) == 40.0
    assert given.images(site_a)["swe"].equal(column.images(site_a)["swe"])
    with pytest.raises(ValueError, match="scale_kpa: expected a positive number of kPa, got -1"):
        SWEBoxCrop("box_kpa", scale_kpa=-1)


def test_the_manifest_validates_and_reads_the_scale_column(tmp_path: Path) -> None:
    """``swe_scale_kpa`` is checked up front like the frame columns, every bad line listed."""
    from mmfusion.data import ManifestError

    columns = ["patient_id", "us_path", "stage", SWE_SCALE_COLUMN]
    good = [{"patient_id": "P1", "us_path": "a.png", "stage": 0, SWE_SCALE_COLUMN: "70"},
            {"patient_id": "P2", "us_path": "b.png", "stage": 1, SWE_SCALE_COLUMN: ""}]  # fmt: skip
    parsers = {SWE_SCALE_COLUMN: parse_swe_scale_kpa}  # the generic reader knows no column
    rows = read_manifest(write_manifest(tmp_path / "ok.csv", good, columns), verify="none",
                         labels=METAVIR, columns=parsers).rows  # fmt: skip
    assert [swe_scale_kpa(r) for r in rows] == [70.0, None]
    bad = [{**good[0], SWE_SCALE_COLUMN: v} for v in ("-3", "0", "forty", "nan")]
    with pytest.raises(ManifestError) as err:
        read_manifest(write_manifest(tmp_path / "bad.csv", bad, columns), verify="none",
                      labels=METAVIR, columns=parsers)  # fmt: skip
    assert err.value.problems == [  # the generic reader's wording around the parser's
        f"line {i + 2}: swe_scale_kpa {v!r} is not valid: expected a positive number of kPa, "
        f"got {v!r}"
        for i, v in enumerate(("-3", "0", "forty", "nan"))
    ]


def test_swe_input_box_kpa() -> None:
    assert "box_kpa" in SWE_INPUTS
    assert swe_crop("box_kpa").key == "swe_box_kpa"
