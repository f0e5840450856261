"""Phantom v2: the unchanged latent model, sites and styles, artifacts, the written data set.

Pins what version 2 of the liver phantom promises (src/mmfusion/liver/phantom): the latent model
(stage -> stiffness, texture, views) is the one of version 1 whatever the sites' styles; each style
renders deterministically with the fan and the SWE box where its ground truth says; rib shadows,
organs and too-high SWE boxes appear when asked for; site C ("dual") is written as DICOM with its
ultrasound regions tagged, and the ROI of the dual SWE screen is the elastogram.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.data import detect_sector, image_roi, load_image, read_manifest
from mmfusion.elastography import detect_swe_box
from mmfusion.liver import (
    METAVIR,
    STYLES,
    LiverPhantom,
    PhantomConfig,
    make_phantom_dataset,
    phantom_truth,
    sample_cohort,
)
from mmfusion.liver.phantom.artifacts import GALLBLADDER, KIDNEY
from mmfusion.liver.phantom.bmode import BModeScene, render_bmode
from mmfusion.liver.phantom.geometry import SectorGeometry, sample_geometry
from mmfusion.liver.phantom.swe import sample_swe_box

SMALL = PhantomConfig(width=320, height=240)
SITES = {"A": "classic", "B": "wide", "C": "dual"}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# -- 1. the latent model ---------------------------------------------------------------------------


def _latents(cohort: list) -> list[tuple]:
    return [(p.index, p.patient_id, p.stage, p.stiffness_kpa, p.texture, p.n_views) for p in cohort]


def test_the_latent_model_is_version_1s() -> None:
    cohort = sample_cohort(250, 0, PhantomConfig())
    assert np.bincount([p.stage for p in cohort], minlength=5).tolist() == [40, 70, 69, 48, 23]
    assert sum(p.n_views for p in cohort) == 1414
    classic = sample_cohort(250, 0, PhantomConfig(site_styles=("classic",)))
    assert _latents(cohort) == _latents(classic)
    assert {p.site for p in classic} == {"A"} and {p.site for p in cohort} == {"A", "B", "C"}


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_patients=st.integers(1, 120),
    styles=st.sampled_from([("classic",), ("wide", "dual"), ("dual", "classic", "wide", "wide")]),
)
def test_latents_do_not_depend_on_the_sites_and_sites_are_even_per_stage(
    seed: int, n_patients: int, styles: tuple[str, ...]
) -> None:
    config = PhantomConfig(site_styles=styles)
    cohort = sample_cohort(n_patients, seed, config)
    assert _latents(cohort) == _latents(sample_cohort(n_patients, seed, PhantomConfig()))
    assert {p.site for p in cohort} <= set(config.sites)
    for stage in range(5):
        sites = [p.site for p in cohort if p.stage == stage]
        counts = [sites.count(site) for site in config.sites]
        assert max(counts) - min(counts) <= 1, (stage, counts)


# -- 2. determinism of each style ------------------------------------------------------------------


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**16), index=st.integers(0, 50))
def test_each_style_is_deterministic_and_sites_differ(seed: int, index: int) -> None:
    config = PhantomConfig(width=160, height=120)
    pairs = {}
    for site in config.sites:
        a = LiverPhantom(config, seed).sample(index=index, site=site)
        b = LiverPhantom(config, seed).sample(index=index, site=site)
        assert a.us.tobytes() == b.us.tobytes() and a.swe.tobytes() == b.swe.tobytes()
        assert a.truth == b.truth
        assert (a.truth.site, a.truth.style) == (site, SITES[site])
        pairs[site] = a
    default = LiverPhantom(config, seed).sample(index=index)
    assert default.truth.site == "A" and np.array_equal(default.us, pairs["A"].us)
    # the same latent draw (stage, stiffness, texture), rendered by each site's scanner
    latents = {(p.truth.stage, p.truth.stiffness_kpa, p.truth.texture) for p in pairs.values()}
    assert len(latents) == 1
    for one, other in (("A", "B"), ("A", "C"), ("B", "C")):
        assert not np.array_equal(pairs[one].us, pairs[other].us)
        assert not np.array_equal(pairs[one].swe, pairs[other].swe)


def test_an_unknown_site_is_named() -> None:
    with pytest.raises(ValueError, match="site: expected one of"):
        LiverPhantom(SMALL).sample(site="D")
    with pytest.raises(ValueError, match="site"):
        SMALL.style("Z")


# -- 3. known positions ----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "n"), [((320, 240), 15), ((800, 600), 3)])
@pytest.mark.parametrize("site", ["A", "B", "C"])
def test_fan_and_box_are_where_the_truth_says(site: str, size: tuple[int, int], n: int) -> None:
    config = PhantomConfig(width=size[0], height=size[1])
    width, height = size
    phantom = LiverPhantom(config, seed=7)
    dual = config.style(site).layout == "dual"
    for index in range(n):
        pair = phantom.sample(index=index, site=site)
        truth = pair.truth
        us_fan, swe_fan = truth.sector_mask("us"), truth.sector_mask("swe")
        # measured (seed 7): sector IoU >= 0.94 (a rib shadow reaching the fan's far edge is
        # left out by the contour), box IoU 1.0
        assert _iou(detect_sector(pair.us).mask, us_fan) >= 0.90
        if not dual:  # a dual screen holds two fans: contour detection may take either
            assert truth.swe_shift == 0 and np.array_equal(us_fan, swe_fan)
            assert _iou(detect_sector(pair.swe).mask, swe_fan) >= 0.90
        box = detect_swe_box(pair.swe)
        assert box is not None and _box_iou(box, truth.swe_box) >= 0.90
        x0, y0, x1, y1 = truth.swe_box
        assert swe_fan[y0:y1, x0:x1].all()  # the colour box lies inside the SWE fan
        if dual:
            # the B-mode frame shows the fan centred, the screen the elastogram on the right
            assert abs(truth.sector_geometry("us").apex_x - width / 2) <= 0.01 * width + 1
            assert x0 >= width // 2 and not swe_fan[:, : width // 2].any()
            assert truth.swe_shift == width // 2 - (width - width // 2) // 2
            assert truth.sector_geometry("swe") == replace(
                truth.geometry, apex_x=truth.geometry.apex_x + truth.swe_shift
            )
            assert not us_fan[:, : width // 4 - 1].any()
            assert not us_fan[:, 3 * width // 4 + 1 :].any()
            # the dual screen's left half is the B-mode view (grey), the right the elastogram
            left = pair.swe[:, : width // 2].astype(int)
            right = pair.swe[:, width // 2 :].astype(int)
            assert (left.max(axis=2) - left.min(axis=2) > 60).sum() < 0.002 * left[..., 0].size
            assert (right.max(axis=2) - right.min(axis=2) > 60).sum() > 0.5 * (x1 - x0) * (y1 - y0)


# -- 4. artifacts where expected -------------------------------------------------------------------


def _scene(
    config: PhantomConfig, seed: int
) -> tuple[np.random.Generator, SectorGeometry, BModeScene]:
    """A site-A B-mode scene (texture 0.1, F0-F2-like), as ``LiverPhantom`` renders one."""
    rng = np.random.default_rng(seed)
    style = config.style("A")
    geom = sample_geometry(rng, config, style)
    return rng, geom, render_bmode(rng, geom, 0.1, config, style)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_rib_shadows_darken_the_fan_below_them(seed: int) -> None:
    _, _, scene = _scene(replace(SMALL, rib_shadow_prob=1.0), seed)
    shadow = scene.shadow
    assert shadow.any() and not (shadow & ~scene.mask).any()
    # measured over 250 seeds: the shadow's mean is at most 0.60 of the rest of the fan's, and
    # at least 41 grey levels below it
    dark, rest = scene.image[shadow].mean(), scene.image[scene.mask & ~shadow].mean()
    assert dark < 0.7 * rest and dark < rest - 30
    _, _, plain = _scene(replace(SMALL, rib_shadow_prob=0.0), seed)
    assert not plain.shadow.any()


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_kidney_and_gallbladder_appear_when_asked_for(seed: int) -> None:
    _, _, kidney = _scene(replace(SMALL, organ_prob=(1.0, 0.0)), seed)
    assert (kidney.organs == KIDNEY).any() and not (kidney.organs == GALLBLADDER).any()
    _, _, gallbladder = _scene(replace(SMALL, organ_prob=(0.0, 1.0)), seed)
    inside = gallbladder.organs == GALLBLADDER
    assert inside.any() and not (gallbladder.organs == KIDNEY).any()
    # anechoic: measured 3-10 grey levels inside, 80-100 in the rest of the fan (the ratio at
    # most 0.19 over 250 seeds)
    rest = gallbladder.mask & ~inside
    assert gallbladder.image[inside].mean() < 0.3 * gallbladder.image[rest].mean()
    _, _, neither = _scene(replace(SMALL, organ_prob=(0.0, 0.0)), seed)
    assert not neither.organs.any()


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_box_near_the_capsule_starts_at_or_above_it(seed: int) -> None:
    for prob in (1.0, 0.0):
        config = replace(SMALL, box_near_capsule_prob=prob)
        rng, geom, scene = _scene(config, seed)
        x0, y0, x1, y1 = sample_swe_box(rng, geom, scene.capsule_r, config, scene.shadow)
        top = scene.capsule_depth[y0, x0:x1]  # signed depth below the capsule, pixels
        span = geom.r_outer - geom.r_inner
        if prob:  # at or above the capsule; over 250 seeds: min of the top row <= 0.07 px,
            # its median <= 0.005 of the fan's depth span (~200 px)
            assert top.min() <= 0.01 * span and np.median(top) <= 0.02 * span
        else:  # the recommended 5-10 % of the depth below it (measured >= 0.045 of the span)
            assert top.min() >= 0.03 * span


# -- 5. the written data set -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantom_v2")
    return make_phantom_dataset(root, n_patients=6, config=SMALL, workers=1)


def test_manifest_has_sites_styles_and_native_formats(native: Path) -> None:
    with native.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["site"] for row in rows} == {"A", "B", "C"}
    for row in rows:
        style = STYLES[SITES[row["site"]]]
        assert row["style"] == style.name
        assert float(row["swe_scale_kpa"]) == style.kpa_max
        assert int(row["swe_shift"]) == (80 if row["site"] == "C" else 0)  # 320 px: 160 - 80
        suffix = ".dcm" if row["site"] == "C" else ".png"
        assert Path(row["us_path"]).suffix == Path(row["swe_path"]).suffix == suffix
    params = json.loads((native.parent / "phantom.json").read_text())
    assert params["version"] == 2 and params["image_format"] == "native"
    assert params["config"]["site_styles"] == ["classic", "wide", "dual"]


def test_site_c_dicom_has_its_ultrasound_regions(native: Path) -> None:
    pydicom = pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")
    from pydicom.uid import RLELossless

    rows = [row for row in read_manifest(native, labels=METAVIR) if row.extra["site"] == "C"]
    assert rows
    for row in rows[:3]:
        truth = phantom_truth(row)
        swe = pydicom.dcmread(row.paths["swe"])
        us = pydicom.dcmread(row.paths["us"])
        assert swe.file_meta.TransferSyntaxUID == us.file_meta.TransferSyntaxUID == RLELossless
        regions = swe.SequenceOfUltrasoundRegions
        assert len(regions) == 2 and len(us.SequenceOfUltrasoundRegions) == 1
        assert all(r.RegionDataType == 1 for r in [*regions, *us.SequenceOfUltrasoundRegions])
        boxes = [
            (r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1 + 1,
             r.RegionLocationMaxY1 + 1)
            for r in regions
        ]  # fmt: skip
        sizes = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
        assert len(sizes) == 1  # two equal views
        assert boxes[0][2] <= truth.width // 2 <= boxes[1][0]  # B-mode view left, elastogram right
        x0, y0, x1, y1 = truth.swe_box
        bx0, by0, bx1, by1 = boxes[1]
        assert bx0 <= x0 and by0 <= y0 and x1 <= bx1 and y1 <= by1
        # the ROI of the screen is the elastogram's region, its fan the SWE fan
        found = image_roi(row.paths["swe"])
        assert found.source == "dicom_region" and found.region.index == 1
        assert found.roi.bbox == boxes[1]
        assert _iou(found.roi.mask, truth.sector_mask("swe")) >= 0.90
        found_us = image_roi(row.paths["us"])
        assert found_us.source == "dicom_region" and found_us.region.index == 0
        assert _iou(found_us.roi.mask, truth.sector_mask("us")) >= 0.90


def test_written_pixels_are_the_rendered_ones(native: Path) -> None:
    manifest = read_manifest(native, labels=METAVIR)
    phantom = LiverPhantom(SMALL, seed=0)
    patients = {p.patient_id: p for p in phantom.cohort(6)}
    seen = set()
    for row in manifest:
        site = row.extra["site"]
        if site in seen:
            continue
        seen.add(site)
        pair = phantom.render(patients[row.patient_id], int(row.extra["view"]))
        truth = phantom_truth(row)  # the manifest keeps 4 decimals of the latents
        assert truth == replace(pair.truth, **{
            name: round(getattr(pair.truth, name), 4)
            for name in ("stiffness_kpa", "latent_stiffness_kpa", "texture", "latent_texture")
        })  # fmt: skip
        grey = np.repeat(pair.us[:, :, None], 3, axis=2)  # load_image replicates grey to RGB
        assert np.array_equal(load_image(row.paths["us"]), grey)
        assert np.array_equal(load_image(row.paths["swe"]), pair.swe)
    assert seen == {"A", "B", "C"}


# -- 6. formats and validation ---------------------------------------------------------------------


def test_png_format_writes_no_dicom(tmp_path: Path) -> None:
    config = PhantomConfig(width=160, height=120)
    with pytest.warns(UserWarning, match="may crop its B-mode view instead of the elastogram"):
        path = make_phantom_dataset(tmp_path, n_patients=3, config=config, workers=0,
                                    image_format="png")
    manifest = read_manifest(path, labels=METAVIR)
    assert "C" in {row.extra["site"] for row in manifest}  # the DICOM site is written as PNG
    assert not list(tmp_path.rglob("*.dcm"))
    assert {p.suffix for row in manifest for p in row.paths.values()} == {".png"}
    with pytest.raises(ValueError, match="image_format: expected one of"):
        make_phantom_dataset(
            tmp_path / "x", n_patients=1, config=config, image_format="jpeg"  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"site_styles": ("classic", "fancy")}, "site_styles"),
        ({"site_styles": ()}, "site_styles"),
        ({"rib_shadow_prob": 1.5}, "rib_shadow_prob"),
        ({"reverberation_prob": -0.1}, "reverberation_prob"),
        ({"box_near_capsule_prob": 2.0}, "box_near_capsule_prob"),
        ({"organ_prob": (0.3, 1.2)}, "organ_prob"),
        ({"border_touch_prob": -1.0}, "border_touch_prob"),
    ],
)
def test_config_names_the_bad_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PhantomConfig(**kwargs)


def test_custom_styles_are_accepted() -> None:
    narrow = replace(STYLES["classic"], name="narrow", opening_deg=(40.0, 42.0))
    config = PhantomConfig(width=160, height=120, site_styles=(narrow, "dual"))
    assert config.sites == ("A", "B") and config.style("A") is narrow
    pair = LiverPhantom(config, seed=1).sample(index=0, site="A")
    assert pair.truth.style == "narrow" and 20.0 <= pair.truth.geometry.half_angle_deg <= 21.0
    assert json.dumps(config.as_dict())  # plain JSON, styles included


def test_a_version_1_folder_is_named_as_another_generator_version(tmp_path: Path) -> None:
    config = PhantomConfig(width=160, height=120, site_styles=("classic",))
    make_phantom_dataset(tmp_path, n_patients=2, config=config, workers=0)
    params = tmp_path / "phantom.json"
    stored = json.loads(params.read_text())
    del stored["version"], stored["image_format"]  # what a version-1 generator wrote
    params.write_text(json.dumps(stored))
    with pytest.raises(FileExistsError, match=r"another version of the generator \(version 1 vs 2\)"):
        make_phantom_dataset(tmp_path, n_patients=2, config=config, workers=0)
