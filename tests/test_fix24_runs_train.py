"""Issue 24, runs that train: resume checks, kill-safe checkpoints, divergence, an empty modality.

Each training is one epoch of timm's ``test_resnet`` at 32 px on 10 phantom patients (one view each).
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from _fix24_run_helpers import TINY, tiny_phantom

from examples.liver_fibrosis import runner
from examples.liver_fibrosis import train as train_mod
from examples.liver_fibrosis.cli import run
from examples.liver_fibrosis.options import preset_config

pytestmark = pytest.mark.xdist_group("fix24_runs")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 phantom patients, one small view each."""
    return tiny_phantom(tmp_path_factory)


@pytest.fixture(scope="module")
def interrupted(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run stopped (Ctrl-C) after its last epoch's checkpoint, before its model was saved."""
    out = tmp_path_factory.mktemp("fix24_interrupted") / "r"
    with pytest.MonkeyPatch.context() as patch:
        def stopped(*args, **kwargs) -> None:
            raise KeyboardInterrupt

        patch.setattr(runner, "save_run_model", stopped)
        assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY]) == 130
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "model.safetensors").exists()
    return out


def one_error(code: int, capsys: pytest.CaptureFixture[str], *words: str) -> str:
    """Assert exit code 2 and exactly one ``error:`` line holding ``words``; return it."""
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------------------ item 4


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--image-size", "96"], ("image_size: saved 32, asked 96",)),
        (["--backbone", "resnet18", "--lr", "0.01"],
         ("backbone: saved 'test_resnet', asked 'resnet18'", "lr: saved 0.001, asked 0.01")),
    ],
)
def test_resume_of_an_interrupted_run_with_other_settings_is_refused(
    argv: list[str], words: tuple[str, ...], interrupted: Path, manifest: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "r"
    shutil.copytree(interrupted, out)
    before = (out / "checkpoints" / "last.ckpt").read_bytes()
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, *argv, "--resume"])
    one_error(code, capsys, "--resume", *words)
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == before
    assert json.loads((out / "config.json").read_text())["model"]["image_size"] == 32


# ------------------------------------------------------------------------------ item 10


def test_resume_from_a_truncated_checkpoint_is_one_line_and_sets_it_aside(
    interrupted: Path, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    shutil.copytree(interrupted, out)
    ckpt = out / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])  # what an in-place write left
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, "--resume"])
    one_error(code, capsys, "--resume", str(ckpt), "not a complete checkpoint", "--overwrite")
    assert not ckpt.exists()  # never loaded again
    assert len(list((out / "checkpoints").glob("last.ckpt.corrupt-*"))) == 1


@pytest.fixture
def repo_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a Path
    """A folder under the checkout while TMPDIR (and tempfile's default) points elsewhere."""
    import tempfile

    folder = REPO / ".pytest_tmp" / f"fix24-{os.getpid()}-{tmp_path.name}"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "tmpdir"
    elsewhere.mkdir()
    monkeypatch.setenv("TMPDIR", str(elsewhere))
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    # TMPDIR on another filesystem: a rename from there into the checkout fails as it would
    for name in ("rename", "replace"):
        real = getattr(os, name)

        def cross_device(src, dst, *args, _real=real, **kwargs):  # noqa: ANN001, ANN202
            if Path(src).is_relative_to(elsewhere) and not Path(dst).is_relative_to(elsewhere):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, cross_device)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    assert list(elsewhere.iterdir()) == []  # nothing was written through TMPDIR
    with __import__("contextlib").suppress(OSError):
        (REPO / ".pytest_tmp").rmdir()


def checkpoint_io(out: Path):  # noqa: ANN201 - the run's Lightning CheckpointIO
    from examples.liver_fibrosis.runner import make_trainer

    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=32, device="cpu", out=str(out)))
    return make_trainer(cfg, out, epochs=1).strategy.checkpoint_io


def test_a_checkpoint_is_replaced_never_rewritten_in_place(repo_tmp: Path) -> None:
    io = checkpoint_io(repo_tmp)
    path = repo_tmp / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    epoch_1 = path.read_bytes()
    with path.open("rb") as previous:  # the file a kill -9 during the next write must leave whole
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
        assert previous.read() == epoch_1
    assert torch.load(path, weights_only=True)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(
    repo_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = checkpoint_io(repo_tmp)
    path = repo_tmp / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(1000)}, path)
    epoch_1 = path.read_bytes()

    def disk_full(obj, target, *args, **kwargs) -> None:
        target.write(b"PK\x03\x04 partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == epoch_1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no truncated temporary file


# ------------------------------------------------------------------------------ item 3


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_diverging_run_stops_with_one_line_and_saves_no_model(
    epochs: int, manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One step at lr 1e30 leaves huge (finite) weights that predict NaN; a second step meets a
    NaN loss. Neither run may save a model."""
    out = tmp_path / "r"
    argv = ["--data", str(manifest), "--out", str(out), *TINY, "--lr", "1e30", "--epochs", str(epochs)]
    line = one_error(run(train_mod.main, argv), capsys, "non-finite")
    if epochs == 2:
        assert "non-finite loss" in line and "--lr 1e+30" in line and "no model was saved" in line
    assert not (out / "model.safetensors").exists() and not (out / "metrics.json").exists()


# ------------------------------------------------------------------------------ item 7


def test_an_empty_modality_column_is_warned_and_reported_as_not_measured(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.liver_fibrosis import evaluate

    rows = list(csv.DictReader(manifest.open()))
    us_only = tmp_path / "us_only.csv"
    with us_only.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["patient_id", "us_path", "swe_path", "stage"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"patient_id": row["patient_id"], "stage": row["stage"], "swe_path": "",
                             "us_path": str(manifest.parent / row["us_path"])})
    out = tmp_path / "r"
    assert run(train_mod.main, ["--data", str(us_only), "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning: --data")]
    assert len(warning) == 1 and "SWE" in warning[0] and "--modalities us" in warning[0], err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test_pairs_with"] == {"us": 5, "swe": 0}
    assert "SWE image" in metrics["not_measured"]["swe"]
    assert metrics["branches"]["swe"] == {"not_measured": metrics["not_measured"]["swe"]}
    assert metrics["branches"]["us"]["accuracy"] is not None
    assert not (out / "reliability" / "swe.png").exists()

    assert run(evaluate.main, ["--checkpoint", str(out), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "US + SWE:" not in err
    assert "US (SWE absent from every pair):" in err
    again = json.loads((out / "eval-test" / "metrics.json").read_text())
    assert again["n_test_pairs_with"]["swe"] == 0 and "swe" in again["not_measured"]
