"""Issue 24, the example's run folder: lock, overwrite, leftovers, file modes, command-line checks.

Fast: no test here trains a model (the training step is replaced where a run must get past its
start); the ones that train are in ``test_fix24_runs_train.py``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _fix24_run_helpers import TINY, tiny_phantom

from examples.liver_fibrosis import evaluate, runner
from examples.liver_fibrosis import train as train_mod
from examples.liver_fibrosis.cli import CliError, run
from examples.liver_fibrosis.options import preset_config
from mmfusion.files import atomic_save_tensors, atomic_write_text

pytestmark = pytest.mark.xdist_group("fix24_runs")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 phantom patients, one small view each."""
    return tiny_phantom(tmp_path_factory)


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


def fake_training(out_files: dict[str, bytes] | None = None, error: BaseException | None = None):
    """A stand-in for ``runner.train_one``: writes some outputs, then fails with ``error``."""

    def train_one(cfg, out: Path, fold: int = 0, model=None) -> dict:
        for name, content in (out_files or {}).items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(content)
        if error is not None:
            raise error
        return {"ensemble": {"accuracy": 0.5}}

    return train_one


def old_run(out: Path) -> dict[str, bytes]:
    """A finished run with an evaluation inside it; its files' bytes by relative path."""
    files = {"config.json": b'{"old": true}\n', "model.safetensors": b"old weights",
             "metrics.json": b'{"ensemble": {"accuracy": 0.9}}\n', "checkpoints/last.ckpt": b"old ckpt",
             "eval-test/metrics.json": b'{"evaluated": true}\n'}
    for name, content in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)
    return files


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` except the lock file: relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ------------------------------------------------------------------------------ item 15


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writers_give_files_the_umask_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "config.json", "{}\n")
        atomic_save_tensors({"w": torch.ones(2)}, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# ------------------------------------------------------------------------------ item 16, 18


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--devices", "-1"], ("--devices: expected an int >= 1, got -1",)),
        (["--devices", "0"], ("--devices: expected an int >= 1, got 0",)),
        (["--num-nodes", "0"], ("--num-nodes: expected an int >= 1, got 0",)),
        (["--eval-every", "-1"], ("--eval-every: expected an int >= 0",)),
        (["--eval-every", "2"], ("--eval-every", "--val-size")),  # no validation split to log
        (["--val-size", "0.99"], ("--val-size", "0.99", "--test-size 0.5")),
        (["--seed", "-1"], ("--seed: expected an int in [0, 2**32), got -1",)),
    ],
)
def test_bad_run_settings_are_one_line(
    argv: list[str], words: tuple[str, ...], manifest: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "r"
    line = one_error(run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, *argv]),
                     capsys, *words)
    assert "test_size" not in line
    assert not out.exists()


def test_more_devices_than_cpu_cores_is_refused(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cores = len(os.sched_getaffinity(0))
    out = tmp_path / "r"
    argv = ["--data", str(manifest), "--out", str(out), *TINY, "--devices", str(cores + 97)]
    one_error(run(train_mod.main, argv), capsys, f"--devices: this machine has {cores} CPU core(s)",
              f"got --devices {cores + 97}")
    assert not out.exists()


def test_read_only_output_folder_is_one_line_naming_out(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "readonly" / "r"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs) -> None:
        if self == out or out in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(runner, "train_one", fake_training())
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY])
    one_error(code, capsys, "--out", str(out), "Read-only file system")


# ------------------------------------------------------------------------------ item 13


def test_a_second_run_into_a_locked_folder_is_refused(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    out.mkdir()
    monkeypatch.setattr(runner, "train_one", fake_training({"model.safetensors": b"new"}))
    holder = subprocess.Popen(  # another process holding the folder's lock, as a running training does
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(out / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode())\n"
         "print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY])
        one_error(code, capsys, f"another run (pid {holder.pid}) holds {out}")
        assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY]) == 0  # free now
    assert (out / "model.safetensors").read_bytes() == b"new"


def test_evaluate_respects_the_run_folders_lock(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mmfusion.models import build_model, save_pretrained

    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=32, hidden=(16,), embed_dim=16,
                                      data=str(manifest)))
    run_dir = tmp_path / "run"
    save_pretrained(build_model(cfg.model), run_dir, extra=cfg.to_json())
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a training (here: this test) holds the run folder
        os.write(fd, b"4242")
        code = run(evaluate.main, ["--checkpoint", str(run_dir), "--device", "cpu"])
        one_error(code, capsys, "another run (pid 4242)")
    finally:
        os.close(fd)
    assert not (run_dir / "eval-test").exists()


# ------------------------------------------------------------------------------ item 11, 6


def test_a_failed_overwrite_leaves_the_previous_run_byte_identical(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    before = old_run(out)
    partial = {"logs/metrics.csv": b"epoch\n", "checkpoints/last.ckpt": b"new, partial"}
    monkeypatch.setattr(runner, "train_one", fake_training(
        partial, ValueError("--data: line 7: P007/us.png cannot be decoded")))
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, "--overwrite"])
    one_error(code, capsys, "cannot be decoded")
    assert tree(out) == before  # every old file back, byte for byte; nothing of the new run
    assert [p.name for p in out.iterdir() if p.name.startswith(".previous")] == []


def test_overwrite_replaces_evaluations_of_the_previous_run(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    old_run(out)
    monkeypatch.setattr(runner, "train_one", fake_training({"model.safetensors": b"new weights",
                                                            "metrics.json": b"{}"}))
    argv = ["--data", str(manifest), "--out", str(out), *TINY, "--image-size", "64", "--overwrite"]
    assert run(train_mod.main, argv) == 0
    assert not (out / "eval-test").exists()  # the old model's evaluation went with it
    assert (out / "model.safetensors").read_bytes() == b"new weights"
    assert json.loads((out / "config.json").read_text())["model"]["image_size"] == 64
    assert not (out / "checkpoints").exists()
    assert [p.name for p in out.iterdir() if p.name.startswith(".previous")] == []


def test_while_overwriting_the_old_run_is_kept_aside_until_the_new_one_completes(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    before = old_run(out)
    seen: dict[str, dict[str, bytes]] = {}

    def train_one(cfg, run_out: Path, fold: int = 0, model=None) -> dict:
        aside = [p for p in run_out.iterdir() if p.name.startswith(".previous-")]
        seen["aside"] = tree(aside[0]) if len(aside) == 1 else {}
        seen["config"] = {"config.json": (run_out / "config.json").read_bytes()}
        return {}

    monkeypatch.setattr(runner, "train_one", train_one)
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, "--overwrite"]) == 0
    assert seen["aside"] == before
    # the new run's settings are in config.json from its start (item 4)
    assert json.loads(seen["config"]["config.json"])["model"]["backbone"] == "test_resnet"


# ------------------------------------------------------------------------------ item 14


def test_leftovers_of_a_run_that_failed_before_its_first_epoch_do_not_block_a_rerun(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    # a real failure once the run started: a validation split too small for 5 training patients
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY, "--val-size", "0.5"])
    one_error(code, capsys, "--val-size 0.5", "5 training patients")
    assert (out / "logs").is_dir() or (out / "config.json").is_file()  # what it left
    stale = out / ".model.safetensors.a1b2c3d4.tmp"  # a kill during a save, long ago
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    monkeypatch.setattr(runner, "train_one", fake_training({"model.safetensors": b"new"}))
    assert run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "removed 1 temporary file(s)" in err and ".model.safetensors.a1b2c3d4.tmp" in err
    assert "leftovers" in err
    assert not stale.exists()


def test_a_folder_with_a_checkpoint_is_still_a_run(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"epoch 3")
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(out), *TINY])
    one_error(code, capsys, "already holds a run", "checkpoints", "--resume")
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == b"epoch 3"


# ------------------------------------------------------------------------------ item 3


def test_a_model_with_non_finite_weights_is_never_saved(tmp_path: Path) -> None:
    from examples.liver_fibrosis.runs import save_run_model
    from mmfusion.models import build_model

    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=32, hidden=(16,), embed_dim=16))
    model = build_model(cfg.model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(CliError, match=r"training diverged: 1 tensor\(s\).*lower --lr"):
        save_run_model(model, cfg, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_loss_is_one_line(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def diverged(cfg, out: Path, fold: int = 0, model=None) -> dict:
        raise FloatingPointError("non-finite loss (nan) at epoch 1, step 3")

    monkeypatch.setattr(runner, "train_one", diverged)
    code = run(train_mod.main, ["--data", str(manifest), "--out", str(tmp_path / "r"), *TINY])
    one_error(code, capsys, "non-finite loss (nan) at epoch 1, step 3", "--lr")


# ------------------------------------------------------------------------------ item 21


BLOCKED = """
import sys
sys.modules["lightning"] = None
sys.modules["lightning.pytorch"] = None
from examples.liver_fibrosis import evaluate, train
from examples.liver_fibrosis.cli import run
for main in (train.main, evaluate.main):
    try:
        main(["--help"])
    except SystemExit as exit:
        print("help exit", exit.code, flush=True)
print("train exit", run(train.main, sys.argv[1:]), flush=True)
"""


def test_help_works_without_lightning_and_a_run_names_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "r"
    proc = subprocess.run([sys.executable, "-c", BLOCKED, "--out", str(out), *TINY], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.stdout.count("help exit 0") == 2, proc.stderr[-2000:]
    assert "usage: python -m examples.liver_fibrosis.train" in proc.stdout
    assert "train exit 2" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: missing package(s) ['lightning'], needed by the example: "
                      'pip install "mmfusion[example]"'], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ------------------------------------------------------------------------------ item 19 (b)


def test_train_data_checks_image_headers_without_decoding_them(
    manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import examples.liver_fibrosis.runs as runs_mod
    import mmfusion.data.manifest as manifest_mod

    def decoded(*args, **kwargs) -> bool:
        raise AssertionError("the manifest check decoded an image (training decodes it anyway)")

    monkeypatch.setattr(manifest_mod, "_decodes", decoded, raising=False)
    reads: list[str] = []
    real = runs_mod.read_manifest

    def counting(path, *args, **kwargs):  # noqa: ANN001, ANN202
        reads.append(kwargs.get("verify", "decode"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runs_mod, "read_manifest", counting)
    monkeypatch.setattr(runs_mod, "_MANIFESTS", {}, raising=False)  # nothing read before

    def train_one(cfg, out: Path, fold: int = 0, model=None) -> dict:
        runner.make_datamodule(cfg, fold)  # the data module reads the run's manifest again
        return {}

    monkeypatch.setattr(runner, "train_one", train_one)
    argv = ["--data", str(manifest), "--out", str(tmp_path / "r"), *TINY]
    assert run(train_mod.main, argv) == 0
    assert reads == ["header"]  # read once, headers only
