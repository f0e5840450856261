"""Issue 25: the default online augmentation works for modalities other than the liver's.

The default intensity jitter is defined for a B-mode modality named ``"us"``; a data set without
it (a CT-only problem) trains with flips and shifts and no intensity jitter, instead of failing
because the jitter's modality is absent from the samples.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from mmfusion.data import read_manifest
from mmfusion.data.pipeline import train_dataset


def test_online_augmentation_of_a_ct_only_manifest(tmp_path: Path) -> None:
    rows = ["patient_id,ct_path,label"]
    for k in range(4):
        image = np.full((40, 40, 3), 40 + 50 * k, np.uint8)
        image[10:30, 10:30] = 250  # a bright square on a grey frame: no sector to find
        assert cv2.imwrite(str(tmp_path / f"ct{k}.png"), image)
        rows.append(f"P{k},ct{k}.png,{k % 2}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    manifest = read_manifest(tmp_path / "m.csv")
    data = train_dataset(manifest, ("ct",), 32, range(4), augment="online")
    samples = [data[i] for i in range(4)]
    assert all(s["ct"].shape == (3, 32, 32) and s["ct"].dtype == torch.float32 for s in samples)
    assert [s["label"] for s in samples] == [0, 1, 0, 1]
