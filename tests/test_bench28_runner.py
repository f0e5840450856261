"""Issue 28: the fusion benchmark's runner, tiny (a few patients, 32 px, test_resnet, 1 epoch).

Checks the per-run files, that a rerun skips finished runs, that a run that dies leaves no result
file (and is made on the next call), that other settings are refused, and the summary (table,
figures, the paired comparison to late fusion) written from the run files alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import fusion_bench
from benchmarks.fusion_bench import main, plan, run_all, run_paths, select
from benchmarks.fusion_bench_run import BenchSettings, methods

TINY = BenchSettings(image_size=32, backbone="test_resnet", epochs=1, batch_size=16,
                     n_bootstrap=40, train_patients=10, test_patients=8, frame=(200, 150),
                     ceiling_patients=2000, workers=0)
ROWS = ("late", "cross_spatial_attention", "baseline_fib4_apri")


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("bench28")
    out, cache = root / "out", root / "cache"
    counts = run_all(out=out, cache=cache, rhos=(0.0,), seeds=(0,), rows=select(",".join(ROWS)),
                     settings=TINY)
    return {"root": root, "out": out, "cache": cache, "counts": counts}


def test_each_run_writes_its_result_and_predictions(bench: dict[str, Any]) -> None:
    out = bench["out"]
    assert bench["counts"] == {"made": 3, "skipped": 0}
    assert _files(out) == sorted(
        f"rho-0/{m}/seed0.{ext}" for m in ROWS for ext in ("json", "npz"))
    doc = json.loads((out / "rho-0/late/seed0.json").read_text())
    assert doc["settings"] == TINY.to_dict() and doc["modalities"] == ["us", "swe", "labs"]
    assert doc["test_cohort"]["patients"] == 8 and doc["train_cohort"]["patients"] == 10
    for unit in ("per_view", "per_patient"):
        part = doc[unit]
        assert 0 <= part["accuracy"] <= 1 and part["ece"] >= 0
        assert part["accuracy_se"] == pytest.approx(
            np.sqrt(part["accuracy"] * (1 - part["accuracy"]) / part["n"]))
    assert set(doc["missing"]) == {"us", "swe", "labs"}
    if "ceilings" in doc:  # G's ceilings: gaps and regret follow from them, never typed in
        c = doc["ceilings"]["per_patient"]
        assert doc["gaps"]["per_patient"]["joint"] == pytest.approx(
            c["joint"] - doc["per_patient"]["accuracy"])
        assert doc["regret"]["swe"]["per_patient"] == pytest.approx(
            c["no_swe"] - doc["missing"]["swe"]["per_patient"])
    csa = json.loads((out / "rho-0/cross_spatial_attention/seed0.json").read_text())
    assert csa["modalities"] == ["us", "swe"] and "no lab vector" in csa["note"]
    with np.load(out / "rho-0/late/seed0.npz") as z:
        assert z["view_probs"].shape == (doc["test_cohort"]["pairs"], 5)
        assert z["patient_probs"].shape == (8, 5) and z["patient_ids"].shape == (8,)
        patient_acc = float((z["patient_probs"].argmax(1) == z["patient_labels"]).mean())
    assert patient_acc == pytest.approx(doc["per_patient"]["accuracy"])


def test_a_rerun_skips_finished_runs(bench: dict[str, Any]) -> None:
    out = bench["out"]
    stamps = {p: os.stat(out / p).st_mtime_ns for p in _files(out)}
    counts = run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,),
                     rows=select(",".join(ROWS)), settings=TINY)
    assert counts == {"made": 0, "skipped": 3}
    assert {p: os.stat(out / p).st_mtime_ns for p in _files(out)} == stamps
    with pytest.raises(ValueError, match="holds a run made with other settings"):
        run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,), rows=select("late"),
                settings=BenchSettings(**{**TINY.__dict__, "epochs": 2}))


def test_a_seedless_baseline_is_not_made_again_at_another_seed(bench: dict[str, Any]) -> None:
    out = bench["out"]
    counts = run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(1,),
                     rows=select("baseline_fib4_apri"), settings=TINY)
    assert counts == {"made": 0, "skipped": 1}
    assert not run_paths(out, 0.0, "baseline_fib4_apri", 1)[0].exists()


def test_a_run_made_on_a_cohort_the_generator_no_longer_makes_is_refused(
    bench: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    src, _ = run_paths(bench["out"], 0.0, "baseline_fib4_apri", 0)
    dst, _ = run_paths(out, 0.0, "baseline_fib4_apri", 0)
    dst.parent.mkdir(parents=True)
    doc = json.loads(src.read_text())
    old_folder = doc["test_cohort"]["folder"]
    doc["test_cohort"]["folder"] = "rho-0/test-seed28000-n8-200x150-00000000"  # an older generator
    dst.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"was made on .*test_cohort.*00000000.*no longer makes "
                                         rf".*{old_folder}.*move the stale runs aside"):
        run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,),
                rows=select("baseline_fib4_apri"), settings=TINY)
    assert json.loads(dst.read_text()) == doc  # left as it was


def test_a_run_that_dies_leaves_no_result_and_is_made_next_time(
    bench: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    rows = select("baseline_fib4_apri,baseline_swe_cutoffs")
    real = fusion_bench.run_baseline

    def dies_on_cutoffs(method: Any, **kwargs: Any) -> Any:
        if method.name == "baseline_swe_cutoffs":
            raise KeyboardInterrupt  # killed mid-run
        return real(method, **kwargs)

    monkeypatch.setattr(fusion_bench, "run_baseline", dies_on_cutoffs)
    with pytest.raises(KeyboardInterrupt):
        run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,), rows=rows, settings=TINY)
    assert _files(out) == ["rho-0/baseline_fib4_apri/seed0.json", "rho-0/baseline_fib4_apri/seed0.npz"]

    def dies_while_writing(path: Any, text: str) -> None:  # the JSON's write is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(fusion_bench, "run_baseline", real)
    monkeypatch.setattr(fusion_bench, "atomic_write_text", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,), rows=rows, settings=TINY)
    assert not run_paths(out, 0.0, "baseline_swe_cutoffs", 0)[0].exists()
    monkeypatch.undo()
    counts = run_all(out=out, cache=bench["cache"], rhos=(0.0,), seeds=(0,), rows=rows, settings=TINY)
    assert counts == {"made": 1, "skipped": 1}
    assert run_paths(out, 0.0, "baseline_swe_cutoffs", 0)[0].is_file()
    assert not [p for p in _files(out) if p.endswith(".tmp")]


def test_summarise_only_reads(bench: dict[str, Any]) -> None:
    out, md = bench["out"], bench["root"] / "fusion_bench.md"
    before = {p: os.stat(out / p).st_mtime_ns for p in _files(out)}
    assert main(["--summarise", "--out", str(out), "--summary", str(md)]) == 0
    text = md.read_text()
    assert "## rho = 0" in text and all(f"| {m}" in text for m in ROWS)
    for name in ("ceilings", "pareto", "regret"):
        assert (out / "figures" / f"fusion_bench_{name}.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["method"]: r for r in summary["rhos"]["0"]}
    late = json.loads((out / "rho-0/late/seed0.json").read_text())
    csa = json.loads((out / "rho-0/cross_spatial_attention/seed0.json").read_text())
    assert rows["late"]["accuracy"]["mean"] == late["per_patient"]["accuracy"]
    diff = csa["per_patient"]["accuracy"] - late["per_patient"]["accuracy"]
    assert rows["cross_spatial_attention"]["vs_late_bootstrap"]["difference"] == pytest.approx(diff)
    assert rows["cross_spatial_attention"]["vs_late_t"]["mean"] == pytest.approx(diff)
    (verdict,) = summary["verdicts"]["fusions"]  # one fusion besides late, one seed: no verdict
    assert verdict["vs_late"]["0"]["difference"] == pytest.approx(diff)
    assert verdict["vs_late"]["0"]["verdict"] == "one seed: no verdict"
    assert "## Verdicts" in text and "| cross_spatial_attention | us+swe |" in text
    assert {p: os.stat(out / p).st_mtime_ns for p in _files(out) if "rho-" in p} == {
        p: t for p, t in before.items() if "rho-" in p}


def test_a_figure_write_that_fails_midway_leaves_the_previous_figure(
    bench: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from matplotlib.figure import Figure

    from benchmarks.fusion_bench_summary import load_runs, summarise, write_figures

    summary = summarise(load_runs(bench["out"]), n_bootstrap=20)
    folder = tmp_path / "figures"
    first = write_figures(summary, folder)
    before = {p.name: p.read_bytes() for p in first}

    def dies_midway(self: Any, target: Any, **kwargs: Any) -> None:
        target.write(b"\x89PNG half a figure")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        write_figures(summary, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # no half file, no .tmp


def test_plan_and_selection() -> None:
    rows = methods(["late", "cross_spatial_attention"])
    assert [(m.name, m.modalities) for m in rows[:2]] == [
        ("late", ("us", "swe", "labs")), ("cross_spatial_attention", ("us", "swe"))]
    runs = plan((0.0, 1.0), (0, 1, 2), rows)
    by = {(rho, m.name) for rho, _, m in runs}
    cutoffs = [(rho, seed) for rho, seed, m in runs if m.name == "baseline_swe_cutoffs"]
    assert cutoffs == [(0.0, 0), (1.0, 0)]  # deterministic: the first seed only
    logistic = [seed for _, seed, m in runs if m.name == "baseline_image_logistic"]
    assert logistic == [0, 1, 2, 0, 1, 2]  # fitted on each seed's training cohort
    assert sum(1 for _, _, m in runs if m.name == "late") == 6 and (1.0, "us_only") in by
    with pytest.raises(ValueError, match=r"--methods: unknown \['nope'\]"):
        select("late,nope")


def test_bad_arguments_exit_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--rho", "2"])
    assert info.value.code == 2 and "expected shares in [0, 1]" in capsys.readouterr().err
    assert main(["--methods", "nope", "--out", "/nonexistent/out"]) == 2
