"""The liver phantom: determinism, cohort proportions, ground truth, stage signal, ceiling."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data import read_manifest
from mmfusion.liver import (
    METAVIR,
    LiverPhantom,
    PhantomConfig,
    bayes_ceiling,
    make_phantom_dataset,
    phantom_truth,
)
from mmfusion.liver.phantom import colour_lut, generator_fingerprint, sample_cohort

SMALL = PhantomConfig(width=160, height=120)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_render_is_deterministic() -> None:
    a, b = LiverPhantom(SMALL, seed=4), LiverPhantom(SMALL, seed=4)
    patient = a.cohort(3)[1]
    pa, pb = a.render(patient, 0), b.render(patient, 0)
    assert np.array_equal(pa.us, pb.us) and np.array_equal(pa.swe, pb.swe)
    assert pa.truth == pb.truth
    other = LiverPhantom(SMALL, seed=5).render(patient, 0)
    assert not np.array_equal(pa.us, other.us)
    assert not np.array_equal(pa.us, a.render(patient, 1).us)


def test_dataset_is_deterministic_for_any_worker_count(tmp_path: Path) -> None:
    one = make_phantom_dataset(tmp_path / "a", n_patients=4, seed=1, config=SMALL, workers=0)
    two = make_phantom_dataset(tmp_path / "b", n_patients=4, seed=1, config=SMALL, workers=2)
    assert _digest(one.parent) == _digest(two.parent)
    three = make_phantom_dataset(tmp_path / "c", n_patients=4, seed=2, config=SMALL, workers=0)
    assert _digest(one.parent) != _digest(three.parent)


def test_dataset_layout_and_reuse(tmp_path: Path) -> None:
    csv = make_phantom_dataset(tmp_path, n_patients=5, seed=0, config=SMALL, workers=0)
    manifest = read_manifest(csv, labels=METAVIR)
    assert manifest.modalities == ("us", "swe")
    assert csv.read_text().splitlines()[0].startswith("patient_id,us_path,swe_path,stage,")
    # Phantom v2: each site stores its style's format (native): sites A and B PNG, site C DICOM.
    first = {}
    for row in manifest:
        first.setdefault(row.extra["site"], row)
    assert set(first) == {"A", "B", "C"}
    for site, row in first.items():
        suffix = ".dcm" if site == "C" else ".png"
        assert row.paths["us"].suffix == row.paths["swe"].suffix == suffix
    png = first["A"]
    assert cv2.imread(str(png.paths["us"]), cv2.IMREAD_UNCHANGED).ndim == 2  # grey PNG
    assert cv2.imread(str(png.paths["swe"]), cv2.IMREAD_UNCHANGED).shape[2] == 3
    assert len(manifest) == round(5 * 1414 / 250)
    params = json.loads((tmp_path / "phantom.json").read_text())
    assert params["seed"] == 0 and params["version"] == 2 and params["image_format"] == "native"
    mtime = csv.stat().st_mtime_ns
    assert make_phantom_dataset(tmp_path, n_patients=5, seed=0, config=SMALL) == csv
    assert csv.stat().st_mtime_ns == mtime  # reused, not regenerated
    with pytest.raises(FileExistsError, match="other parameters"):
        make_phantom_dataset(tmp_path, n_patients=5, seed=1, config=SMALL)


def test_a_phantom_from_another_generator_version_is_not_reused(tmp_path: Path) -> None:
    csv = make_phantom_dataset(tmp_path, n_patients=2, seed=0, config=SMALL, workers=0)
    params_path = tmp_path / "phantom.json"
    params = json.loads(params_path.read_text())
    assert params["generator"] == generator_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", params["generator"])
    params["generator"] = "0123456789abcdef"  # as if written before the last generator change
    params_path.write_text(json.dumps(params))
    with pytest.raises(FileExistsError, match="another version of the generator .*0123456789abcdef"):
        make_phantom_dataset(tmp_path, n_patients=2, seed=0, config=SMALL)
    mtime = csv.stat().st_mtime_ns
    make_phantom_dataset(tmp_path, n_patients=2, seed=0, config=SMALL, workers=0, overwrite=True)
    assert csv.stat().st_mtime_ns != mtime
    assert json.loads(params_path.read_text())["generator"] == generator_fingerprint()


def test_overwrite_removes_the_images_of_a_larger_earlier_phantom(tmp_path: Path) -> None:
    make_phantom_dataset(tmp_path, n_patients=4, seed=0, config=SMALL, workers=0)
    before = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert len(before) == 4
    keep = tmp_path / sorted(before)[-1] / "notes.txt"  # a file the phantom did not write
    keep.write_text("mine")
    csv = make_phantom_dataset(tmp_path, n_patients=2, seed=0, config=SMALL, workers=0,
                               overwrite=True)
    listed = {row.patient_id for row in read_manifest(csv, labels=METAVIR)}
    after = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert len(listed) == 2
    assert after == listed | {keep.parent.name}  # only the folder holding a foreign file stays
    assert keep.read_text() == "mine" and list(keep.parent.iterdir()) == [keep]


def test_cohort_matches_the_paper() -> None:
    cohort = sample_cohort(250, seed=0, config=PhantomConfig())
    counts = np.bincount([p.stage for p in cohort], minlength=5)
    assert counts.tolist() == [40, 70, 69, 48, 23]  # 162:287:284:197:94 of 250
    views = [p.n_views for p in cohort]
    assert sum(views) == 1414 and min(views) >= 4 and max(views) <= 7
    big = np.bincount([p.stage for p in sample_cohort(1024, 3, PhantomConfig())], minlength=5)
    assert big.tolist() == [162, 287, 284, 197, 94]
    assert len({p.patient_id for p in cohort}) == 250


def test_stiffness_distribution_per_stage() -> None:
    cohort = sample_cohort(3000, seed=1, config=PhantomConfig())
    stiffness = np.array([p.stiffness_kpa for p in cohort])
    stages = np.array([p.stage for p in cohort])
    medians = [np.median(stiffness[stages == s]) for s in range(5)]
    assert medians == pytest.approx([5.2, 6.2, 7.8, 9.8, 15.0], rel=0.06)
    assert np.std(stiffness[stages == 0]) == pytest.approx(1.0, rel=0.2)


def test_ground_truth_round_trips_through_the_manifest(tmp_path: Path) -> None:
    csv = make_phantom_dataset(tmp_path, n_patients=2, seed=3, config=SMALL, workers=0)
    manifest = read_manifest(csv, labels=METAVIR)
    phantom = LiverPhantom(SMALL, seed=3)
    patient = phantom.cohort(2)[0]
    pair = phantom.render(patient, 0)
    truth = phantom_truth(manifest[0])
    assert truth.swe_box == pair.truth.swe_box and truth.geometry == pair.truth.geometry
    assert np.array_equal(truth.sector_mask(), pair.truth.sector_mask())
    assert truth.stiffness_kpa == pytest.approx(pair.truth.stiffness_kpa, abs=1e-4)
    with pytest.raises(ValueError, match="ground-truth columns"):
        phantom_truth(manifest[0].__class__(2, "P1", 1, manifest[0].paths, {}))


def _box_kpa(pair) -> float:
    """Read the stiffness back from the SWE box colours via the colour scale."""
    x0, y0, x1, y1 = pair.truth.swe_box
    pixels = pair.swe[y0:y1, x0:x1].reshape(-1, 3).astype(np.int32)
    coloured = pixels[(pixels.max(axis=1) - pixels.min(axis=1)) > 30]
    lut = colour_lut().astype(np.int32)
    index = np.argmin(((coloured[:, None, :] - lut[None, :, :]) ** 2).sum(axis=2), axis=1)
    return float(np.median(index) / 255 * 40.0)


def test_swe_box_colour_tracks_view_stiffness() -> None:
    phantom = LiverPhantom(SMALL, seed=0)
    pairs = [phantom.sample(stage=i % 5, index=i) for i in range(15)]
    for pair in pairs:
        x0, y0, x1, y1 = pair.truth.swe_box
        mask = pair.truth.sector_mask()
        assert mask[y0, x0] and mask[y1 - 1, x1 - 1] and mask[y0, x1 - 1] and mask[y1 - 1, x0]
        assert _box_kpa(pair) == pytest.approx(pair.truth.stiffness_kpa, rel=0.15, abs=0.5)


def _coarse_heterogeneity(pair) -> float:
    """Interquartile range of the blurred B-mode in the lower liver (speckle averaged out).

    The IQR, not the std: anechoic vessels and the bright diaphragm are outliers of any stage.
    """
    mask = pair.truth.sector_mask()
    image = cv2.GaussianBlur(pair.us.astype(np.float32), (0, 0), 3)
    ys, xs = np.nonzero(mask)
    band = (ys > np.percentile(ys, 35)) & (ys < np.percentile(ys, 75))
    q25, q75 = np.percentile(image[ys[band], xs[band]], [25, 75])
    return float(q75 - q25)


def test_texture_coarsens_with_stage() -> None:
    # Phantom v2's distractors (rib shadows, reverberation, kidney, gallbladder) carry no stage
    # information and dominate a band's spread in the views that have them: switched off here.
    config = PhantomConfig(width=320, height=240, site_styles=("classic",), rib_shadow_prob=0,
                           reverberation_prob=0, organ_prob=(0, 0))
    phantom = LiverPhantom(config, seed=0)
    f0 = [_coarse_heterogeneity(phantom.sample(stage=0, index=i)) for i in range(4)]
    f4 = [_coarse_heterogeneity(phantom.sample(stage=4, index=i)) for i in range(4)]
    # measured (phantom v2): F0 7.3-10.5, F4 14.1-19.8 grey levels, ratio of means 1.86
    assert np.mean(f4) > 1.4 * np.mean(f0)
    assert min(f4) > max(f0)


def test_bayes_ceiling_is_realistic_and_deterministic() -> None:
    ceiling = bayes_ceiling(50_000, seed=0)
    assert 0.70 <= ceiling <= 0.85
    assert bayes_ceiling(50_000, seed=0) == ceiling
    assert bayes_ceiling(50_000, seed=0, per_view=True) <= ceiling + 0.01
    # Overlapping stiffness alone cannot reach it: texture carries part of the signal.
    flat = PhantomConfig(texture_mean=(0.0, 0.0, 0.0, 0.0, 0.0))
    assert bayes_ceiling(50_000, seed=0, config=flat) < ceiling - 0.1


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="width"):
        PhantomConfig(width=10)
    with pytest.raises(ValueError, match="stiffness_median_kpa"):
        PhantomConfig(stiffness_median_kpa=(1.0, 2.0))
    with pytest.raises(ValueError, match="stage"):
        LiverPhantom(SMALL).sample(stage=7)
    with pytest.raises(TypeError, match="config"):
        LiverPhantom(config="big")  # type: ignore[arg-type]


def test_liver_package_exports_every_phantom_name() -> None:
    """``mmfusion.liver`` lists the phantom's names for its lazy import: the lists must agree."""
    import mmfusion.liver as liver
    import mmfusion.liver.phantom as phantom

    assert set(liver._PHANTOM_NAMES) == set(phantom.__all__)
    assert all(getattr(liver, name) is getattr(phantom, name) for name in phantom.__all__)
