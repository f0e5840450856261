"""The baselines tool on a three-site phantom: each frame read with its own legend and scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from examples.liver_fibrosis.baselines import main
from mmfusion.data import read_manifest
from mmfusion.liver import METAVIR, pair_inputs
from mmfusion.liver.phantom import PhantomConfig, make_phantom_dataset, phantom_truth


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 patients, 2 views each, at 400 x 300 px (smaller frames crowd the legend out)."""
    pytest.importorskip("pydicom")
    config = PhantomConfig(width=400, height=300, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(2, 2), pairs_per_patient=2.0)
    return make_phantom_dataset(tmp_path_factory.mktemp("three_sites"), n_patients=10,
                                config=config, workers=1)


def test_pair_inputs_use_each_sites_scale_and_map_the_box_to_the_bmode_frame(
    three_sites: Path,
) -> None:
    manifest = read_manifest(three_sites, labels=METAVIR)
    seen = set()
    for row in manifest:
        truth = phantom_truth(row)
        inputs = pair_inputs(row, kpa_max=40.0)
        assert inputs["kpa_range"] == (0.0, float(row.extra["swe_scale_kpa"]))
        assert inputs["box"] == truth.swe_box
        x0, y0, x1, y1 = inputs["us_box"]
        # The B-mode box is the SWE box moved by the fans' offset (a dual-view screen: one panel).
        assert abs(x0 - (truth.swe_box[0] - truth.swe_shift)) <= 2 and y0 == truth.swe_box[1]
        assert inputs["colormap"].shape[1] == 3 and len(inputs["colormap"]) > 16
        seen.add(row.extra["site"])
    assert seen == {"A", "B", "C"}


def test_baselines_tool_writes_both_reports(three_sites: Path, tmp_path: Path) -> None:
    out = tmp_path / "bl"
    assert main(["--out", str(out), "--data", str(three_sites), "--n-bootstrap", "20",
                 "--test-size", "0.5"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    for name in ("cutoffs", "logistic"):
        assert 0.0 <= result[name]["pairs"]["accuracy"] <= 1.0
        assert result[name]["pairs"]["n"] == result["n_test_pairs"]
    assert result["n_train_pairs"] + result["n_test_pairs"] == len(read_manifest(three_sites, labels=METAVIR))
    assert np.isfinite(result["logistic"]["pairs"]["auc_macro"])
