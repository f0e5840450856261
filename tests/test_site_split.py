"""Leave-one-site-out: each site is tested once, alone, and no patient crosses sides.

:func:`mmfusion.data.site_splits` over a manifest's ``site`` column, :func:`make_splits` with
``split="site"`` and :class:`FusionDataModule` serving one held-out site (optionally with a
validation split of the training sites' patients).
"""

from __future__ import annotations

import importlib.util
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmfusion.data import Manifest, ManifestRow, read_manifest, site_splits
from mmfusion.liver import METAVIR

Pair = tuple[str, int, str]  # patient, stage, site


def _fan(path: Path, seed: int) -> None:
    """A 64 x 48 px grey fan on black (the sector detector finds it)."""
    image = np.zeros((48, 64), np.uint8)
    cv2.ellipse(image, (32, 4), (40, 40), 0, 45, 135, 255, -1)
    noise = np.random.default_rng(seed).integers(60, 200, image.shape)
    assert cv2.imwrite(str(path), np.where(image > 0, noise, 0).astype(np.uint8))


def _csv(root: Path, pairs: list[Pair], *, site: bool = True, images: bool = False) -> Path:
    """A manifest CSV (line ``i + 2`` is ``pairs[i]``) in ``root``; ``images`` writes tiny PNGs."""
    lines = ["patient_id,us_path,stage" + (",site" if site else "")]
    for i, (patient, stage, name) in enumerate(pairs):
        image = f"{patient}_{i}.png"
        if images:
            _fan(root / image, i)
        lines.append(f"{patient},{image},F{stage}" + (f",{name}" if site else ""))
    path = root / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(root: Path, pairs: list[Pair], **kwargs: bool) -> Manifest:
    return read_manifest(_csv(root, pairs, **kwargs), verify="none", labels=METAVIR)


def _lines(manifest: Manifest) -> list[int]:
    return [row.line for row in manifest]


def _sites(manifest: Manifest) -> set[str]:
    return {row.extra["site"] for row in manifest}


# Three sites; at each, two patients of stage F0 and two of F1, one or two views each.
THREE_SITES: list[Pair] = [
    (f"{site}{p}", p % 2, site) for site in "CAB" for p in range(4) for _ in range(1 + p // 2)
]


def _in_memory(assignment: list[tuple[str, int, int]]) -> Manifest:
    """Patients ``P<i>`` with (site, stage, views) each; rows in patient order."""
    rows, line = [], 2
    for p, (site, stage, views) in enumerate(assignment):
        for v in range(views):
            rows.append(ManifestRow(line, f"P{p}", stage, {"us": Path(f"/d/P{p}/{v}.png")},
                                    {"site": site}))
            line += 1
    return Manifest(tuple(rows), ("us",), label_spec=METAVIR)


patients = st.lists(
    st.tuples(st.sampled_from(["A", "B", "C", "D", "10", "2"]), st.integers(0, 4), st.integers(1, 3)),
    min_size=2, max_size=25,
).filter(lambda a: len({site for site, _, _ in a}) >= 2)


@settings(max_examples=60, deadline=None)
@given(assignment=patients)
def test_every_pair_is_tested_once_and_each_test_side_is_one_site(
    assignment: list[tuple[str, int, int]],
) -> None:
    manifest = _in_memory(assignment)
    with warnings.catch_warnings():  # stages at one site only: warned, tested below
        warnings.simplefilter("ignore", UserWarning)
        splits = site_splits(manifest)
    names = sorted({site for site, _, _ in assignment})
    assert len(splits) == len(names)
    tested = [line for _, test in splits for line in _lines(test)]
    assert sorted(tested) == _lines(manifest)  # a partition of the pairs
    for name, (train, test) in zip(names, splits, strict=True):
        assert _sites(test) == {name}  # exactly that site, in sorted order ("10" < "2" < "A")
        assert _sites(train) == set(names) - {name}
        assert sorted(_lines(train) + _lines(test)) == _lines(manifest)
        assert not set(train.groups) & set(test.groups)
        assert _lines(test) == sorted(_lines(test))  # file order kept


def test_sites_of_a_csv_come_in_sorted_order(tmp_path: Path) -> None:
    manifest = _read(tmp_path, THREE_SITES)
    splits = site_splits(manifest)
    assert [_sites(test) for _, test in splits] == [{"A"}, {"B"}, {"C"}]
    for train, test in splits:
        assert len(train) + len(test) == len(manifest) == 18
        assert len(test) == 6 and len(set(test.groups)) == 4


def test_another_column_names_the_site(tmp_path: Path) -> None:
    csv = _csv(tmp_path, THREE_SITES)
    csv.write_text(csv.read_text().replace(",site\n", ",hospital\n", 1))
    manifest = read_manifest(csv, verify="none", labels=METAVIR)
    assert [test[0].extra["hospital"] for _, test in site_splits(manifest, column="hospital")] == [
        "A", "B", "C"]


def test_missing_column_names_the_column_and_the_manifest(tmp_path: Path) -> None:
    manifest = _read(tmp_path, THREE_SITES, site=False)
    message = rf"manifest {re.escape(str(tmp_path / 'manifest.csv'))}: no 'site' column"
    with pytest.raises(ValueError, match=message):
        site_splits(manifest)
    with pytest.raises(ValueError, match="no 'hospital' column"):
        site_splits(_read(tmp_path, THREE_SITES), column="hospital")


def test_empty_site_gives_its_line_numbers(tmp_path: Path) -> None:
    pairs = list(THREE_SITES)
    pairs[2] = (pairs[2][0], pairs[2][1], "")  # CSV line 4
    pairs[5] = (pairs[5][0], pairs[5][1], " ")  # line 7 (blank once stripped)
    with pytest.raises(ValueError, match=r"empty 'site' on line\(s\) 4, 7$"):
        site_splits(_read(tmp_path, pairs))


def test_one_site_is_not_enough(tmp_path: Path) -> None:
    one = [(p, s, "A") for p, s, _ in THREE_SITES]
    with pytest.raises(ValueError, match=r"expected at least 2 sites in column 'site' to hold one "
                                         r"out, got 1 \('A'\)"):
        site_splits(_read(tmp_path, one))


def test_a_patient_at_two_sites_is_refused(tmp_path: Path) -> None:
    pairs = [("P1", 0, "A"), ("P1", 0, "B"), ("P2", 1, "B"), ("P3", 1, "A"), ("P1", 0, "A")]
    with pytest.raises(ValueError) as error:
        site_splits(_read(tmp_path, pairs))
    message = str(error.value)
    assert "a patient belongs to one site" in message
    assert "patient 'P1' at 'A' (line(s) 2, 6), 'B' (line(s) 3)" in message
    assert "P2" not in message and "P3" not in message


def test_not_a_manifest() -> None:
    with pytest.raises(TypeError, match="manifest: expected a Manifest, got list"):
        site_splits([])  # type: ignore[arg-type]


def test_a_stage_at_one_site_only_is_warned(tmp_path: Path) -> None:
    pairs = [*THREE_SITES, ("C9", 4, "C")]  # F4 only at site C
    with pytest.warns(UserWarning, match=r"missing from the training side .*\{'C': \['F4'\]\}"):
        splits = site_splits(_read(tmp_path, pairs))
    assert 4 not in splits[2][0].labels


# --------------------------------------------------------------------------- lightning

needs_lightning = pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None, reason="needs the mmfusion[lightning] extra"
)


@needs_lightning
def test_make_splits_names_one_split_per_site(tmp_path: Path) -> None:
    from mmfusion.lightning import make_splits

    manifest = _read(tmp_path, THREE_SITES)
    splits = make_splits(manifest, split="site")
    assert [s.name for s in splits] == ["site-A", "site-B", "site-C"]
    assert [s.description for s in splits] == [f"leave-one-site-out, test site {x}" for x in "ABC"]
    for split, (train, test) in zip(splits, site_splits(manifest), strict=True):
        assert [manifest[i].line for i in split.test_idx] == _lines(test)
        assert [manifest[i].line for i in split.train_idx] == _lines(train)
    with pytest.raises(ValueError, match="folds: not with split='site'"):
        make_splits(manifest, split="site", folds=3)
    with pytest.raises(ValueError, match="no 'site' column"):
        make_splits(_read(tmp_path, THREE_SITES, site=False), split="site")


@needs_lightning
def test_datamodule_serves_the_chosen_site_with_validation_from_the_others(tmp_path: Path) -> None:
    from mmfusion.lightning import FusionDataModule

    csv = _csv(tmp_path, THREE_SITES, images=True)
    dm = FusionDataModule(csv, ("us",), 32, 4, split="site", fold=1, val_size=0.5, augment="none", labels=METAVIR)
    dm.setup("fit")
    manifest = dm.manifest
    assert manifest is not None and dm.split is not None
    assert dm.split.name == "site-B"
    assert {manifest[i].extra["site"] for i in dm.split.test_idx} == {"B"}
    assert len(dm.test_set) == len(dm.split.test_idx) == 6
    val_sites = {manifest[i].extra["site"] for i in dm.val_idx}
    assert dm.val_idx and val_sites <= {"A", "C"}
    train_patients = {manifest[i].patient_id for i in dm.split.train_idx if i not in dm.val_idx}
    val_patients = {manifest[i].patient_id for i in dm.val_idx}
    assert not train_patients & val_patients
    assert len(dm.train_set) + len(dm.val_idx) == len(dm.split.train_idx) == 12
    batch = next(iter(dm.test_dataloader()))
    assert batch["us"].shape == (6, 3, 32, 32)


@needs_lightning
def test_datamodule_site_arguments(tmp_path: Path) -> None:
    from mmfusion.lightning import FusionDataModule

    with pytest.raises(ValueError, match="folds: not with split='site'"):
        FusionDataModule("m.csv", ("us",), 32, 4, split="site", folds=3, fold=0, labels=METAVIR)
    with pytest.raises(ValueError, match="fold: expected the held-out site's index >= 0, got -1"):
        FusionDataModule("m.csv", ("us",), 32, 4, split="site", fold=-1, labels=METAVIR)
    dm = FusionDataModule(_read(tmp_path, THREE_SITES), ("us",), 32, 4, split="site", fold=3, labels=METAVIR)
    with pytest.raises(ValueError, match=r"fold: expected 0 <= fold < 3 \(the sites A, B, C, in "
                                         r"order\), got 3"):
        dm.setup("fit")
