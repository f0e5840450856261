"""benchmarks.fusion_cost: the catalogue's cost table, checked against hand counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import fusion_cost

TINY = {"backbone": "test_resnet", "image_size": 32, "embed_dim": 8, "hidden": (8,)}


@pytest.fixture(scope="module")
def doc() -> dict:
    return fusion_cost.run(["late", "gated"], repeats=1, **TINY)


def test_late_fusion_flops_and_parameters_are_the_hand_counts(doc: dict) -> None:
    """``late``: one Linear(C -> E) per modality (2 C E FLOPs per pair each, GAP not counted);
    with its two learned placeholders (E each) and its joint head Linear(2E -> K) it has
    2 (C E + E) + 2 E + 2 E K + K parameters."""
    from mmfusion.models import create_model

    model = create_model("liver_fibrosis_quick", fusion="late", **TINY)
    channels = model.fusion.embedders["us"].in_channels
    e, k = 8, model.config.num_classes
    late = doc["rows"][0]
    assert late["fusion"] == "late"
    assert late["fusion_flops_per_pair"] == 2 * (2 * channels * e)
    assert late["fusion_params"] == 2 * (channels * e + e) + 2 * e + 2 * e * k + k
    assert late["fusion_param_bytes"] == 4 * late["fusion_params"]
    assert late["added_param_bytes"] == 0 and late["added_saved_bytes_per_pair"] == 0


def test_every_row_has_positive_costs_and_the_machine_is_named(doc: dict) -> None:
    assert [r["fusion"] for r in doc["rows"]] == ["late", "gated"]
    for row in doc["rows"]:
        assert row["params"] > row["fusion_params"] > 0
        assert row["flops_per_pair"] > row["fusion_flops_per_pair"] > 0
        assert set(row["latency_ms"]) == {"1", "32"} and min(row["latency_ms"].values()) > 0
        assert row["saved_bytes_per_pair"] > 0
    env = doc["environment"]
    assert env["cpu_model"] and env["cpu_cores_available"] >= 1
    page = fusion_cost.render_markdown(doc)
    assert env["cpu_model"] in page and "| `gated` |" in page


def test_a_bad_fusion_name_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.fusion_cost", "--fusions", "gatd", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "--fusions" in proc.stderr and "did you mean 'gated'" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_the_committed_cost_table_covers_the_catalogue() -> None:
    """The table in benchmarks/results comes from a run over every catalogue method."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "fusion_cost_cpu.json"
    committed = json.loads(path.read_text())
    from tests.test_fusion27_contract import CATALOGUE

    assert set(CATALOGUE) <= {r["fusion"] for r in committed["rows"]}
    assert committed["environment"]["cpu_model"]
    assert committed["setup"]["preset"] == "liver_fibrosis_quick" and not committed["setup"]["changes"]


def test_counts_print_with_a_unit_suffix() -> None:
    assert fusion_cost.human_count(131072) == "131.07 k"
    assert fusion_cost.human_count(4.8e6) == "4.80 M" and fusion_cost.human_count(999) == "999"
