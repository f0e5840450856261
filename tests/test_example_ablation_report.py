"""The ablation report: paired differences behind the paper's claims, and ``--report-only``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.liver_fibrosis.ablation import CONTRASTS, main, paired_differences, table_markdown


def _rows(values: dict[str, list[float]]) -> list[dict]:
    return [
        {"config": name, "seed": seed, "fold": "", "accuracy": v, "auc_macro": v / 2}
        for name, per_seed in values.items()
        for seed, v in enumerate(per_seed)
    ]


def test_paired_difference_and_t_interval_by_hand() -> None:
    rows = _rows({"US+SWE+att+multi": [0.70, 0.66, 0.68], "US": [0.60, 0.58, 0.62]})
    (d,) = [x for x in paired_differences(rows) if x["versus"] == "US"]
    assert d["claim"] == "fusion beats each modality"
    assert d["differences"] == pytest.approx([0.10, 0.08, 0.06])
    # mean 0.08, sd 0.02, t(0.975, 2) = 4.302653, half width = 4.302653 * 0.02 / sqrt(3) = 0.049683
    assert d["mean"] == pytest.approx(0.08)
    assert d["low"] == pytest.approx(0.08 - 0.049683, abs=1e-6)
    assert d["high"] == pytest.approx(0.08 + 0.049683, abs=1e-6)
    assert d["n"] == 3
    # Only contrasts with both configurations present are reported.
    assert len(paired_differences(rows)) == 1


def test_runs_pair_by_seed_not_by_position() -> None:
    rows = _rows({"US+SWE+att+multi": [0.7, 0.6], "US": [0.5, 0.5]})
    rows = [r for r in rows if not (r["config"] == "US" and r["seed"] == 0)]  # US seed 0 missing
    (d,) = paired_differences(rows)
    assert d["differences"] == pytest.approx([0.1]) and d["n"] == 1
    assert np.isnan(d["low"]) and np.isnan(d["high"])  # no interval from one pair


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=6), st.floats(-0.2, 0.2))
def test_a_constant_shift_is_its_own_difference(base: list[float], shift: float) -> None:
    rows = _rows({"US+SWE+att+single": [b + shift for b in base], "US+SWE+late+single": base})
    (d,) = paired_differences(rows)
    assert d["mean"] == pytest.approx(shift, abs=1e-9)
    assert d["high"] - d["low"] == pytest.approx(0.0, abs=1e-6)  # no spread, no width


def test_every_claim_has_two_contrasts_and_the_markdown_shows_them() -> None:
    claims = [c[0] for c in CONTRASTS]
    assert sorted(set(claims)) == ["attention beats late fusion", "fusion beats each modality",
                                   "the ensemble loss helps"]
    assert all(claims.count(c) == 2 for c in set(claims))
    rows = _rows({name: [0.5, 0.6] for c in CONTRASTS for name in c[1:]})
    text = table_markdown(rows, "# t")
    assert text.count("| fusion beats each modality |") == 2
    assert "+0.00 [+0.00, +0.00]" in text


def test_report_only_rebuilds_csv_and_markdown_from_run_folders(tmp_path: Path) -> None:
    def metrics(acc: float) -> dict:
        report = {"accuracy": acc, "auc_macro": 0.9}
        return {"ensemble": report, "patients": {"accuracy": acc + 0.01, "auc_macro": 0.91},
                "branches": {"us": {"accuracy": 0.5}}, "n_test_pairs": 10, "n_test_patients": 3}

    for name, accs in (("US", [0.5, 0.55]), ("US+SWE+att+multi", [0.6, 0.7])):
        for seed, acc in enumerate(accs):
            folder = tmp_path / name / f"seed-{seed}"
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps(metrics(acc)))
    # The header kept from the last invocation (seed 1 only) is corrected to every seed found.
    (tmp_path / "ablation.md").write_text("# Table I ablation (quick preset, phantom, patient 80/20 "
                                          "split, seeds 1; 4.2 min)\n\nIntro.\n\n| old |\n")
    assert main(["--out", str(tmp_path), "--report-only"]) == 0
    text = (tmp_path / "ablation.md").read_text()
    assert text.startswith("# Table I ablation (quick preset, phantom, patient 80/20 split, "
                           "seeds 0, 1; rebuilt by --report-only)\n\nIntro.\n\n")
    assert "| old |" not in text
    assert "| fusion beats each modality | US+SWE+att+multi | US | +10.0, +15.0 |" in text
    csv_text = (tmp_path / "ablation.csv").read_text()
    assert "patient_accuracy" in csv_text.splitlines()[0] and len(csv_text.splitlines()) == 5


def test_report_only_without_runs_is_one_clear_error(tmp_path: Path, capsys) -> None:
    from examples.liver_fibrosis.cli import run

    assert run(main, ["--out", str(tmp_path), "--report-only"]) != 0
    assert "--report-only: no <configuration>/seed-<s>/metrics.json" in capsys.readouterr().err
