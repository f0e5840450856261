"""Issue 28, item 1: the phantom's interaction knob (a decoy region only B-mode locates)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data.manifest import read_manifest
from mmfusion.elastography.colour import decode_swe_kpa
from mmfusion.liver import METAVIR
from mmfusion.liver.phantom import LiverPhantom, PhantomConfig, make_phantom_dataset, phantom_truth
from mmfusion.liver.phantom import generator as generator_module
from mmfusion.liver.phantom.interaction import DECOY_DARKENING_DB

SMALL = PhantomConfig(width=160, height=120)
DECOY = dataclasses.replace(SMALL, decoy_share=1.0)


def _views(config: PhantomConfig, seed: int, n_patients: int):
    phantom = LiverPhantom(config, seed)
    for patient in phantom.cohort(n_patients):
        for view in range(patient.n_views):
            yield patient, phantom.render(patient, view)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "phantom.json"
    }


def test_default_phantom_never_runs_the_decoy_code_and_ignores_decoy_fields(tmp_path, monkeypatch):
    """The default (decoy_share = 0) generates byte-identical files (PNG, DICOM, manifest) whatever
    the other decoy fields say, and never calls the decoy code."""
    default = make_phantom_dataset(tmp_path / "default", 4, seed=3, config=SMALL, workers=0)

    def boom(*args, **kwargs):
        raise AssertionError("the decoy code ran with decoy_share = 0")

    monkeypatch.setattr(generator_module, "sample_decoy", boom)
    monkeypatch.setattr(generator_module, "darken_bmode", boom)
    monkeypatch.setattr(generator_module, "patient_decoy_kpa", boom)
    other = dataclasses.replace(
        SMALL, decoy_cover=(0.1, 0.2), decoy_median_kpa=20.0, decoy_log_sigma=0.9
    )
    changed = make_phantom_dataset(tmp_path / "changed", 4, seed=3, config=other, workers=0)
    assert _hashes(default.parent) == _hashes(changed.parent)
    assert len(_hashes(default.parent)) > 10  # manifest plus PNG and DICOM pairs
    header = next(csv.reader(default.open()))
    assert not {"decoy", "decoy_cover", "decoy_kpa"} & set(header)
    assert any(name.endswith(".dcm") for name in _hashes(default.parent))


def test_views_without_a_decoy_are_the_default_views_and_share_is_rho():
    """Decoy draws come from their own stream: at rho = 0.5 every view without a decoy is
    byte-identical to the default phantom's, and the share of decoy views is about rho."""
    half = dataclasses.replace(SMALL, decoy_share=0.5)
    flags = []
    for (_, base), (_, pair) in zip(_views(SMALL, 7, 30), _views(half, 7, 30), strict=True):
        flags.append(pair.truth.decoy)
        if not pair.truth.decoy:
            assert np.array_equal(base.us, pair.us) and np.array_equal(base.swe, pair.swe)
            assert pair.decoy_mask is None
    n = len(flags)
    assert n > 150
    assert abs(np.mean(flags) - 0.5) < 4 * np.sqrt(0.25 / n)


def test_decoy_cover_darker_bmode_and_same_spatial_texture():
    """Per decoy view: the region covers 30-70 % of the box; B-mode is darker exactly by the stated
    dB inside it (liver pixels) and unchanged elsewhere; the SWE frame outside the box is the
    default's (no outline); inside the box the stiffness map is the default's, rescaled by
    decoy/liver stiffness in the region (the liver's spatial texture) where no artifact
    overrides."""
    for (_, base), (patient, pair) in zip(_views(SMALL, 11, 6), _views(DECOY, 11, 6), strict=True):
        truth = pair.truth
        assert truth.decoy and pair.decoy_mask is not None
        mask = pair.decoy_mask
        assert 0.3 - 1 / mask.size <= mask.mean() <= 0.7 + 1 / mask.size
        assert abs(mask.mean() - truth.decoy_cover) <= 1 / mask.size + 1e-9
        # B-mode: never brighter; in the region inside the box, darker by about the stated shift
        us, us0 = pair.us.astype(int), base.us.astype(int)
        assert np.all(us <= us0)
        x0, y0, x1, y1 = truth.swe_box
        x0, x1 = x0 - truth.swe_shift, x1 - truth.swe_shift  # the same tissue in the US frame
        inside, inside0 = us[y0:y1, x0:x1], us0[y0:y1, x0:x1]
        lit = mask & (inside0 > 60) & (inside0 < 250)  # away from clipping
        dr = DECOY.style(patient.site).dynamic_range_db
        assert lit.sum() > 20
        shift = DECOY_DARKENING_DB * 255 / dr
        assert np.median((inside0 - inside)[lit]) == pytest.approx(shift, abs=1.5)
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert np.all(inside[~near] == inside0[~near])  # only the region and its 1-2 px edge ramp
        # SWE: identical outside the box (the undarkened B-mode: the region is not drawn there)
        bx0, by0, bx1, by1 = truth.swe_box
        outside = np.ones(pair.swe.shape[:2], dtype=bool)
        outside[by0 - 1 : by1 + 1, bx0 - 1 : bx1 + 1] = False
        assert np.array_equal(pair.swe[outside], base.swe[outside])
        # same spatial texture: decoy map = default map x (decoy / liver) in the region
        k, k0 = pair.swe_kpa, base.swe_kpa
        assert np.array_equal(np.isnan(k), np.isnan(k0))
        ok = ~np.isnan(k)
        assert np.array_equal(k[ok & ~mask], k0[ok & ~mask])
        ratio = truth.decoy_kpa / truth.stiffness_kpa
        band = ok & mask
        scaled = np.isclose(k[band], k0[band] * ratio, rtol=1e-5)
        kept = k[band] == k0[band]  # wall, kidney or soft vessel values override both alike
        assert np.all(scaled | kept) and scaled.mean() > 0.5


def test_decoy_colour_decodes_near_the_decoy_stiffness():
    """Read back with mmfusion.elastography's decoder, the colour in the region gives the decoy's
    stiffness and outside it the liver's (medians over the region's and the liver's pixels)."""
    errors_decoy, errors_liver = [], []
    for patient, pair in _views(DECOY, 5, 8):
        truth = pair.truth
        style = DECOY.style(patient.site)
        kpa = decode_swe_kpa(pair.swe, (0.0, style.kpa_max), style.colour_lut(), box=truth.swe_box)
        mask = pair.decoy_mask
        if np.isfinite(kpa[mask]).sum() < 20 or np.isfinite(kpa[~mask]).sum() < 20:
            continue
        errors_decoy.append(np.log(np.nanmedian(kpa[mask]) / truth.decoy_kpa))
        errors_liver.append(np.log(np.nanmedian(kpa[~mask]) / truth.stiffness_kpa))
    assert len(errors_decoy) > 20
    assert np.median(np.abs(errors_decoy)) < 0.08
    assert np.median(np.abs(errors_liver)) < 0.08


def test_void_black():
    """void_black draws the box's void pixels black; by default they show B-mode grey."""
    for black in (False, True):
        config = dataclasses.replace(SMALL, void_black=black)
        n_void = 0
        for _, pair in _views(config, 2, 3):
            x0, y0, x1, y1 = pair.truth.swe_box
            box = pair.swe[y0:y1, x0:x1].astype(int)
            void = np.isnan(pair.swe_kpa)
            n_void += int(void.sum())
            if black:
                assert np.all(box[void] == 0)
            else:
                assert np.all(box[void][:, 0] == box[void][:, 1]) and box[void].max() > 0
        assert n_void > 0


def test_writer_decoy_columns_params_and_truth(tmp_path):
    """With rho > 0 the manifest gains decoy truth columns that phantom_truth reads back, the knob
    is recorded in phantom.json, and a folder written with another rho is refused."""
    config = dataclasses.replace(SMALL, decoy_share=0.5, void_black=True)
    manifest = make_phantom_dataset(tmp_path, 3, seed=1, config=config, workers=0)
    rows = read_manifest(manifest, labels=METAVIR)
    flags = [row.extra["decoy"] for row in rows]
    assert set(flags) <= {"0", "1"} and "1" in flags
    for row in rows:
        truth = phantom_truth(row)
        assert truth.decoy == (row.extra["decoy"] == "1")
        assert (0.3 <= truth.decoy_cover <= 0.7) if truth.decoy else truth.decoy_cover == 0.0
    stored = json.loads((tmp_path / "phantom.json").read_text())["config"]
    assert stored["decoy_share"] == 0.5 and stored["void_black"] is True
    with pytest.raises(FileExistsError, match="other parameters.*decoy_share"):
        make_phantom_dataset(
            tmp_path, 3, seed=1, config=dataclasses.replace(config, decoy_share=1.0), workers=0
        )


def test_sample_with_decoy_and_config_errors():
    pair = LiverPhantom(DECOY, seed=0).sample(stage=2, index=3)
    assert pair.truth.decoy and pair.decoy_mask is not None
    for bad in (
        {"decoy_share": 1.5},
        {"decoy_cover": (0.6, 0.3)},
        {"decoy_cover": (0.0, 0.5)},
        {"decoy_median_kpa": 0.0},
        {"decoy_log_sigma": -0.1},
        {"void_black": 1},
    ):
        name = next(iter(bad))
        with pytest.raises(ValueError, match=name):
            PhantomConfig(**bad)


def test_decoy_shape_does_not_tell_decoy_from_liver():
    """Inside the box the decoy and the liver are the two sides of one random cut: given equal
    shares, their shapes (connected pieces, centroid's distance from the box centre) agree in
    distribution, so only the colour values and shares (the ceilings' observation) remain."""
    from types import SimpleNamespace

    from mmfusion.liver.phantom.interaction import sample_decoy

    config = dataclasses.replace(SMALL, decoy_share=1.0, decoy_cover=(0.45, 0.55))
    scene = SimpleNamespace(mask=np.ones((120, 160), dtype=bool))
    box = (50, 30, 110, 90)
    stats = {True: [], False: []}
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:60]
    for _ in range(300):
        mask = sample_decoy(rng, scene, box, config, 8.0).mask(box)
        for side in (True, False):
            region = mask if side else ~mask
            pieces = cv2.connectedComponents(region.astype(np.uint8))[0] - 1
            centre = np.hypot(xx[region].mean() - 29.5, yy[region].mean() - 29.5)
            stats[side].append((pieces, centre))
    decoy, liver = np.array(stats[True]), np.array(stats[False])
    assert np.mean(decoy[:, 0] == 1) > 0.9 and np.mean(liver[:, 0] == 1) > 0.9
    se = np.sqrt((decoy[:, 1].var() + liver[:, 1].var()) / len(decoy))
    assert abs(decoy[:, 1].mean() - liver[:, 1].mean()) < 4 * se


def test_decoy_stiffness_is_the_patients_and_shares_are_symmetric():
    """The decoy is part of the patient: one stiffness Z per patient (log-normal around
    decoy_median_kpa, log-sd decoy_log_sigma), each decoy view within the liver's per-view
    variation of it (log-sd view_stiffness_log_sd); the cover u ~ U(0.3, 0.7), so the liver's
    share 1 - u has the decoy's distribution."""
    from types import SimpleNamespace

    from mmfusion.liver.phantom.interaction import patient_decoy_kpa, sample_decoy

    cfg = dataclasses.replace(SMALL, decoy_share=1.0)
    n = 4_000
    log_z = np.log([patient_decoy_kpa(np.random.default_rng([0, i]), cfg) for i in range(n)])
    assert abs(log_z.mean() - np.log(8.0)) < 4 * 0.3 / np.sqrt(n)
    assert log_z.std() == pytest.approx(0.3, rel=4 / np.sqrt(2 * n))
    scene = SimpleNamespace(mask=np.ones((48, 64), dtype=bool))
    rng = np.random.default_rng(1)
    draws = [sample_decoy(rng, scene, (16, 12, 48, 36), cfg, 10.0) for _ in range(600)]
    ratio = np.log([d.kpa / 10.0 for d in draws])
    assert abs(ratio.mean()) < 4 * 0.04 / np.sqrt(600)
    assert ratio.std() == pytest.approx(cfg.view_stiffness_log_sd, rel=4 / np.sqrt(1200))
    cover = np.array([d.cover for d in draws])
    assert cover.min() >= 0.3 and cover.max() <= 0.7
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # decoy share u vs liver share 1 - u: same quantiles
        assert abs(np.quantile(cover, q) - np.quantile(1 - cover, q)) < 0.06
    # in rendered views: each patient's decoy views read one Z (within 5 view sd of it)
    phantom = LiverPhantom(DECOY, 4)
    for patient in phantom.cohort(3):
        z = patient_decoy_kpa(np.random.default_rng([4, 28, 12, patient.index]), DECOY)
        kpa = [phantom.render(patient, v).truth.decoy_kpa for v in range(patient.n_views)]
        assert np.all(np.abs(np.log(np.array(kpa) / z)) < 5 * DECOY.view_stiffness_log_sd)
