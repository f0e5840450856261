"""Issue 24, items 6, 17, 18 and 19 (data parts): manifest identity, size limits, one-line errors.

Each test fails on 72f3837: duplicates were compared as written, a 20000 x 20000 PNG passed the
check, and the bad inputs below gave tracebacks or messages without a file and line.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data import Manifest, ManifestError, ManifestRow, load_image, read_manifest
from mmfusion.data.pipeline import cached_crops
from mmfusion.liver import METAVIR

HEADER = "patient_id,us_path,swe_path,stage"


def _png(path: Path, value: int = 120, shape: tuple[int, ...] = (24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full(shape, value, dtype=np.uint8))
    return path


def _csv(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header says ``width x height`` grey pixels and whose data is one empty zlib
    stream: a few dozen bytes on disk, and any decoder that gets to the pixels fails."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _no_decoding(monkeypatch: pytest.MonkeyPatch, big: Path) -> None:
    """Make OpenCV fail the test if it is handed ``big``'s bytes (or path) to decode."""
    head = big.read_bytes()[:24]
    imdecode, imread = cv2.imdecode, cv2.imread

    def guarded_imdecode(data: np.ndarray, flags: int) -> np.ndarray | None:
        assert bytes(np.asarray(data)[:24]) != head, f"{big.name} was decoded"
        return imdecode(data, flags)

    def guarded_imread(name: str, *args: object) -> np.ndarray | None:
        assert Path(name).name != big.name, f"{big.name} was decoded"
        return imread(name, *args)

    monkeypatch.setattr(cv2, "imdecode", guarded_imdecode)
    monkeypatch.setattr(cv2, "imread", guarded_imread)


def _problems(csv: Path, **kwargs: object) -> str:
    with pytest.raises(ManifestError) as info:
        read_manifest(csv, labels=METAVIR, **kwargs)
    return str(info.value)


# -- item 6: duplicates by the file, not by how its path is written ------------------------------


def test_a_pair_reached_through_dotdot_is_a_duplicate(tmp_path: Path) -> None:
    _png(tmp_path / "m/us1.png")
    _png(tmp_path / "m/swe1.png", 200)
    csv = _csv(tmp_path / "m/manifest.csv",
               [HEADER, "P1,us1.png,swe1.png,F1", "P2,../m/us1.png,../m/swe1.png,F1"])
    text = _problems(csv)
    assert "line 3: duplicate of line 2" in text
    assert str((tmp_path / "m/us1.png").resolve()) in text


def test_one_image_through_a_symlink_in_two_patients_is_refused(tmp_path: Path) -> None:
    _png(tmp_path / "m/us1.png")
    _png(tmp_path / "m/swe1.png", 200)
    _png(tmp_path / "m/swe2.png", 90)
    os.symlink(tmp_path / "m/us1.png", tmp_path / "m/us_link.png")
    csv = _csv(tmp_path / "m/manifest.csv",
               [HEADER, "P1,us1.png,swe1.png,F1", "P2,us_link.png,swe2.png,F2"])
    text = _problems(csv, verify="none")
    assert "line 3" in text and "line 2" in text
    assert str((tmp_path / "m/us1.png").resolve()) in text
    assert "'P1'" in text and "'P2'" in text


# -- item 17: a pixel limit, checked from the header before decoding -----------------------------


def test_a_huge_png_is_refused_from_its_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _png_header(tmp_path / "big_us.png", 20000, 20000)
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,big_us.png,swe.png,F1"])
    monkeypatch.delenv("MMFUSION_MAX_IMAGE_PIXELS", raising=False)
    _no_decoding(monkeypatch, tmp_path / "big_us.png")
    for verify in ("decode", "header"):
        text = _problems(csv, verify=verify)
        assert "line 2: us_path" in text and "big_us.png" in text
        assert "20000 x 20000 = 400,000,000 pixels" in text and "50,000,000" in text
        assert "MMFUSION_MAX_IMAGE_PIXELS" in text
    with pytest.raises(ValueError, match=r"big_us\.png.*400,000,000 pixels.*max_pixels"):
        load_image(tmp_path / "big_us.png")


def test_the_pixel_limit_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _png(tmp_path / "us.png", shape=(40, 50))  # 2000 pixels
    _png(tmp_path / "swe.png", shape=(40, 50))
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,us.png,swe.png,F1"])
    monkeypatch.setenv("MMFUSION_MAX_IMAGE_PIXELS", "1999")
    assert "over the limit of 1,999 pixels" in _problems(csv, verify="header")
    with pytest.raises(ValueError, match="over the limit of 1,999"):
        load_image(tmp_path / "us.png")
    assert len(read_manifest(csv, max_pixels=2000, labels=METAVIR)) == 1
    assert load_image(tmp_path / "us.png", max_pixels=2000).shape == (40, 50, 3)
    monkeypatch.setenv("MMFUSION_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="MMFUSION_MAX_IMAGE_PIXELS: expected a positive"):
        load_image(tmp_path / "us.png")
    monkeypatch.delenv("MMFUSION_MAX_IMAGE_PIXELS")
    with pytest.raises(ValueError, match="max_pixels: expected a positive int, got 0"):
        load_image(tmp_path / "us.png", max_pixels=0)


# -- item 18: one clear error where a traceback was --------------------------------------------


def test_a_one_pixel_image_is_named_with_the_minimum(tmp_path: Path) -> None:
    _png(tmp_path / "tiny_us.png", shape=(1, 1))
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,tiny_us.png,swe.png,F1"])
    text = _problems(csv)  # was cv2.error (resize assertion) from the reduced decode
    assert "line 2: us_path" in text and "tiny_us.png" in text
    assert "is 1 x 1 pixels; expected at least 8 x 8" in text
    with pytest.raises(ValueError, match=r"tiny_us\.png.* 1 x 1 pixels; expected at least 8 x 8"):
        load_image(tmp_path / "tiny_us.png")


def test_an_overlong_csv_field_names_the_file_and_line(tmp_path: Path) -> None:
    _png(tmp_path / "us.png")
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER + ",note", "P1,us.png,swe.png,F1,ok",
                                    "P2,us.png,swe.png,F1," + "x" * 140_000])
    text = _problems(csv)
    assert str(csv) in text and "line 3" in text and "131,072 characters" in text


def test_a_latin1_manifest_names_line_and_asks_for_utf8(tmp_path: Path) -> None:
    _png(tmp_path / "us.png")
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER + ",site", "P1,us.png,swe.png,F1,Zürich"], "latin-1")
    text = _problems(csv)
    assert str(csv) in text and "line 2" in text and "UTF-8" in text and "0xfc" in text


def test_a_utf16_manifest_is_named_as_such(tmp_path: Path) -> None:
    _png(tmp_path / "us.png")
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,us.png,swe.png,F1"], "utf-16")
    text = _problems(csv)
    assert str(csv) in text and "UTF-16" in text and "expected UTF-8" in text


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    _png(tmp_path / "us.png")
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,us.png,swe.png,F1"], "utf-8-sig")
    assert read_manifest(csv, labels=METAVIR).modalities == ("us", "swe")


def _one_frame_dicom(path: Path) -> Path:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset
    from pydicom.uid import UltrasoundImageStorage

    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    pixels = np.arange(24 * 32, dtype=np.uint16).reshape(24, 32) % 200 + 20
    ds.set_pixel_data(pixels.astype(np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("verify", ["decode", "header"])
def test_a_frame_beyond_the_file_is_refused_on_its_line(tmp_path: Path, verify: str) -> None:
    _one_frame_dicom(tmp_path / "us.dcm")
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER + ",us_frame,swe_frame",
                                    "P1,us.dcm,swe.png,F1,5,", "P2,us.dcm,swe.png,F1,0,1"])
    text = _problems(csv, verify=verify)
    assert "line 2: us_path frame 5 is out of range" in text and "us.dcm" in text
    assert "has 1 frame" in text
    assert "line 3: swe_path frame 1 is out of range" in text and "swe.png" in text


def test_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match=r"path: manifest .*data' is a directory"):
        read_manifest(tmp_path / "data", labels=METAVIR)
    _png(tmp_path / "swe.png")
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,data,swe.png,F1"])
    assert "line 2: us_path is a directory" in _problems(csv, verify="exists")


# -- item 19 (b): a header-only check, and decode errors that name the line ---------------------


def test_verify_header_reads_no_pixels_and_still_checks_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _png(tmp_path / "us.png")
    _png(tmp_path / "swe.png")
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    good = _csv(tmp_path / "good.csv", [HEADER, "P1,us.png,swe.png,F1"])
    bad = _csv(tmp_path / "bad.csv", [HEADER, "P1,garbage.png,swe.png,F1",
                                      "P2,gone.png,swe.png,F1"])
    imdecode = cv2.imdecode

    def only_unknown_formats(data: np.ndarray, flags: int) -> np.ndarray | None:
        # OpenCV is asked only about files Pillow cannot read (here: the garbage file)
        assert bytes(data[:4]) == b"not ", "a PNG was decoded"
        return imdecode(data, flags)

    monkeypatch.setattr(cv2, "imdecode", only_unknown_formats)
    assert len(read_manifest(good, verify="header", labels=METAVIR)) == 1
    text = _problems(bad, verify="header")
    assert "line 2: us_path file is not a readable image" in text
    assert "line 3: us_path file not found" in text


def test_decode_errors_of_the_cache_name_the_line_and_file(tmp_path: Path) -> None:
    good = _png(tmp_path / "us.png", 200, shape=(48, 64))
    _png(tmp_path / "swe.png", 200, shape=(48, 64))
    _png(tmp_path / "swe2.png", 180, shape=(48, 64))
    data = good.read_bytes()
    (tmp_path / "cut_us.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    csv = _csv(tmp_path / "m.csv", [HEADER, "P1,us.png,swe.png,F1", "P2,cut_us.png,swe2.png,F2"])
    manifest = read_manifest(csv, verify="header", labels=METAVIR)  # the header is fine
    with pytest.raises(ValueError) as info:
        cached_crops(manifest, 16)
    text = str(info.value)
    assert f"manifest {csv}, line 3, us image" in text
    assert "cut_us.png" in text and "not a decodable image" in text


def test_one_row_manifests_without_a_line_name_the_file_only(tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    row = ManifestRow(0, "input", 0, {"us": tmp_path / "cut.png"})
    with pytest.raises(ValueError) as info:
        cached_crops(Manifest((row,), ("us",), "command line"), 16)
    text = str(info.value)
    assert "cut.png" in text and "line 0" not in text and "command line" not in text
