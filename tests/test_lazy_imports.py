"""The packages load their heavy dependencies on first use (PEP 562 ``__getattr__``).

The phantom's worker processes are spawned and import the phantom package; if that imported torch,
timm and scikit-learn, each worker would spend seconds before drawing its first pair.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mmfusion
import mmfusion.data
import mmfusion.liver
from mmfusion.data.roi import SectorROI

HEAVY = ("torch", "torchvision", "timm", "sklearn", "scipy", "lightning", "pydicom")


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize(
    "statement",
    [
        "import mmfusion.liver.phantom",
        "import mmfusion.liver.phantom.writer",
        "import mmfusion.data.manifest",
        "import mmfusion.data.roi",
        "import mmfusion",
        "import mmfusion.files",
        "import benchmarks.phantom_report",
    ],
)
def test_light_imports_load_no_heavy_dependency(statement: str) -> None:
    assert _loaded_after(statement) == []


def test_a_layer_name_loads_torch_on_first_use() -> None:
    assert "torch" in _loaded_after("from mmfusion import SpatialAttention")


def test_every_public_name_resolves() -> None:
    for package in (mmfusion, mmfusion.data, mmfusion.liver):
        missing = [n for n in package.__all__ if not hasattr(package, n)]
        assert missing == [], f"{package.__name__}: {missing}"
        assert set(package.__all__) <= set(dir(package))


def test_unknown_names_raise_attribute_error_naming_the_package() -> None:
    with pytest.raises(AttributeError, match="mmfusion.data' has no attribute 'nope'"):
        mmfusion.data.nope  # noqa: B018
    with pytest.raises(AttributeError, match="'mmfusion' has no attribute 'nope'"):
        mmfusion.nope  # noqa: B018


def test_sector_crop_still_accepts_tensors_and_arrays() -> None:
    mask = np.zeros((6, 8), dtype=bool)
    mask[1:5, 2:7] = True
    roi = SectorROI(mask=mask, bbox=(2, 1, 7, 5), contour=np.zeros((0, 2), np.int32))
    image = np.arange(48, dtype=np.uint8).reshape(6, 8)
    crop_np = roi.crop(image)
    crop_t = roi.crop(torch.from_numpy(image))
    assert isinstance(crop_t, torch.Tensor)
    np.testing.assert_array_equal(crop_t.numpy(), crop_np)
    with pytest.raises(TypeError, match="image: expected a numpy array or torch tensor, got list"):
        roi.crop(image.tolist())
