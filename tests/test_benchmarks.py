"""The throughput benchmark: quick CPU run end to end, FLOP counting, peak table, CLI checks."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import torch

from benchmarks import flops, input_pipeline, ladder, results_io, throughput
from benchmarks import summary as summary_mod
from mmfusion.models import build_loss, create_model

FAST = ["--repeats", "1", "--warmup", "1", "--no-data"]
WITH_DATA = ["--repeats", "1", "--warmup", "1", "--data-patients", "2"]
ROW_KEYS = {
    "rung", "batch_size", "status", "train_pairs_per_s", "infer_pairs_per_s", "train_step_ms",
    "train_peak_mem_mb", "infer_peak_mem_mb", "train_tflops", "train_frac_peak",
    "infer_tflops", "train_speedup_vs_naive", "train_speedup_vs_naive_ref_batch",
    "infer_speedup_vs_naive",
}
TOP_KEYS = {
    "is_gpu_result", "label", "date_utc", "command", "git_commit", "environment", "peak",
    "config", "model", "flops", "rungs", "results", "summary", "goals", "data_pipeline",
    "complete", "progress", "activations",
}


def build_model(**overrides: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The paper's registered network with ``overrides``, and its loss."""
    model = create_model("liver_fibrosis_paper", **overrides)
    return model, build_loss(model.config)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return build_model(backbone="test_resnet", image_size=64, hidden=(32, 16))


def _run(tmp_path: Path, *extra: str, data: bool = False) -> dict:
    args = ["--device", "cpu", "--quick", "--out", str(tmp_path), *(WITH_DATA if data else FAST),
            *extra]
    assert throughput.main(args) == 0
    return json.loads((tmp_path / "throughput_cpu-quick.json").read_text())


@pytest.mark.slow
def test_quick_cpu_run_end_to_end(tmp_path: Path) -> None:
    rungs = "naive,bf16,fused_adam"
    doc = _run(tmp_path, "--batch-sizes", "4,2", "--rungs", rungs, data=True)  # run 4 first
    assert TOP_KEYS <= set(doc)
    assert doc["is_gpu_result"] is False and "NOT GPU" in doc["label"]
    assert doc["complete"] is True and doc["progress"] == {"rows_done": 6, "rows_planned": 6}
    assert doc["environment"]["torch"] == torch.__version__
    assert doc["config"]["reference_batch"] == 4
    rows = {(r["rung"], r["batch_size"]): r for r in doc["results"]}
    assert set(rows) == {(n, b) for n in rungs.split(",") for b in (2, 4)}
    assert rows[("bf16", 2)]["status"] == "skipped" and "CUDA" in rows[("bf16", 2)]["note"]
    for key in [("naive", 2), ("fused_adam", 4)]:
        row = rows[key]
        assert row["status"] == "ok", row
        assert ROW_KEYS <= set(row)
        assert row["train_pairs_per_s"] > 0 and row["infer_pairs_per_s"] > 0
        assert row["train_tflops"] > 0 and row["train_frac_peak"] is None
        assert row["train_peak_mem_mb"] is None  # no CUDA memory on a CPU
    assert rows[("naive", 2)]["train_speedup_vs_naive"] == pytest.approx(1.0)
    assert rows[("naive", 4)]["train_speedup_vs_naive_ref_batch"] == pytest.approx(1.0)
    assert doc["goals"] is None
    data = doc["data_pipeline"]
    assert data["phantom_patients"] == 2 and data["stages"], data
    rates = {s["name"]: s["pairs_per_s"] for s in data["stages"]}
    assert set(rates) == {"png -> roi -> augment", "png -> roi", "cache -> augment",
                          "cache -> flip/shift", "cache -> device flip/shift",
                          "device flip/shift only"}
    assert all(v > 0 for v in rates.values())
    assert rates["cache -> augment"] > rates["png -> roi -> augment"]
    assert "bounds training" in data["verdict"]
    cpu = results_io.cpu_model()  # every rate names the machine that measured it
    assert all(s["where"].startswith(cpu) for s in data["stages"])
    assert f"pairs/s on {cpu}." in data["verdict"]
    assert doc["model"]["params_total"] > doc["model"]["params_trainable"] > 0
    md = (tmp_path / "throughput_cpu-quick.md").read_text()
    assert md.startswith("# mmfusion throughput: CPU") and "NOT GPU results" in md
    assert "| batch | rung | train pairs/s |" in md and "| 4 | fused_adam |" in md
    table = [line.split("|")[1:3] for line in md.splitlines() if line.startswith(("| 2 |", "| 4 |"))]
    assert [(b.strip(), r.strip()) for b, r in table] == [
        (str(b), r) for b in (2, 4) for r in rungs.split(",")]  # by batch, in ladder order
    assert "## Input pipeline" in md and "| png -> roi -> augment |" in md


@pytest.mark.parametrize(
    ("train", "expected"),
    [(100.0, "compute bounds"), (10_000.0, "augment on the device"), (1e9, "data (collation")],
)
def test_data_verdict(train: float, expected: str) -> None:
    names = ["png -> roi -> augment", "cache -> augment", "cache -> device flip/shift"]
    stages = [{"name": n, "pairs_per_s": r} for n, r in zip(names, [30.0, 1000.0, 20_000.0],
                                                             strict=True)]
    text = input_pipeline.verdict(stages, train, cores=4, machine="NVIDIA H100 80GB HBM3")
    assert expected in text
    assert f"reaches {train:,.0f} pairs/s on NVIDIA H100 80GB HBM3." in text


@pytest.mark.slow
def test_compile_rung_code_path_on_cpu(tmp_path: Path) -> None:
    doc = _run(tmp_path, "--batch-sizes", "2", "--rungs", "naive,compile",
               "--compile-backend", "eager")
    row = doc["results"][1]
    assert row["rung"] == "compile" and row["status"] == "ok", row
    assert row["compile_stats"]["graph_breaks"] == 0
    assert row["train_speedup_vs_naive"] > 0


def test_a_stopped_run_leaves_its_partial_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under a time limit: the rows measured before the stop are on disk, marked partial."""
    measure = throughput.measure_rung
    calls: list[str] = []

    def stopped_on_the_second(name: str, *args, **kwargs) -> None:
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # not an Exception: the ladder does not catch it
        measure(name, *args, **kwargs)

    monkeypatch.setattr(throughput, "measure_rung", stopped_on_the_second)
    args = ["--device", "cpu", "--quick", "--out", str(tmp_path), *FAST,
            "--batch-sizes", "2,4", "--rungs", "naive,channels_last"]
    with pytest.raises(KeyboardInterrupt):
        throughput.main(args)
    doc = json.loads((tmp_path / "throughput_cpu-quick.json").read_text())
    assert doc["complete"] is False and doc["progress"] == {"rows_done": 1, "rows_planned": 4}
    assert [(r["rung"], r["batch_size"], r["status"]) for r in doc["results"]] == [
        ("naive", 2, "ok")]
    assert doc["results"][0]["train_speedup_vs_naive"] == pytest.approx(1.0)
    assert doc["summary"]["2"]["best_train_rung"] == "naive"
    md = (tmp_path / "throughput_cpu-quick.md").read_text()
    assert md.splitlines()[0].endswith("(PARTIAL), NOT GPU results")
    assert "after 1 of 4 rung x batch-size measurements" in md
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically
    with pytest.raises(SystemExit):  # a partial result is still never replaced unasked
        throughput.main(args)
    monkeypatch.setattr(throughput, "measure_rung", measure)
    assert throughput.main([*args, "--overwrite"]) == 0
    assert json.loads((tmp_path / "throughput_cpu-quick.json").read_text())["complete"] is True


def test_only_skipped_rungs_still_write_results(tmp_path: Path) -> None:
    doc = _run(tmp_path, "--batch-sizes", "2", "--rungs", "tf32,cudagraphs")
    assert [r["status"] for r in doc["results"]] == ["skipped", "skipped"]
    assert doc["summary"] == {}
    assert "skipped: CUDA only" in (tmp_path / "throughput_cpu-quick.md").read_text()


def test_flop_count_is_positive_and_linear_in_batch(tiny: tuple) -> None:
    model, loss_fn = tiny
    setup = ladder.prepare(model, ladder.RungConfig(frozen_no_grad=True), torch.device("cpu"))
    counts = {}
    for b in (2, 4):
        inputs, target = ladder.synthetic_batch(b, 64, ("us", "swe"), torch.device("cpu"))
        counts[b] = (
            flops.count_train_flops(setup.model, loss_fn, inputs, target),
            flops.count_inference_flops(setup.model, inputs),
        )
    assert counts[2][0] > counts[2][1] > 0
    assert counts[4][0] / counts[2][0] == pytest.approx(2.0, rel=0.01)
    assert counts[4][1] / counts[2][1] == pytest.approx(2.0, rel=0.01)


def test_naive_executes_more_flops_than_library_default(tiny: tuple) -> None:
    model, loss_fn = tiny
    cpu = torch.device("cpu")
    inputs, target = ladder.synthetic_batch(2, 64, ("us", "swe"), cpu)
    naive = ladder.prepare(model, ladder.RungConfig(), cpu)
    default = ladder.prepare(model, ladder.RungConfig(frozen_no_grad=True), cpu)
    assert flops.count_train_flops(naive.model, loss_fn, inputs, target) > (
        flops.count_train_flops(default.model, loss_fn, inputs, target)
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA GeForce RTX 4090", None),
        (None, None),
    ],
)
def test_peak_table(name: str | None, expected: float | None) -> None:
    tflops, source = flops.peak_bf16_tflops(name)
    assert tflops == expected
    assert source


def test_each_rung_adds_exactly_one_change_on_cuda() -> None:
    configs = [asdict(ladder.rung_config(n, "cuda")) for n in ladder.RUNG_NAMES]
    assert configs[0] == asdict(ladder.RungConfig())
    for before, after in zip(configs, configs[1:], strict=False):
        assert sum(before[f.name] != after[f.name] for f in fields(ladder.RungConfig)) == 1


def test_cpu_drops_cuda_only_changes() -> None:
    assert ladder.rung_config("bf16", "cpu") == ladder.RungConfig()
    cfg = ladder.rung_config("cudagraphs", "cpu")
    assert not (cfg.tf32 or cfg.bf16 or cfg.cudagraphs) and cfg.compile_mode == "default"
    assert ladder.skip_reason("tf32", "cpu", quick=False) == "CUDA only"
    assert ladder.skip_reason("compile", "cpu", quick=True) is not None
    assert ladder.skip_reason("compile", "cpu", quick=False) is None


def test_naive_rung_keeps_frozen_stages_in_the_graph(tiny: tuple) -> None:
    model, _ = tiny
    cpu = torch.device("cpu")
    naive = ladder.prepare(model, ladder.RungConfig(), cpu)
    default = ladder.prepare(model, ladder.RungConfig(frozen_no_grad=True), cpu)
    for setup, in_graph in ((naive, True), (default, False)):
        enc = ladder.encoders_of(setup.model)[0]
        frozen = [p for m in enc.frozen_modules() for p in m.parameters()]
        assert enc.frozen_no_grad is not in_graph
        assert all(p.requires_grad is in_graph for p in frozen)
        assert all(m.training is in_graph for f in enc.frozen_modules() for m in f.modules())
        in_opt = {id(p) for g in setup.optimizer.param_groups for p in g["params"]}
        assert not in_opt & {id(p) for p in frozen}
    n_opt = [sum(len(g["params"]) for g in s.optimizer.param_groups) for s in (naive, default)]
    assert n_opt[0] == n_opt[1]


def test_tf32_mode_restores_settings() -> None:
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with ladder.tf32_mode(False):
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    with ladder.tf32_mode(True):
        assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    after = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    assert after == before


def test_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "throughput_cpu-quick.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit) as exc:
        throughput.main(["--device", "cpu", "--quick", "--out", str(tmp_path), *FAST])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert existing.read_text() == "{}"


@pytest.mark.parametrize(
    "args",
    [["--batch-sizes", "0"], ["--batch-sizes", "4,x"], ["--rungs", "naive,turbo"],
     ["--repeats", "-1"], ["--device", "tpu"]],
)
def test_bad_cli_input_is_one_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        throughput.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("benchmarks.throughput: error:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_request_without_gpu_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        throughput.main(["--device", "cuda"])
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_quick_cuda_run_every_rung(tmp_path: Path) -> None:
    args = ["--device", "cuda", "--quick", "--out", str(tmp_path), "--batch-sizes", "2,8"]
    assert throughput.main([*args, *FAST]) == 0
    (path,) = tmp_path.glob("throughput_*-quick.json")
    doc = json.loads(path.read_text())
    assert doc["is_gpu_result"] is True
    statuses = {r["rung"]: r["status"] for r in doc["results"]}
    assert statuses["naive"] == statuses["bf16"] == statuses["compile"] == "ok", doc["results"]
    assert all(r["train_peak_mem_mb"] > 0 for r in doc["results"] if r["status"] == "ok")


def test_goals_from_a_synthetic_summary() -> None:
    def best(pairs: float, sp: float, sp_ref: float, mem: float, frac: float, rung: str) -> dict:
        return {"best_train_rung": rung, "best_train_pairs_per_s": pairs,
                "best_train_speedup_vs_naive": sp, "best_train_speedup_vs_naive_ref_batch": sp_ref,
                "best_train_peak_mem_mb": mem, "best_train_frac_peak": frac,
                "best_infer_rung": rung, "best_infer_pairs_per_s": 2 * pairs}

    summary = {"4": best(400.0, 3.2, 3.2, 900.0, 0.01, "cudagraphs"),
               "256": best(6000.0, 4.0, 16.0, 5500.0, 0.15, "compile")}
    goals = {g["goal"].split(" (")[0]: g["met"] for g in summary_mod.evaluate_goals(summary)}
    assert list(goals.values()) == [True, True, True, False, True, True, False]
    fp32 = {"256": best(6000.0, 6.0, 16.0, 5500.0, 0.15, "tf32")}
    mem_goal = summary_mod.evaluate_goals(fp32)[5]
    assert mem_goal["measured"] is None and mem_goal["met"] is None  # fp32 best rung: not bf16


def test_cuda_rung_code_paths_run_on_cpu(tiny: tuple) -> None:
    """bf16 autocast and the CUDA-graph step marker, forced on a CPU (the rungs skip them there)."""
    model, loss_fn = tiny
    cpu = torch.device("cpu")
    cfg = ladder.RungConfig(tf32=True, bf16=True, channels_last=True, frozen_no_grad=True,
                            fused_adam=True, compile_mode="reduce-overhead")
    inputs, target = ladder.synthetic_batch(2, 64, ("us", "swe"), cpu, channels_last=True)
    with ladder.tf32_mode(cfg.tf32):
        eager = ladder.prepare(model, replace(cfg, compile_mode=None), cpu)
        setup = ladder.Setup(eager.model, eager.model, eager.optimizer, cfg)  # uncompiled forward
        before = [p.detach().clone() for p in setup.optimizer.param_groups[0]["params"]]
        ladder.make_train_step(setup, loss_fn, inputs, target, cpu)()
        after = setup.optimizer.param_groups[0]["params"]
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
        ladder.release_optimizer(setup)
        setup.model.eval()
        ladder.make_infer_step(setup, inputs, cpu)()


class _TinyClassifier(torch.nn.Module):
    """The classifier interface in one Linear layer, for hand-checked saved-tensor counts."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, inputs):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.fc(inputs["x"]), features=None, available=None)


def _square_loss(logits, target, features, available):
    from types import SimpleNamespace

    return SimpleNamespace(total=(logits**2).sum())


def test_saved_activation_count_matches_a_hand_count() -> None:
    from benchmarks import activations

    model = _TinyClassifier()
    batches = tuple(({"x": torch.randn(b, 4)}, torch.zeros(b, dtype=torch.long)) for b in (1, 3))
    # Linear saves its input [B, 4] (for the weight gradient; its weight is a parameter and not
    # counted); pow saves its input, the logits [B, 3]: (4 + 3) float32 = 28 bytes per sample.
    assert activations.saved_bytes(model, _square_loss, *batches[1]) == 3 * 28
    counted = activations.per_pair(model, _square_loss, batches)
    assert counted["mb_per_pair"] == pytest.approx(28e-6) and counted["fixed_mb"] == pytest.approx(0)
    with pytest.raises(ValueError, match="two different batch sizes"):
        activations.per_pair(model, _square_loss, (batches[0], batches[0]))


def test_frozen_stages_under_no_grad_save_far_less(tiny: tuple) -> None:
    doc = _run_counts(tiny)
    naive, no_grad, bf16 = (r["mb_per_pair"] for r in doc["rows"])
    assert naive > 5 * no_grad > 0  # the frozen stem and stages 1-3 keep no activations
    assert bf16 < no_grad  # bf16 activations are half the size
    assert doc["adam_state_mb"] == pytest.approx(2 * doc["grads_mb"])


def _run_counts(tiny: tuple) -> dict:
    model, loss_fn = tiny
    opts = throughput.resolve(["--device", "cpu", "--quick", "--out", "/nonexistent-dir", *FAST])
    return throughput.count_activations(model, loss_fn, opts)


def test_tf32_mode_uses_legacy_flags_on_older_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine's own PyTorch may predate fp32_precision (2.9): allow_tf32 is set instead."""
    from types import SimpleNamespace

    matmul = SimpleNamespace(allow_tf32=False)  # no fp32_precision attribute
    monkeypatch.setattr(torch.backends.cuda, "matmul", matmul)
    before = torch.backends.cudnn.allow_tf32
    with ladder.tf32_mode(True):
        assert matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
    assert matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 == before
