"""Issue 24, item 1: the crop cache is keyed by what it caches (files, their state, frames, crop).

Every view of ``predict`` is a one-row manifest ``ManifestRow(line=0)`` named "command line"; the
cache used to key on (source, row lines, size, crop), so every view got the first view's crops,
and rewriting an image at the same path in one process gave the old crops.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mmfusion.data import Manifest, ManifestRow
from mmfusion.data.pipeline import cached_crops, eval_dataset

SIZE = 16


def _image(path: Path, value: int, side: int = 32) -> Path:
    """A bright frame (the whole frame is the sector) with a value-dependent gradient."""
    ramp = np.linspace(0, 60, side, dtype=np.float64)[None, :].repeat(side, axis=0)
    grey = np.clip(value + ramp, 0, 255).astype(np.uint8)
    assert cv2.imwrite(str(path), np.dstack([grey, grey, 255 - grey]))
    return path


def _expected(path: Path) -> torch.Tensor:
    """``[3, SIZE, SIZE]`` uint8: the file's full frame (its sector), RGB, area-resized."""
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(resized.transpose(2, 0, 1).copy())


def _one_row(paths: dict[str, Path], extra: dict[str, str] | None = None) -> Manifest:
    """A manifest built like ``examples/liver_fibrosis/predict.py``'s ``load_pair`` does."""
    row = ManifestRow(line=0, patient_id="input", label=0, paths=paths, extra=extra or {})
    return Manifest((row,), tuple(paths), "command line")


def test_views_with_line_zero_and_one_source_get_their_own_crops(tmp_path: Path) -> None:
    views = [_image(tmp_path / f"view{k}_us.png", 40 + 60 * k) for k in range(3)]
    crops = [cached_crops(_one_row({"us": v}), SIZE)[0]["us"] for v in views]
    for k in range(3):  # each view's crop is its own image, not the first view's
        assert torch.equal(crops[k], _expected(views[k]))
    assert not torch.equal(crops[0], crops[1])
    assert not torch.equal(crops[1], crops[2])


def test_eval_dataset_of_several_one_row_manifests_differs(tmp_path: Path) -> None:
    pairs = [{"us": _image(tmp_path / f"p{k}_us.png", 30 + 50 * k),
              "swe": _image(tmp_path / f"p{k}_swe.png", 200 - 50 * k)} for k in range(3)]
    samples = [eval_dataset(_one_row(p), ("us", "swe"), SIZE)[0] for p in pairs]
    for m in ("us", "swe"):
        assert not torch.equal(samples[0][m], samples[1][m])
        assert not torch.equal(samples[1][m], samples[2][m])
        assert not torch.equal(samples[0][m], samples[2][m])


def test_rewritten_file_at_the_same_path_gives_new_crops(tmp_path: Path) -> None:
    path = _image(tmp_path / "us.png", 50)
    first = cached_crops(_one_row({"us": path}), SIZE)[0]["us"].clone()
    before = path.stat()
    _image(path, 150, side=40)  # new content, new size on disk
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    second = cached_crops(_one_row({"us": path}), SIZE)[0]["us"]
    assert not torch.equal(first, second)
    assert torch.equal(second, _expected(path))


def test_the_same_files_hit_the_cache_and_labels_follow_the_manifest(tmp_path: Path) -> None:
    path = _image(tmp_path / "us.png", 50)
    first = cached_crops(_one_row({"us": path}), SIZE)
    assert cached_crops(_one_row({"us": path}), SIZE) is first  # unchanged files: cached
    row = ManifestRow(line=0, patient_id="other", label=3, paths={"us": path})
    relabelled = cached_crops(Manifest((row,), ("us",), "command line"), SIZE)
    assert relabelled[0]["label"] == 3 and relabelled[0]["patient_id"] == "other"


def test_frame_and_crop_parameters_are_part_of_the_key(tmp_path: Path) -> None:
    path = _image(tmp_path / "us.png", 50)
    plain = cached_crops(_one_row({"us": path}), SIZE)
    framed = cached_crops(_one_row({"us": path}, {"frame": "0"}), SIZE)
    scaled = cached_crops(_one_row({"us": path}, {"swe_scale_kpa": "40"}), SIZE)
    assert framed is not plain and scaled is not framed
    assert cached_crops(_one_row({"us": path}), SIZE + 2)[0]["us"].shape[-1] == SIZE + 2


def test_a_file_removed_after_caching_is_not_served_from_the_cache(tmp_path: Path) -> None:
    path = _image(tmp_path / "us.png", 50)
    cached_crops(_one_row({"us": path}), SIZE)
    path.unlink()
    with pytest.raises(ValueError, match="us.png"):
        cached_crops(_one_row({"us": path}), SIZE)
