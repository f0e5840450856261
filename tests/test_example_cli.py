"""Bad input to the liver fibrosis example: one clear line, exit code 2, nothing overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from examples.liver_fibrosis import evaluate, predict
from examples.liver_fibrosis import train as train_mod
from examples.liver_fibrosis.cli import run
from examples.liver_fibrosis.options import preset_config
from mmfusion.files import atomic_save_tensors

pytestmark = pytest.mark.xdist_group("example_cli")


def fails(main, argv: list[str], capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Run ``main``; assert exit code 2 and a one-line error mentioning ``words``."""
    assert run(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in "\n".join(err)
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def test_missing_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fails(train_mod.main, ["--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "r")],
          capsys, "--data", "nope.csv")
    assert not (tmp_path / "r").exists()


def test_malformed_manifest_lists_the_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("patient_id,us_path,stage\nP1,missing.png,F7\n")
    line = fails(train_mod.main, ["--data", str(csv), "--out", str(tmp_path / "r")], capsys,
                 "--data", "F7", "missing.png")
    assert "2 problem(s)" in line  # both problems of line 2, in one message
    assert not (tmp_path / "r").exists()


def test_manifest_without_a_modality_the_model_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    import numpy as np

    image = tmp_path / "us.png"
    cv2.imwrite(str(image), np.full((64, 64), 128, np.uint8))
    csv = tmp_path / "us_only.csv"
    csv.write_text(f"patient_id,us_path,stage\nP1,{image},F1\n")
    fails(train_mod.main, ["--data", str(csv), "--out", str(tmp_path / "r"), "--preset", "quick"],
          capsys, "--data", "needs ['swe']", "--modalities")
    assert not (tmp_path / "r").exists()  # nothing written before the inputs are valid


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--preset", "fast"], ("--preset", "fast", "paper")),
        (["--backbone", "resnet5000"], ("--backbone", "resnet5000")),
        (["--device", "cuda"], ("--device", "CUDA")),
        (["--amp", "fp16", "--device", "cpu"], ("--amp fp16",)),
        (["--epochs", "0"], ("--epochs: expected an int >= 1, got 0",)),
        (["--image-size", "8"], ("--image-size: expected an int >= 32",)),
        (["--preset", "paper", "--device", "cpu"], ("--weights", "frozen", "--frozen-stages 0")),
        (["--modalities", "us", "--modality-dropout", "0.3"], ("--modality-dropout",)),
    ],
)
def test_bad_options(argv, words, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    fails(train_mod.main, [*argv, "--out", str(tmp_path / "r")], capsys, *words)
    assert not (tmp_path / "r").exists()


def test_phantom_of_another_generator_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmfusion.liver import PhantomConfig
    from mmfusion.liver.phantom import GENERATOR_VERSION

    phantom = tmp_path / "phantom"
    phantom.mkdir()
    (phantom / "manifest.csv").write_text("patient_id,us_path,swe_path,stage\n")
    # the example's parameters (phantom v2 records its version and image format) and another
    # generator fingerprint
    stale = {"n_patients": 250, "seed": 0, "config": PhantomConfig().as_dict(), "generator": "0" * 16,
             "version": GENERATOR_VERSION, "image_format": "native"}
    (phantom / "phantom.json").write_text(json.dumps(stale))
    fails(train_mod.main, ["--phantom-dir", str(phantom), "--out", str(tmp_path / "r")], capsys,
          "--phantom-dir", "another version of the generator", "delete the folder")
    assert json.loads((phantom / "phantom.json").read_text()) == stale  # left as it was


def test_occupied_out_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "metrics.json").write_text('{"keep": true}')
    fails(train_mod.main, ["--out", str(out), "--preset", "quick"], capsys, "--overwrite", "--resume")
    assert json.loads((out / "metrics.json").read_text()) == {"keep": True}


def test_weights_with_other_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "w.safetensors"
    save_file({"not.a.resnet": torch.zeros(3)}, str(weights))
    argv = ["--weights", str(weights), "--backbone", "test_resnet", "--preset", "quick",
            "--image-size", "64", "--out", str(tmp_path / "r")]
    fails(train_mod.main, argv, capsys, "weights", "does not fit")
    assert not (tmp_path / "r").exists()


def test_checkpoint_of_another_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmfusion.models import build_model

    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=64, hidden=(16,), embed_dim=16))
    run_dir = tmp_path / "run"
    build_model(cfg.model).save_pretrained(run_dir)
    document = json.loads((run_dir / "config.json").read_text())
    document.update(cfg.to_json())
    document["model"]["hidden"] = [32]
    (run_dir / "config.json").write_text(json.dumps(document))
    fails(evaluate.main, ["--checkpoint", str(run_dir)], capsys, "--checkpoint", "another architecture",
          "head.branch_heads")
    fails(predict.main, ["--checkpoint", str(tmp_path / "nothing"), "--us", "a.png"], capsys,
          "--checkpoint")


def test_atomic_save_keeps_the_last_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    path = tmp_path / "model.safetensors"
    atomic_save_tensors({"w": torch.ones(2)}, path)

    def killed(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_tensors({"w": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert safetensors.torch.load_file(str(path))["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_presets_come_from_the_registry() -> None:
    paper = preset_config("paper", {})
    assert paper.preset == "liver_fibrosis_paper"
    assert (paper.model.backbone, paper.model.image_size, paper.training.lr, paper.training.weight_decay,
            paper.training.batch_size, paper.training.epochs, paper.model.frozen_stages,
            paper.training.augment) == ("resnet50", 224, 7e-5, 1e-3, 4, 40, 3, "paper")
    quick = preset_config("quick", {"lr": 0.5, "seed": 3})
    assert (quick.training.lr, quick.run.seed, quick.model.backbone) == (0.5, 3, "resnet10t")


def test_every_setting_has_one_option_with_its_docstring_help() -> None:
    from dataclasses import fields

    from examples.liver_fibrosis.options import RunSettings
    from mmfusion.models import ModelConfig, TrainingConfig

    parser = train_mod.build_parser()
    actions = {a.dest: a for a in parser._actions}
    for cls in (ModelConfig, TrainingConfig, RunSettings):
        for f in fields(cls):
            if f.name == "weights":
                continue
            assert f.name in actions, f.name
            assert actions[f.name].help, f"{f.name} has no help text"
    assert "Adam learning rate" in actions["lr"].help


def test_missing_matplotlib_stops_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    fails(train_mod.main, ["--out", str(tmp_path / "r"), "--preset", "quick"], capsys,
          "matplotlib", "pip install")
    assert not (tmp_path / "r").exists()  # no phantom, no training, no run folder


def test_imagenet_weights_offline_without_a_cache_fail_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    started = time.perf_counter()
    fails(train_mod.main, ["--weights", "imagenet", "--backbone", "test_resnet", "--preset", "quick",
                           "--out", str(tmp_path / "r")], capsys,
          "--weights", "not in the Hugging Face cache", "HF_HUB_OFFLINE", "local weights file")
    assert time.perf_counter() - started < 10
    assert not (tmp_path / "r").exists()


def test_ablation_validates_like_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from examples.liver_fibrosis import ablation

    fails(ablation.main, ["--epochs", "0", "--out", str(tmp_path / "a"), "--preset", "quick"],
          capsys, "--epochs: expected an int >= 1")
    assert not (tmp_path / "a").exists()
