"""DICOM input (decode, frames, regions), the ROI from the file, and the DICOM phantom.

Reference files come from pydicom's test corpus (the ``pydicom-data`` package, read offline).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pydicom = pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.pixels import (  # noqa: E402
    apply_color_lut,
    convert_color_space,
    get_decoder,
    pixel_array,
)
from pydicom.uid import (  # noqa: E402
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    UltrasoundImageStorage,
)

from mmfusion.data import (  # noqa: E402
    MissingDecoderError,
    PairedImageDataset,
    SectorNotFoundWarning,
    detect_sector,
    dicom_frame_count,
    dicom_regions,
    image_roi,
    is_dicom,
    load_image,
    read_manifest,
)
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset, phantom_truth  # noqa: E402

SMALL = PhantomConfig(width=160, height=120)


def corpus(name: str) -> Path:
    """A file of pydicom's test corpus, from the installed packages only (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom / pydicom-data test corpus")
    return Path(str(path))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, bits_stored: int, **tags) -> Path:
    """A native (uncompressed) single-frame DICOM file with extra ``tags``."""
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# -- decoding -------------------------------------------------------------------------------------


def test_rgb_file_decodes_as_pydicom_does() -> None:
    path = corpus("US1_UNCR.dcm")  # GE LOGIQ 700, RGB, uncompressed
    image = load_image(path)
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    assert np.array_equal(image, pydicom.dcmread(path).pixel_array)


def test_jpeg2000_lossless_is_exact_and_lossy_is_close() -> None:
    reference = load_image(corpus("US1_UNCR.dcm"))
    lossless, lossy = corpus("US1_J2KR.dcm"), corpus("US1_J2KI.dcm")
    assert pydicom.dcmread(lossless).PhotometricInterpretation == "YBR_RCT"
    assert pydicom.dcmread(lossy).PhotometricInterpretation == "YBR_ICT"
    assert np.array_equal(load_image(lossless), reference)
    decoded = load_image(lossy)
    assert np.array_equal(decoded, pydicom.dcmread(lossy).pixel_array)  # pydicom's RGB decode
    error = decoded.astype(np.float64) - reference
    assert not np.array_equal(decoded, reference)  # it is lossy
    # Stated tolerance for the lossy frame: mean absolute error <= 2 grey levels and PSNR >= 35 dB
    # (measured: 1.70 and 36.6 dB).
    assert np.abs(error).mean() <= 2.0
    assert 10 * np.log10(255**2 / np.mean(error**2)) >= 35.0


def test_palette_colour_16_bit_goes_through_the_lut() -> None:
    path = corpus("gdcm-US-ALOKA-16.dcm")  # Aloka dual view, PALETTE COLOR, 16-bit LUT entries
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "PALETTE COLOR" and ds.BitsAllocated == 16
    rgb16 = apply_color_lut(ds.pixel_array, ds)
    assert rgb16.dtype == np.uint16 and not np.any(rgb16 % 257)  # 8-bit values times 257
    image = load_image(path)
    assert image.dtype == np.uint8 and np.array_equal(image, rgb16 // 257)


def test_ybr_full_422_is_converted_to_rgb() -> None:
    path = corpus("SC_ybr_full_422_uncompressed.dcm")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    raw = pixel_array(ds, raw=True)  # YCbCr, sub-sampling removed
    assert np.array_equal(load_image(path), convert_color_space(raw, "YBR_FULL", "RGB"))


def test_grey_windowing_inversion_and_data_range(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 2000, 3000, 4000]] * 8, dtype=np.uint16)
    values = np.repeat(values, 2, axis=1)
    # LINEAR window (PS3.3 C.11.2.1.2.1), center 2000, width 2001: <= 999.5 -> 0, > 2999.5 ->
    # 4095 (12-bit output range); 2000 -> (0.5 / 2000 + 0.5) * 4095 = 2048.5 -> 127.56 -> 128.
    window = {"WindowCenter": 2000, "WindowWidth": 2001}
    mono2 = write_dicom(tmp_path / "m2.dcm", values, "MONOCHROME2", 12, **window)
    mono1 = write_dicom(tmp_path / "m1.dcm", values, "MONOCHROME1", 12, **window)
    expected = np.repeat(np.array([0, 0, 128, 255, 255], dtype=np.uint8), 2)
    assert np.array_equal(load_image(mono2)[0, :, 0], expected)
    assert np.array_equal(load_image(mono1)[0, :, 0], 255 - expected)  # MONOCHROME1: inverted
    grey = load_image(mono2)
    assert all(np.array_equal(grey[..., 0], grey[..., c]) for c in (1, 2))
    # No window: the frame's own range, 100..500 -> 0..255 (260 -> 160 * 255 / 400 = 102).
    ranged = np.repeat(np.array([[100, 260, 500]] * 8, dtype=np.uint16), 3, axis=1)
    plain = write_dicom(tmp_path / "plain.dcm", ranged, "MONOCHROME2", 16)
    assert load_image(plain)[0, ::3, 0].tolist() == [0, 102, 255]
    # 8-bit grey without a window: as stored.
    eight = np.arange(8 * 9, dtype=np.uint8).reshape(8, 9)
    stored = write_dicom(tmp_path / "eight.dcm", eight, "MONOCHROME2", 8)
    assert np.array_equal(load_image(stored)[..., 1], eight)


def test_16_bit_rgb_is_scaled_by_bits_stored(tmp_path: Path) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint16)
    rgb[0, :3, 0] = [0, 2047, 4095]  # 12 bits stored: 2047 * 255 / 4095 = 127.47 -> 127
    path = write_dicom(tmp_path / "rgb16.dcm", rgb, "RGB", 12)
    assert load_image(path)[0, :3, 0].tolist() == [0, 127, 255]


def test_dicom_is_detected_by_content_not_suffix(tmp_path: Path) -> None:
    renamed = tmp_path / "scan.bin"
    shutil.copy(corpus("US1_UNCR.dcm"), renamed)
    assert is_dicom(renamed)
    assert np.array_equal(load_image(renamed), load_image(corpus("US1_UNCR.dcm")))
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.full((16, 16), 7, np.uint8))
    assert not is_dicom(png)
    fake = tmp_path / "fake.dcm"  # a .dcm name is tried as DICOM and fails clearly
    fake.write_bytes(png.read_bytes())
    with pytest.raises(ValueError, match=r"fake\.dcm' has no pixel data"):
        load_image(fake)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(corpus("US1_UNCR.dcm").read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cannot decode DICOM file .*broken\.dcm"):
        load_image(broken)


@pytest.mark.parametrize(("name", "n_frames"), [("OBXXXX1A_2frame.dcm", 2), ("emri_small.dcm", 10)])
def test_multi_frame_rule(name: str, n_frames: int) -> None:
    path = corpus(name)
    assert dicom_frame_count(path) == n_frames
    frames = [load_image(path, frame=i) for i in range(n_frames)]
    assert not np.array_equal(frames[0], frames[1])  # so picking the right one is checked
    assert np.array_equal(load_image(path), frames[n_frames // 2])  # default: the middle frame
    with pytest.raises(ValueError, match=rf"frame: expected 0 <= frame < {n_frames} \(.*has "
                       rf"{n_frames} frame\(s\)\), got {n_frames}"):  # fmt: skip
        load_image(path, frame=n_frames)
    with pytest.raises(ValueError, match="got -1"):
        load_image(path, frame=-1)


def test_single_frame_files_have_one_frame(tmp_path: Path) -> None:
    assert dicom_frame_count(corpus("US1_UNCR.dcm")) == 1
    assert np.array_equal(load_image(corpus("US1_UNCR.dcm"), frame=0), load_image(corpus(
        "US1_UNCR.dcm")))  # fmt: skip
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.full((16, 16), 7, np.uint8))
    assert load_image(png, frame=0).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="is not DICOM and has one frame; expected None or 0"):
        load_image(png, frame=1)
    with pytest.raises(ValueError, match="expected a DICOM file"):
        dicom_frame_count(png)


def test_missing_decoder_plugin_names_file_syntax_and_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoder = get_decoder(JPEG2000Lossless)  # pydicom's shared decoder object
    monkeypatch.setattr(decoder, "_available", {})  # as if no J2K plugin were installed
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg-openjpeg>=2.0",)})
    path = corpus("US1_J2KR.dcm")
    with pytest.raises(MissingDecoderError) as caught:
        load_image(path)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert str(path) in message
    assert "JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)" in message
    assert 'pip install "mmfusion[dicom]"' in message and "pylibjpeg-openjpeg" in message
    assert np.array_equal(load_image(corpus("US1_UNCR.dcm"))[0, 0], [0, 0, 0])  # native still ok


def test_without_pydicom_dicom_asks_for_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "mmfusion\[dicom\]"'):
        load_image(corpus("US1_UNCR.dcm"))
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.full((16, 16), 7, np.uint8))
    assert load_image(png).shape == (16, 16, 3)  # other formats need no pydicom


# -- regions and the ROI --------------------------------------------------------------------------


def test_aloka_regions_and_roi() -> None:
    path = corpus("gdcm-US-ALOKA-16.dcm")
    regions = dicom_regions(path)
    # Boxes from the tags (MinX0, MinY0, MaxX1 + 1, MaxY1 + 1): 32,24,335,415 / 336,24,639,415 /
    # 32,40,63,103.
    assert [(r.index, r.box, r.kind) for r in regions] == [
        (0, (32, 24, 336, 416), "tissue"),
        (1, (336, 24, 640, 416), "tissue"),
        (2, (32, 40, 64, 104), "gray bar"),
    ]
    assert regions[0].physical_units == ("cm", "cm")
    assert regions[0].physical_delta == pytest.approx((0.0382653065, 0.0382653065))
    assert regions[0].spatial_format == "2D" and regions[2].physical_units == ("none", "none")
    found = image_roi(path)  # two equal tissue regions: the first
    assert found.source == "dicom_region" and found.region == regions[0]
    assert found.roi.bbox == (32, 24, 336, 416) and not found.roi.is_fallback
    image = load_image(path)
    assert np.array_equal(found.roi.crop(image, apply_mask=False), image[24:416, 32:336])
    # the mask never follows brightness inside a tagged region (issue 24, item 8: the bladder is
    # tissue); the left view's fan is not clearly narrower than its box (its hull covers 87 %),
    # so the mask is the region itself: never the right view
    assert found.roi.mask[24:416, 32:336].all() and found.roi.mask.sum() == 304 * 392
    assert image_roi(path, region=1).roi.bbox == (336, 24, 640, 416)
    assert image_roi(path, region=2).roi.bbox == (32, 40, 64, 104)  # any region may be named
    with pytest.raises(ValueError, match=r"expected 0 <= region < 3 \(.* has 3 ultrasound"):
        image_roi(path, region=3)


def test_tissue_region_past_the_frame_is_clipped() -> None:
    path = corpus("OBXXXX1A_2frame.dcm")  # Philips: MaxX1 = 800 in an 800-column frame
    regions = dicom_regions(path)
    assert [r.kind for r in regions] == ["tissue", "ECG trace"]
    assert regions[0].box == (120, 60, 801, 519)
    assert image_roi(path).roi.bbox == (120, 60, 800, 519)


def test_files_without_regions_use_contour_or_full_frame(tmp_path: Path) -> None:
    assert dicom_regions(corpus("US1_UNCR.dcm")) == []
    assert image_roi(corpus("US1_UNCR.dcm")).source == "contour"
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.zeros((64, 64), np.uint8))
    with pytest.warns(SectorNotFoundWarning):
        assert image_roi(blank, fallback=True).source == "full_frame"
    with pytest.raises(ValueError, match=r"no plausible ultrasound sector .*\(file .*blank\.png\)"):
        image_roi(blank)
    with pytest.raises(ValueError, match=r"has 0 ultrasound region\(s\)\), got 0"):
        image_roi(blank, region=0)


# -- the phantom as DICOM -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("phantoms")
    with pytest.warns(UserWarning, match="dual-view SWE screen"):  # "native" stores site C as DICOM
        png = make_phantom_dataset(root / "png", n_patients=5, config=SMALL, workers=0,
                                   image_format="png")
    dcm = make_phantom_dataset(
        root / "dcm", n_patients=5, config=SMALL, workers=0, image_format="dicom"
    )
    return png, dcm


def test_dicom_phantom_has_the_png_phantoms_pixels(phantoms: tuple[Path, Path]) -> None:
    png, dcm = (read_manifest(csv, labels=METAVIR) for csv in phantoms)
    assert len(png) == len(dcm) == round(5 * 1414 / 250)
    for a, b in zip(png, dcm, strict=True):
        assert a.extra == b.extra and a.stage == b.stage
        for key in ("us", "swe"):
            assert b.paths[key].suffix == ".dcm"
            assert np.array_equal(load_image(a.paths[key]), load_image(b.paths[key]))


def test_dicom_phantom_files_are_lossless_us_images_with_the_sector_region(
    phantoms: tuple[Path, Path],
) -> None:
    manifest = read_manifest(phantoms[1], labels=METAVIR)
    by_site: dict[str, list] = {}
    for row in manifest:
        by_site.setdefault(row.extra["site"], []).append(row)
    assert sorted(by_site) == ["A", "B", "C"]  # phantom v2: three sites, site C a dual-view screen
    for row in [row for rows in by_site.values() for row in rows[:2]]:
        truth = phantom_truth(row)
        us, swe = (pydicom.dcmread(row.paths[k]) for k in ("us", "swe"))
        for ds in (us, swe):
            assert ds.SOPClassUID == UltrasoundImageStorage and ds.Modality == "US"
            assert ds.file_meta.TransferSyntaxUID in (JPEGLSLossless, JPEG2000Lossless, RLELossless)
        assert us.PhotometricInterpretation == "MONOCHROME2" and us.SamplesPerPixel == 1
        assert swe.PhotometricInterpretation in ("RGB", "YBR_RCT") and swe.SamplesPerPixel == 3
        dual = truth.style == "dual"
        bx0, by0, bx1, by1 = detect_sector(load_image(row.paths["us"])).bbox  # B-mode fan, visible
        for key in ("us", "swe"):
            dx = truth.swe_shift if key == "swe" else 0  # where this frame shows the fan
            visible = (bx0 + dx, by0, bx1 + dx, by1)
            if not (dual and key == "swe"):  # a dual screen holds two fans: no single contour
                assert detect_sector(load_image(row.paths[key])).bbox == visible
            tx0, ty0, tx1, ty1 = truth.sector_bbox(key)
            vx0, vy0, vx1, vy1 = visible
            assert tx0 <= vx0 <= tx0 + 2 and ty0 <= vy0 <= ty0 + 2 and tx1 - 2 <= vx1 <= tx1
            boxes = [visible]
            if dual and key == "swe":  # the screen's B-mode view (left half) is tagged first
                left = dx - truth.width // 2
                boxes.insert(0, (bx0 + left, by0, bx1 + left, by1))
            regions = dicom_regions(row.paths[key])
            assert [(r.kind, r.box) for r in regions] == [("tissue", box) for box in boxes]
            found = image_roi(row.paths[key])  # a dual screen: the elastogram, the second region
            assert found.source == "dicom_region" and found.roi.bbox == visible
            assert found.region == regions[-1]


def test_dicom_phantom_trains_on_the_same_tensors(phantoms: tuple[Path, Path]) -> None:
    png = PairedImageDataset(phantoms[0], size=32, labels=METAVIR)
    contour = PairedImageDataset(phantoms[1], size=32, use_dicom_regions=False, labels=METAVIR)
    tagged = PairedImageDataset(phantoms[1], size=32, labels=METAVIR)
    duals = 0
    for i in range(len(png)):
        for key in ("us", "swe"):  # lossless pixels; the tagged region crops like the contour
            assert torch.equal(png.images(i)[key], contour.images(i)[key])
            if key == "swe" and png.manifest[i].extra["style"] == "dual":
                # A dual-view screen has two equal fans: the contour takes either, the tagged
                # regions the elastogram (phantom v2), whose colour box shows in the crop
                # (measured: 4.4-6.4 % colour pixels; 0 % in the contour's crops, all B-mode views).
                swe = tagged.images(i)[key].int()
                assert ((swe.amax(dim=0) - swe.amin(dim=0)) > 60).float().mean() > 0.02
                duals += 1
            else:
                assert torch.equal(png.images(i)[key], tagged.images(i)[key])
    assert duals > 0
    n, pairs = len(png), {"us": "contour", "swe": "contour"}
    assert png.roi_sources == contour.roi_sources == dict.fromkeys(range(n), pairs)
    tags = {"us": "dicom_region", "swe": "dicom_region"}
    assert tagged.roi_sources == dict.fromkeys(range(n), tags)


def test_dicom_phantom_is_deterministic_and_reused(tmp_path: Path) -> None:
    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.dcm"))
        }

    # Two runs, byte-identical: UIDs derive from (seed, config, patient, view), none is random.
    # (Any worker count gives the same rows: the PNG test in test_data_phantom.py checks that.)
    one = make_phantom_dataset(tmp_path / "a", 2, config=SMALL, workers=0, image_format="dicom")
    two = make_phantom_dataset(tmp_path / "b", 2, config=SMALL, workers=0, image_format="dicom")
    assert digest(one.parent) and digest(one.parent) == digest(two.parent)
    mtime = one.stat().st_mtime_ns
    assert make_phantom_dataset(tmp_path / "a", 2, config=SMALL, image_format="dicom") == one
    assert one.stat().st_mtime_ns == mtime  # reused
    with pytest.raises(FileExistsError, match="image_format"):
        make_phantom_dataset(tmp_path / "a", 2, config=SMALL)  # "native" asked, DICOM stored
    with pytest.raises(ValueError, match=r"image_format: expected one of .*'png'.* got 'tiff'"):
        make_phantom_dataset(tmp_path / "c", 2, config=SMALL, image_format="tiff")  # type: ignore


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_manifest_check_decodes_dicom(tmp_path: Path, phantoms: tuple[Path, Path]) -> None:
    root = tmp_path / "copy"
    shutil.copytree(phantoms[1].parent, root)
    broken = read_manifest(root / "manifest.csv", labels=METAVIR)[1].paths["swe"]
    broken.write_bytes(broken.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"line 3: swe_path file is not a readable image: .*\.dcm"):
        read_manifest(root / "manifest.csv", labels=METAVIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_manifest(root / "manifest.csv", verify="exists", labels=METAVIR)) == 28


def test_manifest_frame_columns_pick_the_cine_frame(tmp_path: Path) -> None:
    """``frame`` (every modality) and ``<modality>_frame`` choose the frame of a multi-frame file;
    an empty field means the middle frame; anything else is a manifest problem."""
    cine = corpus("OBXXXX1A_2frame.dcm")  # Philips US, 2 frames
    assert dicom_frame_count(cine) == 2
    csv = tmp_path / "m.csv"
    csv.write_text("patient_id,us_path,stage,frame,us_frame\n"
                   f"P1,{cine},F1,0,\nP2,{cine},F2,,1\nP3,{cine},F3,,\n")
    manifest = read_manifest(csv, labels=METAVIR)
    assert [r.frame("us") for r in manifest.rows] == [0, 1, None]
    ds = PairedImageDataset(manifest, roi=False)
    first = torch.from_numpy(load_image(cine, frame=0).transpose(2, 0, 1).copy())
    middle = torch.from_numpy(load_image(cine).transpose(2, 0, 1).copy())
    assert torch.equal(ds.images(0)["us"], first) and not torch.equal(first, middle)
    assert torch.equal(ds.images(1)["us"], middle) and torch.equal(ds.images(2)["us"], middle)
    csv.write_text(f"patient_id,us_path,stage,frame\nP1,{cine},F1,-1\n")
    with pytest.raises(ValueError, match=r"line 2: frame '-1' is not a frame number"):
        read_manifest(csv, labels=METAVIR)
