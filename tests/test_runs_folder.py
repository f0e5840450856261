"""mmfusion.runs: a run folder's lock, cleanup and overwrite that keeps the old run until the new one completes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mmfusion import files
from mmfusion.runs import PREVIOUS, RunFolder, RunFolderError, remove_outputs, trained_outputs

OUTPUTS = ("config.txt", "model.bin", "metrics.json", "logs", "fold-*")
EVIDENCE = ("model.bin", "metrics.json", "checkpoints/*.ckpt")


def folder_of(path: Path, **kwargs) -> RunFolder:
    said: list[str] = []
    run = RunFolder(path, OUTPUTS, EVIDENCE, parts=("fold-*",), settings={"config.txt": "new"},
                    say=said.append, **kwargs)
    run.said = said  # type: ignore[attr-defined]
    return run


def test_trained_outputs_reads_evidence_parts_and_a_run_moved_aside(tmp_path: Path) -> None:
    assert trained_outputs(tmp_path / "missing", EVIDENCE) == []
    (tmp_path / "logs").mkdir()
    (tmp_path / "fold-0").mkdir()
    assert trained_outputs(tmp_path, EVIDENCE, ("fold-*",)) == []  # leftovers only
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_text("x")
    (tmp_path / "fold-0" / "model.bin").write_text("x")
    (tmp_path / f"{PREVIOUS}12").mkdir()
    assert trained_outputs(tmp_path, EVIDENCE, ("fold-*",)) == [f"{PREVIOUS}12", "checkpoints", "fold-0"]
    remove_outputs(tmp_path, ["checkpoints", "fold-0", "absent"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{PREVIOUS}12", "logs"]


def test_a_trained_run_is_refused_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_text("old")
    with pytest.raises(RunFolderError, match="already holds a run"), folder_of(tmp_path):
        pass
    assert (tmp_path / "model.bin").read_text() == "old" and not (tmp_path / "config.txt").exists()


def test_leftovers_and_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    stale = tmp_path / ".model.bin.a1b2c3d4.tmp"
    stale.write_text("half")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    with folder_of(tmp_path) as run:
        assert not stale.exists() and not (tmp_path / "logs").exists()
        assert (tmp_path / "config.txt").read_text() == "new"
    assert any("removed 1 temporary file(s)" in s for s in run.said)
    assert any("leftovers" in s for s in run.said)


def test_overwrite_keeps_the_old_run_until_the_new_one_completes(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_text("old")
    with folder_of(tmp_path, overwrite=True) as run:
        assert not (tmp_path / "model.bin").exists()
        assert (run.aside / "model.bin").read_text() == "old"
        (tmp_path / "model.bin").write_text("new")
    assert (tmp_path / "model.bin").read_text() == "new" and not list(tmp_path.glob(f"{PREVIOUS}*"))


def test_a_failed_overwrite_puts_the_old_run_back(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_text("old")
    with pytest.raises(RuntimeError), folder_of(tmp_path, overwrite=True):
        (tmp_path / "metrics.json").write_text("half")
        raise RuntimeError("training failed")
    assert (tmp_path / "model.bin").read_text() == "old"
    assert not (tmp_path / "metrics.json").exists() and not list(tmp_path.glob(f"{PREVIOUS}*"))


def test_an_interrupted_overwrite_keeps_both_runs(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_text("old")
    with pytest.raises(KeyboardInterrupt), folder_of(tmp_path, overwrite=True) as run:
        (tmp_path / "metrics.json").write_text("epoch 1")
        raise KeyboardInterrupt
    assert (run.aside / "model.bin").read_text() == "old" and (tmp_path / "metrics.json").exists()
    with folder_of(tmp_path, resume=True) as again:  # the resumed run completes: the old one goes
        pass
    assert any("interrupted overwrite" in s for s in again.said) and not run.aside.exists()


def test_a_locked_folder_is_refused_and_other_ranks_do_nothing(tmp_path: Path) -> None:
    with files.lock_folder(tmp_path):
        pass
    with folder_of(tmp_path / "r", main=False):
        assert not (tmp_path / "r").exists()
    calls: list[Path] = []

    def lock(path: Path):  # noqa: ANN202 - a context manager
        calls.append(path)
        raise files.FolderLocked(path, 42)

    with pytest.raises(files.FolderLocked), folder_of(tmp_path, lock=lock):
        pass
    assert calls == [tmp_path] and not (tmp_path / "config.txt").exists()


def test_devices_and_launches_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from mmfusion.runs import global_rank, launch_world, resolve_device

    for name in ("LOCAL_WORLD_SIZE", "WORLD_SIZE", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES", "RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert launch_world() == (1, 1) and global_rank() == 0
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert launch_world() == (4, 2) and global_rank() == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "6")
    monkeypatch.setenv("RANK", "3")
    assert launch_world() == (2, 3) and global_rank() == 3
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="^device: unknown device 'tpu:x'"):
        resolve_device("tpu:x")
    with pytest.raises(ValueError, match="^device: unsupported device type 'meta'"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="^device cuda:1: CUDA is not available"):
            resolve_device("cuda:1")


def test_summarise_runs_and_the_cheap_cuda_count() -> None:
    from mmfusion.runs import cuda_device_count, summarise_runs

    folds = [{"ensemble": {"accuracy": 0.5, "qwk": None}}, {"ensemble": {"accuracy": 0.7}}]
    summary = summarise_runs(folds, ("accuracy", "qwk", "auc_f4"))
    assert list(summary) == ["accuracy"]
    assert summary["accuracy"]["mean"] == pytest.approx(0.6) and summary["accuracy"]["n"] == 2
    assert summary["accuracy"]["sd"] == pytest.approx(0.1414213562)
    assert summarise_runs(folds[:1], ["accuracy"])["accuracy"]["sd"] == 0.0
    assert cuda_device_count(use_torch=False) >= 0 and cuda_device_count() >= 0
