"""Issue 24, item 9 beyond DICOM: any nearly constant decoded frame is warned about, naming it."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

from mmfusion.data import FlatFrameWarning, load_image


def test_a_flat_png_warns_with_its_path_and_a_textured_one_does_not(tmp_path: Path) -> None:
    flat, textured = tmp_path / "flat.png", tmp_path / "ok.png"
    image = np.full((16, 16, 3), 7, np.uint8)
    image[0, 0] = 8  # one grey level of spread: still "nearly constant"
    assert cv2.imwrite(str(flat), image)
    image[4:8, 4:8] = 9  # two grey levels: an image
    assert cv2.imwrite(str(textured), image)
    with pytest.warns(FlatFrameWarning, match=r"flat\.png.*7\.\.8"):
        load_image(flat)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatFrameWarning)
        assert load_image(textured).shape == (16, 16, 3)
