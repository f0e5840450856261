"""Issue 24, items 9 and 18: big-endian palette colour decodes right, nearly constant frames warn,
and a DICOM file cut short inside its pixel data says so."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import RLELossless, UltrasoundImageStorage  # noqa: E402

from mmfusion.data import image_roi, load_image  # noqa: E402
from mmfusion.data.dicom import FlatFrameWarning, decode_dicom  # noqa: E402


def corpus(name: str) -> Path:
    """A file of pydicom's test corpus, from the installed packages only (never downloaded)."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom / pydicom-data test corpus")
    return Path(str(path))


def write_dicom(path: Path, pixels: np.ndarray, photometric: str, *, rle: bool = False) -> Path:
    """A single-frame 8-bit ultrasound DICOM file (RLE Lossless if ``rle``)."""
    ds = Dataset()
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    ds.set_pixel_data(pixels, photometric, 8, generate_instance_uid=False)
    if rle:
        ds.compress(RLELossless, pixels, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


# -- item 9 ---------------------------------------------------------------------------------------


def test_big_endian_palette_colour_decodes_like_its_little_endian_twin() -> None:
    big, little = corpus("OBXXXX1A_expb.dcm"), corpus("OBXXXX1A.dcm")
    ds = pydicom.dcmread(big)
    assert ds.file_meta.TransferSyntaxUID.name == "Explicit VR Big Endian"
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatFrameWarning)
        image = load_image(big)
    # Original: the 16-bit LUT entries were read little-endian, max 1 grey level: all black.
    assert int(image.max()) - int(image.min()) > 200
    assert np.array_equal(image, load_image(little))
    for frame in (0, 1):  # the multi-frame twin too
        assert np.array_equal(
            load_image(corpus("OBXXXX1A_expb_2frame.dcm"), frame=frame),
            load_image(corpus("OBXXXX1A_2frame.dcm"), frame=frame),
        )


def test_nearly_constant_frame_warns_with_the_file_name(tmp_path: Path) -> None:
    flat = np.full((64, 80), 7, np.uint8)
    flat[10, 10] = 8  # max - min = 1 grey level
    path = write_dicom(tmp_path / "flat.dcm", flat, "MONOCHROME2")
    with pytest.warns(FlatFrameWarning, match=r"flat\.dcm.*nearly constant.*7.*8"):
        decode_dicom(path)
    varied = flat.copy()
    varied[20:40, 20:60] = 9  # max - min = 2: no warning
    ok = write_dicom(tmp_path / "ok.dcm", varied, "MONOCHROME2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatFrameWarning)
        decode_dicom(ok)


def test_image_roi_of_a_flat_dicom_frame_warns(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "black.dcm", np.zeros((64, 80), np.uint8), "MONOCHROME2")
    with (
        pytest.warns(FlatFrameWarning, match=r"black\.dcm"),
        pytest.raises(ValueError, match="blank"),
    ):
        image_roi(path)


def test_grey_data_under_8_bits_are_scaled_by_bits_stored() -> None:
    path = corpus("liver_expb_1frame.dcm")  # 1-bit MONOCHROME2, big endian: values 0 and 1
    ds = pydicom.dcmread(path)
    assert ds.BitsStored == 1
    image = load_image(path)  # original: 0/1 grey levels, black
    assert set(np.unique(image).tolist()) == {0, 255}
    assert np.array_equal(image[..., 0] == 255, ds.pixel_array == 1)


# -- item 18 --------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:End of file reached before delimiter:UserWarning")
def test_rle_file_cut_short_says_truncated_pixel_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    whole = write_dicom(tmp_path / "whole.dcm", pixels, "RGB", rle=True)
    assert np.array_equal(load_image(whole), pixels)
    data = whole.read_bytes()
    for cut in (len(data) - 200, len(data) - len(data) // 3):
        short = tmp_path / f"short{cut}.dcm"
        short.write_bytes(data[:cut])
        # Original: "has no pixel data (7FE0,0010)", as for a file without any.
        message = rf"short{cut}\.dcm' has truncated or corrupt pixel data"
        with pytest.raises(ValueError, match=message):
            load_image(short)
    # A file that truly has no Pixel Data element still says so, without "truncated".
    ds = pydicom.dcmread(whole)
    del ds.PixelData
    ds.save_as(tmp_path / "none.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match=r"none\.dcm' has no pixel data") as caught:
        load_image(tmp_path / "none.dcm")
    assert "truncated" not in str(caught.value)
