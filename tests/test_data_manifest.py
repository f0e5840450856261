"""Manifest reading: valid manifests load, every planted problem is reported in one error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data import Manifest, ManifestError, ManifestRow, read_manifest
from mmfusion.liver import METAVIR


def _png(path: Path, colour: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((12, 16, 3) if colour else (12, 16), 120, dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return str(path)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    for p in ("P1/a_us.png", "P1/b_us.png", "P2/a_us.png", "P3/a_us.png"):
        _png(tmp_path / p)
    for p in ("P1/a_swe.png", "P1/b_swe.png", "P2/a_swe.png", "P3/a_swe.png"):
        _png(tmp_path / p, colour=True)
    cv2.imwrite(str(tmp_path / "P2/b_us.jpg"), np.full((12, 16), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "P2/b_swe.jpg"), np.full((12, 16, 3), 90, np.uint8))
    return tmp_path


def test_valid_manifest(images: Path) -> None:
    absolute = images / "P3/a_swe.png"
    csv = _write(
        images / "manifest.csv",
        [
            "patient_id,us_path,swe_path,stage,site",
            "P1,P1/a_us.png,P1/a_swe.png,F2,left",
            "P1,P1/b_us.png,P1/b_swe.png,f2,right",
            "P2,P2/a_us.png,P2/a_swe.png,0,left",
            "P2,P2/b_us.jpg,P2/b_swe.jpg,F0,left",
            f"P3,P3/a_us.png,{absolute},4,",
        ],
    )
    m = read_manifest(csv, labels=METAVIR)
    assert m.modalities == ("us", "swe")
    assert len(m) == 5
    assert m.labels.tolist() == [2, 2, 0, 0, 4]
    assert [r.line for r in m] == [2, 3, 4, 5, 6]
    assert m[0].paths["us"] == images / "P1/a_us.png"
    assert m[4].paths["swe"] == absolute
    assert m[1].extra == {"site": "right"}
    assert m.stage_counts() == {"F0": 2, "F1": 0, "F2": 2, "F3": 0, "F4": 1}
    assert m.subset([4, 0]).labels.tolist() == [4, 2]


def test_three_modalities_keep_column_order(images: Path) -> None:
    csv = _write(
        images / "m3.csv",
        [
            "swe_path,patient_id,doppler_path,stage,us_path",
            "P1/a_swe.png,P1,P1/b_us.png,F1,P1/a_us.png",
        ],
    )
    assert read_manifest(csv, labels=METAVIR).modalities == ("swe", "doppler", "us")


def test_every_planted_problem_is_reported_at_once(images: Path) -> None:
    (images / "P3/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    good = (images / "P1/a_us.png").read_bytes()
    (images / "P3/truncated.png").write_bytes(good[: len(good) // 2])
    csv = _write(
        images / "bad.csv",
        [
            "patient_id,us_path,swe_path,stage",
            "P1,P1/a_us.png,P1/a_swe.png,F2",  # line 2: fine
            "P1,P1/b_us.png,P1/b_swe.png,F3",  # line 3: P1 now has two stages
            "P2,P2/missing_us.png,P2/a_swe.png,F1",  # line 4: missing file
            "P3,P3/corrupt.png,P3/a_swe.png,F1",  # line 5: corrupt PNG
            "P3,P3/truncated.png,P3/a_swe.png,F1",  # line 6: truncated PNG
            "P4,P2/a_us.png,P2/a_swe.png,F7",  # line 7: unknown stage
            "P1,P1/a_us.png,P1/a_swe.png,F2",  # line 8: duplicate of line 2
        ],
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, labels=METAVIR)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "line 4: us_path file not found" in message and "missing_us.png" in message
    assert "line 5: us_path file is not a readable image" in message
    assert "line 6: us_path file is not a readable image" in message
    assert "line 7: unknown stage 'F7'" in message
    assert "line 8: duplicate of line 2" in message
    assert "patient 'P1' has more than one stage: F2 on line(s) 2, 8; F3 on line(s) 3" in message
    assert len(info.value.problems) == 6


def test_missing_column_is_reported_with_file_problems(images: Path) -> None:
    csv = _write(
        images / "nostage.csv",
        [
            "patient_id,us_path,swe_path",
            "P1,P1/a_us.png,P1/nope.png",
            "P2,P2/a_us.png,P2/a_swe.png",
        ],
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, labels=METAVIR)
    problems = info.value.problems
    assert any("missing column(s): stage" in p for p in problems)
    assert any("line 2: swe_path file not found" in p for p in problems)
    assert len(problems) == 2


def test_missing_path_columns_and_bad_rows(images: Path) -> None:
    csv = _write(images / "nopaths.csv", ["patient_id,stage,image", "P1,F1,x.png", "P2,F1"])
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, labels=METAVIR)
    text = str(info.value)
    assert "<modality>_path" in text and "line 3: 2 fields, the header has 3" in text


def test_empty_and_absent_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="path"):
        read_manifest(tmp_path / "nothing.csv", labels=METAVIR)
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(_write(tmp_path / "empty.csv", []), labels=METAVIR)
    with pytest.raises(ManifestError, match="no image pairs"):
        read_manifest(_write(tmp_path / "header.csv", ["patient_id,us_path,swe_path,stage"]), labels=METAVIR)


def test_verify_exists_skips_decoding(images: Path) -> None:
    (images / "P3/corrupt.png").write_bytes(b"not an image")
    csv = _write(
        images / "m.csv", ["patient_id,us_path,swe_path,stage", "P3,P3/corrupt.png,P3/a_swe.png,F1"]
    )
    assert len(read_manifest(csv, verify="exists", labels=METAVIR)) == 1
    with pytest.raises(ManifestError, match="not a readable image"):
        read_manifest(csv, labels=METAVIR)


def test_missing_modality_is_kept_and_flagged(images: Path) -> None:
    csv = _write(
        images / "partial.csv",
        [
            "patient_id,us_path,swe_path,stage",
            "P1,P1/a_us.png,P1/a_swe.png,F2",
            "P1,P1/b_us.png,,F2",  # no SWE for this view
            "P2,,P2/a_swe.png,F0",  # no B-mode image
            "P3,P3/a_us.png,,F4",
            # The missing files are never looked for: these names do not exist on disk.
        ],
    )
    m = read_manifest(csv, labels=METAVIR)
    assert len(m) == 4
    assert m[1].paths == {"us": images / "P1/b_us.png", "swe": None}
    assert m[1].available == {"us": True, "swe": False}
    assert m[2].available == {"us": False, "swe": True}
    assert m.availability.tolist() == [[True, True], [True, False], [False, True], [True, False]]
    assert m.availability_counts() == {("us",): 2, ("us", "swe"): 1, ("swe",): 1}
    assert list(m.availability_counts()) == [("us",), ("us", "swe"), ("swe",)]
    assert m.subset([1, 3]).availability_counts() == {("us",): 2}
    assert m.subset([]).availability.shape == (0, 2)


def test_row_without_any_image_is_an_error_naming_the_line(images: Path) -> None:
    csv = _write(
        images / "noimage.csv",
        [
            "patient_id,us_path,swe_path,stage",
            "P1,P1/a_us.png,,F2",
            "P2,,,F0",  # line 3: nothing at all
            "P3,P3/a_us.png,P3/a_swe.png,F1",
        ],
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, labels=METAVIR)
    assert info.value.problems == [
        "line 3: no image (every path column is empty: us_path, swe_path); "
        "a pair needs at least one modality"
    ]


def test_required_modalities(images: Path) -> None:
    csv = _write(
        images / "req.csv",
        [
            "patient_id,us_path,swe_path,stage",
            "P1,P1/a_us.png,,F2",  # line 2: SWE missing
            "P2,,P2/a_swe.png,F0",  # line 3: US missing
        ],
    )
    assert len(read_manifest(csv, labels=METAVIR)) == 2
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, required=("us",), labels=METAVIR)
    assert info.value.problems == ["line 3: empty us_path (us is required)"]
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, required=["us", "swe"], labels=METAVIR)
    assert info.value.problems == [
        "line 2: empty swe_path (swe is required)",
        "line 3: empty us_path (us is required)",
    ]
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, required=("doppler",), labels=METAVIR)
    assert info.value.problems == [
        "required: no <name>_path column for 'doppler' (the path columns are us_path, swe_path)"
    ]
    with pytest.raises(TypeError, match="required: expected a sequence of modality keys"):
        read_manifest(csv, required="us", labels=METAVIR)


def test_manifest_refuses_rows_without_images() -> None:
    row = ManifestRow(7, "P1", 0, {"us": None, "swe": None})
    with pytest.raises(ValueError, match=r"rows: line 7 has no image \(every path is None\)"):
        Manifest((row,), ("us", "swe"))
