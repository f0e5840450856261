"""End to end on a tiny phantom: train -> evaluate -> predict -> export, and resume after SIGKILL.

The liver fibrosis example (``examples/liver_fibrosis``) is run in-process through its command-line
entry points on 10 phantom patients (2 small views each), with timm's ``test_resnet`` at 64 px.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from examples.liver_fibrosis import train as train_mod
from examples.liver_fibrosis.cli import run
from mmfusion.elastography import SWEBoxCrop
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset

pytestmark = pytest.mark.xdist_group("example_pipeline")

REPO = Path(__file__).resolve().parents[1]

#: The train entry point with 0.3 s of sleep per training step (numerics untouched), so that a
#: SIGKILL sent just after the first checkpoint lands inside epoch 2.
SLOW_TRAIN = """
import runpy, sys, time
from mmfusion.lightning.module import FusionModule
step = FusionModule.training_step
def slow(self, batch, batch_idx):
    time.sleep(0.3)
    return step(self, batch, batch_idx)
FusionModule.training_step = slow
sys.argv[0] = "train"
runpy.run_module("examples.liver_fibrosis.train", run_name="__main__")
"""

TINY = ["--backbone", "test_resnet", "--image-size", "64", "--batch-size", "4", "--epochs", "2",
        "--test-size", "0.5", "--n-bootstrap", "20", "--hidden", "16", "--embed-dim", "16",
        "--preset", "quick", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="session")
def manifest(tiny_manifest: Path) -> Path:
    return tiny_manifest


@pytest.fixture(scope="session")
def trained(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_every_output(trained: Path) -> None:
    for name in ("config.json", "metrics.json", "log.jsonl", "confusion_matrix.png", "roc.png",
                 "model.safetensors", "checkpoints/last.ckpt", "logs/metrics.csv",
                 "reliability/ensemble.png", "reliability/us.png"):
        assert (trained / name).is_file(), name
    assert list((trained / "attention").glob("*.png"))
    log = [json.loads(line) for line in (trained / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    assert {"loss", "ce_us", "ce_swe", "ce_joint", "consistency", "lr", "seconds",
            "pairs_per_s"} <= set(log[0])
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["split"] == "patient"
    assert metrics["n_test_pairs"] == 10 and metrics["n_test_patients"] == 5
    assert set(metrics["branches"]) == {"us", "swe", "joint"}
    for report in [metrics["ensemble"], *metrics["branches"].values()]:
        for key in ("accuracy", "auc_macro", "sensitivity_macro", "specificity_macro", "qwk",
                    "auc_f2plus", "auc_f3plus", "auc_f4", "per_class", "confusion_matrix", "ci"):
            assert key in report
        assert np.asarray(report["confusion_matrix"]).shape == (5, 5)
        assert report["ci"]["unit"] == "patient"
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["backbone"] == "test_resnet" and config["run"]["resume"] is False
    assert config["training"]["epochs"] == 2 and config["format"] == "mmfusion.model/1"


def test_dicom_phantom_trains_to_the_png_phantom_metrics(
    trained: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The same phantom written as lossless DICOM (JPEG 2000, tissue regions tagged) trains to
    exactly the PNG phantom's weights and metrics: a whole run reads DICOM."""
    pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")
    config = PhantomConfig(width=256, height=192, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(2, 2), pairs_per_patient=2.0)
    dicom = make_phantom_dataset(tmp_path_factory.mktemp("dicom"), n_patients=10, seed=0,
                                 config=config, workers=1, image_format="dicom")
    out = tmp_path / "dicom_run"
    assert run(train_mod.main, ["--data", str(dicom), "--out", str(out), *TINY]) == 0
    a = json.loads((trained / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["ensemble"] == b["ensemble"] and a["branches"] == b["branches"]
    expected, got = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_paper_protocol_and_swe_box_input(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--split paper`` (augment, then split images) with ``--swe-input box``: it runs, says it
    leaks, and ``evaluate`` rebuilds the same held-out images (same metrics)."""
    from examples.liver_fibrosis import evaluate

    out = tmp_path / "paper_box"
    argv = ["--data", str(manifest), "--out", str(out), *TINY, "--epochs", "1", "--split", "paper",
            "--swe-input", "box"]
    with pytest.warns(UserWarning, match="augmented copy of the same pair in training"):
        assert run(train_mod.main, argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"].startswith("paper") and metrics["n_test_pairs"] > 20  # augmented items
    config = json.loads((out / "config.json").read_text())
    assert (config["run"]["split"], config["run"]["swe_input"]) == ("paper", "box")
    assert run(evaluate.main, ["--checkpoint", str(out), "--n-bootstrap", "20", "--device", "cpu"]) == 0
    again = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert again["ensemble"]["accuracy"] == metrics["ensemble"]["accuracy"]
    assert again["n_test_pairs"] == metrics["n_test_pairs"]


def test_twenty_percent_of_swe_missing_trains_evaluates_and_reports(
    manifest: Path, tmp_path: Path
) -> None:
    """Visits without SWE: kept, flagged, trained on, evaluated per availability; nothing dropped."""
    import csv

    rows = list(csv.DictReader(manifest.open()))
    for i, row in enumerate(rows):
        row["us_path"] = str(manifest.parent / row["us_path"])
        row["swe_path"] = "" if i % 5 == 0 else str(manifest.parent / row["swe_path"])
    missing = tmp_path / "missing.csv"
    with missing.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["patient_id", "us_path", "swe_path", "stage"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "missing_run"
    assert run(train_mod.main, ["--data", str(missing), "--out", str(out), *TINY, "--epochs", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_pairs"] == 10
    by = metrics["by_availability"]
    assert set(by) == {"us+swe", "us"} and by["us+swe"]["n_pairs"] + by["us"]["n_pairs"] == 10
    from examples.liver_fibrosis import evaluate

    argv = ["--checkpoint", str(out), "--missing-modality-report", "--n-bootstrap", "10", "--device", "cpu"]
    assert run(evaluate.main, argv) == 0
    report = json.loads((out / "eval-test" / "missing_modality.json").read_text())
    swe_only = report["SWE"]
    # the test pairs without SWE have nothing to predict from when only SWE is given: counted, left out
    assert swe_only["n_pairs_without_given_modalities"] == by["us"]["n_pairs"]
    assert swe_only["n_test_pairs"] == by["us+swe"]["n_pairs"]
    assert report["US"]["n_test_pairs"] == 10


def test_run_folder_loads_with_from_pretrained(trained: Path, manifest: Path, tmp_path: Path) -> None:
    """The run folder is a saved model: from_pretrained reproduces the run's test metrics."""
    from mmfusion.lightning import FusionDataModule, FusionModule
    from mmfusion.liver import STAGE_NAMES
    from mmfusion.models import from_pretrained

    model = from_pretrained(trained)
    assert model.config.backbone == "test_resnet" and not model.training
    dm = FusionDataModule(manifest, model.config.modalities, 64, 4, test_size=0.5, labels=METAVIR)
    module = FusionModule(model, n_bootstrap=20, class_names=STAGE_NAMES)
    import lightning.pytorch as pl

    pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
               enable_model_summary=False, use_distributed_sampler=False,
               default_root_dir=str(tmp_path)).test(module, dm, verbose=False)
    saved = json.loads((trained / "metrics.json").read_text())
    assert module.metrics is not None
    assert module.metrics["ensemble"]["accuracy"] == saved["ensemble"]["accuracy"]
    assert module.metrics["ensemble"]["auc_macro"] == saved["ensemble"]["auc_macro"]


def test_evaluate_reports_missing_modalities(trained: Path, manifest: Path, tmp_path: Path) -> None:
    from examples.liver_fibrosis import evaluate

    out = tmp_path / "eval"
    argv = ["--checkpoint", str(trained), "--data", str(manifest), "--out", str(out),
            "--missing-modality-report", "--n-bootstrap", "10", "--device", "cpu"]
    assert run(evaluate.main, argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_pairs"] == 20
    table = (out / "missing_modality.md").read_text()
    assert "| US + SWE |" in table and "| US |" in table and "| SWE |" in table
    assert run(evaluate.main, argv) == 2  # never overwrites without --overwrite


def _pair(manifest: Path, patient: str = "P001") -> list[str]:
    return ["--us", str(manifest.parent / f"{patient}/view1_us.png"),
            "--swe", str(manifest.parent / f"{patient}/view1_swe.png")]


def test_predict_json_and_overlay(
    trained: Path, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.liver_fibrosis import predict

    out = tmp_path / "pred"
    assert run(predict.main, ["--checkpoint", str(trained), *_pair(manifest), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["probabilities"]) == {"F0", "F1", "F2", "F3", "F4"}
    assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
    assert (out / "overlay.png").is_file() and result["maps"] == ["attention"]
    assert set(result["branches"]) == {"us", "swe", "joint"}


@pytest.mark.slow
def test_export_and_predict_with_onnx(
    trained: Path, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.liver_fibrosis import export, predict

    onnx = tmp_path / "model.onnx"
    assert run(export.main, ["--checkpoint", str(trained), "--out", str(onnx), "--availability-input"]) == 0
    common = ["--checkpoint", str(trained), *_pair(manifest)]
    assert run(predict.main, [*common, "--out", str(tmp_path / "p1")]) == 0
    capsys.readouterr()
    assert run(predict.main, [*common, "--out", str(tmp_path / "p2"), "--onnx", str(onnx)]) == 0
    via_onnx = json.loads(capsys.readouterr().out)
    via_torch = json.loads((tmp_path / "p1" / "prediction.json").read_text())
    assert via_onnx["engine"] == "onnxruntime"
    for stage, p in via_torch["probabilities"].items():
        assert via_onnx["probabilities"][stage] == pytest.approx(p, abs=1e-4)
    # SWE missing: the same graph, with the availability input, agrees with PyTorch
    us_only = ["--checkpoint", str(trained), "--us", _pair(manifest)[1]]
    assert run(predict.main, [*us_only, "--out", str(tmp_path / "p3")]) == 0
    assert run(predict.main, [*us_only, "--out", str(tmp_path / "p4"), "--onnx", str(onnx)]) == 0
    a, b = (json.loads((tmp_path / d / "prediction.json").read_text()) for d in ("p3", "p4"))
    for stage, p in a["probabilities"].items():
        assert b["probabilities"][stage] == pytest.approx(p, abs=1e-4)


def test_predict_several_views_of_one_patient(
    trained: Path, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.liver_fibrosis import predict
    from mmfusion.metrics import aggregate_patients

    out = tmp_path / "views"
    argv = ["--checkpoint", str(trained), "--views", str(manifest.parent / "P003"), "--out", str(out)]
    assert run(predict.main, argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_views"] == 2 and set(result["views"]) == {"view1", "view2"}
    views = np.array([list(v["probabilities"].values()) for v in result["views"].values()])
    _, expected, _ = aggregate_patients(views, ["P003", "P003"], method="mean")
    np.testing.assert_allclose(list(result["probabilities"].values()), expected[0], atol=2e-6)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["view1.png", "view2.png"]
    argv = ["--checkpoint", str(trained), "--manifest", str(manifest), "--patient", "P003",
            "--aggregate", "max_stage", "--out", str(tmp_path / "m")]
    assert run(predict.main, argv) == 0
    by_manifest = json.loads(capsys.readouterr().out)
    assert by_manifest["aggregate"] == "max_stage" and by_manifest["n_views"] == 2
    worst = max(v["predicted_stage"] for v in result["views"].values())
    assert by_manifest["predicted_stage"] == worst  # the most advanced stage seen
    assert run(predict.main, ["--checkpoint", str(trained), "--manifest", str(manifest),
                              "--out", str(tmp_path / "x")]) == 2  # several patients: name one


def test_predict_reads_a_scanner_dicom_file(trained: Path, tmp_path: Path) -> None:
    """A real GE LOGIQ frame (pydicom's corpus) goes through the same pipeline as a PNG."""
    data = pytest.importorskip("pydicom.data", reason="needs the mmfusion[dicom] extra")
    try:
        path = data.get_testdata_file("US1_UNCR.dcm", download=False)
    except Exception:  # noqa: BLE001 - pydicom-data missing
        path = None
    if path is None:
        pytest.skip("pydicom-data (the dev extra) is not installed")
    renamed = tmp_path / "study"  # detected by content, not by suffix
    renamed.write_bytes(Path(path).read_bytes())
    out = tmp_path / "dcm"
    assert run(predict_main(), ["--checkpoint", str(trained), "--us", str(renamed), "--out", str(out)]) == 0
    result = json.loads((out / "prediction.json").read_text())
    assert result["modalities_present"] == ["us"] and abs(sum(result["probabilities"].values()) - 1) < 1e-4


def predict_main():  # noqa: ANN201 - the entry point
    from examples.liver_fibrosis import predict

    return predict.main


def test_predict_with_grad_cam_and_without_swe(trained: Path, manifest: Path, tmp_path: Path) -> None:
    from examples.liver_fibrosis import predict

    us = str(manifest.parent / "P002/view1_us.png")
    argv = ["--checkpoint", str(trained), "--us", us, "--out", str(tmp_path / "p"), "--explain"]
    assert run(predict.main, argv) == 0
    result = json.loads((tmp_path / "p" / "prediction.json").read_text())
    assert result["modalities_present"] == ["us"] and result["maps"] == ["Grad-CAM", "attention"]


def test_sigkill_then_resume_reaches_the_uninterrupted_result(
    trained: Path, manifest: Path, tmp_path: Path
) -> None:
    """A run killed with SIGKILL during epoch 2 and resumed ends with the same weights (CPU)."""
    out = tmp_path / "resumed"
    argv = [sys.executable, "-c", SLOW_TRAIN, "--data", str(manifest), "--out", str(out), *TINY]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.is_file(), proc.stderr.read() if proc.poll() is not None else "timeout"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()

    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY]) == 2  # occupied
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, "--resume"]) == 0

    expected, got = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(expected[key].numpy(), got[key].numpy(), err_msg=key)
    a = json.loads((trained / "metrics.json").read_text())
    b = json.loads((out / "metrics.json").read_text())
    assert a["ensemble"] == b["ensemble"]
    log_a = [json.loads(x) for x in (trained / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in log_a] == [e["loss"] for e in log_b]


def test_paper_preset_with_a_tiny_backbone(manifest: Path, tmp_path: Path) -> None:
    """The paper's recipe end to end: local weights, frozen stem + stages 1-3, offline plan."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False)
    weights = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(weights, str(tmp_path / "imagenet.safetensors"))
    out = tmp_path / "paper"
    argv = ["--data", str(manifest), "--out", str(out), "--preset", "paper",
            "--backbone", "test_resnet", "--image-size", "64", "--epochs", "1", "--hidden", "16",
            "--embed-dim", "16", "--weights", str(tmp_path / "imagenet.safetensors"),
            "--test-size", "0.5", "--n-bootstrap", "20", "--device", "cpu", "--workers", "0"]
    assert run(train_mod.main, argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["training"]["augment"], config["model"]["frozen_stages"],
            config["model"]["head_pool"]) == ("paper", 3, "flatten")
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # 10 training pairs, 2 per stage: the offline plan fills every stage to 4 x 2 = 8 items.
    assert log[0]["pairs"] == 40
    trained_state = load_file(str(out / "model.safetensors"))
    for modality in ("us", "swe"):
        frozen = [k for k in weights if not k.startswith(("layer4", "fc"))]
        for key in frozen:  # stem and stages 1-3 (BatchNorm statistics too) stay as loaded
            assert torch.equal(trained_state[f"encoders.{modality}.body.{key}"], weights[key]), key
        stage4 = [k for k in weights if k.startswith("layer4") and k.endswith("conv1.weight")]
        assert stage4 and all(
            not torch.equal(trained_state[f"encoders.{modality}.body.{k}"], weights[k]) for k in stage4
        )


@pytest.mark.cuda
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("extra", [["--amp", "bf16", "--compile"], ["--amp", "fp16", "--no-channels-last"]])
def test_cuda_training_paths(manifest: Path, tmp_path: Path, extra: list[str]) -> None:
    """The example's GPU defaults (bf16, channels_last, fused Adam, pinned memory), fp16 with
    loss scaling, and --compile: one short run each, then evaluation on the GPU."""
    from examples.liver_fibrosis import evaluate

    out = tmp_path / "cuda"
    argv = ["--data", str(manifest), "--out", str(out), *TINY, "--device", "cuda", *extra]
    assert run(train_mod.main, argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["device"] == "cuda" and config["run"]["amp"] == extra[1]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(e["loss"]) for e in log)
    assert run(evaluate.main, ["--checkpoint", str(out), "--device", "cuda"]) == 0
    metrics = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert metrics["n_test_pairs"] == 10


def test_predict_applies_the_runs_swe_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model trained on the colour box on the reference scale (``--swe-input box_kpa``) gets
    the same crop in ``predict`` as in training: its probabilities are the model's on that crop;
    without the colour scale's top in kPa, ``predict`` stops with one line naming the option."""
    from examples.liver_fibrosis import predict
    from examples.liver_fibrosis.runs import load_run
    from mmfusion.data import read_manifest
    from mmfusion.data.pipeline import eval_dataset

    config = PhantomConfig(width=400, height=300, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(1, 1), pairs_per_patient=1.0)  # legends need >= 400 x 300
    csv = make_phantom_dataset(tmp_path / "phantom", n_patients=10, seed=0, config=config, workers=1)
    out = tmp_path / "box_kpa"
    argv = ["--data", str(csv), "--out", str(out), *TINY, "--epochs", "1", "--swe-input", "box_kpa"]
    assert run(train_mod.main, argv) == 0
    row = read_manifest(csv, labels=METAVIR).rows[0]
    pair = ["--checkpoint", str(out), "--us", str(row.paths["us"]), "--swe", str(row.paths["swe"])]
    assert run(predict.main, [*pair, "--out", str(tmp_path / "p0")]) == 2
    assert "--swe-scale-kpa: this model reads the SWE colour box on the reference scale" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:  # jsonargparse: usage and one error line, status 2
        run(predict.main, [*pair, "--swe-scale-kpa", "-5", "--out", str(tmp_path / "p0")])
    assert bad.value.code == 2
    assert "--swe_scale_kpa: expected a positive number of kPa, got '-5'" in capsys.readouterr().err
    scale = row.extra["swe_scale_kpa"]
    assert run(predict.main, [*pair, "--swe-scale-kpa", scale, "--out", str(tmp_path / "p1")]) == 0
    got = json.loads(capsys.readouterr().out)["probabilities"]
    cfg, model = load_run(out, torch.device("cpu"))
    sample = eval_dataset(read_manifest(csv, labels=METAVIR), ("us", "swe"), cfg.model.image_size, [0],
                          crop={"swe": SWEBoxCrop("box_kpa")})[0]  # fmt: skip
    with torch.no_grad():
        expected = model({m: sample[m][None] for m in ("us", "swe")}).probs[0]
    np.testing.assert_allclose(list(got.values()), expected.numpy(), atol=2e-6)
    # a manifest row brings its own scale
    argv = ["--checkpoint", str(out), "--manifest", str(csv), "--patient", row.patient_id,
            "--out", str(tmp_path / "p2")]
    assert run(predict.main, argv) == 0
    assert json.loads(capsys.readouterr().out)["probabilities"] == got
