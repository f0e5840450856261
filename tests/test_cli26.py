"""Issue 26: the example's command lines on jsonargparse (``--config``, ``--print_config``, the
defaults that apply on this machine in ``--help``, old spellings still accepted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _fix24_run_helpers import TINY, tiny_phantom

from examples.liver_fibrosis import train as train_mod
from examples.liver_fibrosis.cli import run
from examples.liver_fibrosis.options import normalise, preset_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.xdist_group("example_cli26")

HELP = """
import importlib, sys
for name in ("train", "ablation", "evaluate", "predict", "export", "baselines"):
    try:
        importlib.import_module(f"examples.liver_fibrosis.{name}").main(["--help"])
    except SystemExit as exit:
        print(name, "exit", exit.code)
print("loaded", sorted(m for m in ("torch", "lightning", "timm", "sklearn") if m in sys.modules))
"""


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_phantom(tmp_path_factory)


def test_help_shows_the_defaults_that_apply_here_without_loading_torch() -> None:
    """Every command's --help imports neither torch nor Lightning (it stays under a second or two)."""
    proc = subprocess.run([sys.executable, "-c", HELP], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.stdout.count(" exit 0") == 6 and "loaded []" in proc.stdout, proc.stderr[-2000:]
    text = " ".join(proc.stdout.split())
    quick = preset_config("quick", {})  # no GPU visible: the quick preset applies, not the paper's
    for option, value in (("epochs", quick.training.epochs), ("lr", quick.training.lr),
                          ("batch_size", quick.training.batch_size), ("backbone", quick.model.backbone)):
        assert f"--{option} " in text
        block = text.split(f"--{option} ", 2)[-1].split(" --", 1)[0]
        assert f"default: {value})" in block, (option, block)
    assert "default here: quick (CUDA is not available" in text


def test_old_dashed_spellings_mean_the_new_ones() -> None:
    assert normalise(["--image-size", "64", "--no-channels-last", "--out", "a-b", "--x-y=1-2"]) == [
        "--image_size", "64", "--no_channels_last", "--out", "a-b", "--x_y=1-2"]
    dashed = train_mod.resolve_config([*TINY, "--image-size", "64", "--no-channels-last"])
    underscored = train_mod.resolve_config(normalise([*TINY, "--image-size", "64", "--no-channels-last"]))
    assert all(not a.startswith("--") or "-" not in a[2:] for a in normalise(TINY))
    assert dashed == underscored and dashed.model.image_size == 64 and not dashed.run.channels_last


def test_print_config_is_the_resolved_configuration(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        train_mod.main([*TINY, "--lr", "0.25", "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["lr"], printed["epochs"], printed["backbone"], printed["hidden"]) == (0.25, 1, "test_resnet", [16])
    assert printed["weight_decay"] == preset_config("quick", {}).training.weight_decay  # the preset's


def test_a_rerun_from_the_saved_yaml_gives_the_same_metrics(manifest: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(first), *TINY, "--lr", "0.003"]) == 0
    saved = yaml.safe_load((first / "config.yaml").read_text())
    assert (saved["lr"], saved["out"], saved["resume"], saved["data"]) == (0.003, str(first), False, str(manifest))
    assert run(train_mod.main, ["--config", str(first / "config.yaml"), "--out", str(second)]) == 0
    a, b = (json.loads((f / "metrics.json").read_text()) for f in (first, second))
    assert a["ensemble"]["accuracy"] is not None
    assert a == b
    assert yaml.safe_load((second / "config.yaml").read_text()) == {**saved, "out": str(second)}


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit) as done:
        train_mod.main(["--config", str(config), "--out", str(tmp_path / "r")])
    assert done.value.code == 2
    assert "learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_run_folder_or_its_config_json_still_works_as_config(tmp_path: Path) -> None:
    """The spelling of before (``--config runs/x`` or ``runs/x/config.json``) reads the same run."""
    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=32, hidden=(16,), lr=0.25))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    for where in (tmp_path, tmp_path / "config.json"):
        got = train_mod.resolve_config(["--config", str(where), "--epochs", "2", "--device", "cpu"])
        assert got == cfg.replace(epochs=2, device="cpu")


def test_resume_help_shows_the_saved_runs_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = preset_config("quick", dict(backbone="test_resnet", epochs=3, lr=0.25, out=str(tmp_path)))
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_json()))
    with pytest.raises(SystemExit) as done:
        train_mod.main(["--out", str(tmp_path), "--resume", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, value in (("epochs", 3), ("lr", 0.25), ("backbone", "test_resnet")):
        assert f"default: {value})" in text.split(f"--{option} ", 2)[-1].split(" --", 1)[0], option
    assert "was trained with" in text
