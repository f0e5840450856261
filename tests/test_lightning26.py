"""Issue 26, FusionModule on Lightning's own machinery: epoch losses through ``self.log`` (the
history is Lightning's reduced epoch values), predictions through ``self.all_gather`` (padded
shares, a process without samples), and the library's metrics recomputed independently from the
gathered predictions; ``load_from_checkpoint`` rebuilds a module that evaluates alike."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pl = pytest.importorskip("lightning.pytorch", reason="needs the mmfusion[lightning] extra")

from mmfusion.lightning import FusionDataModule, FusionModule, Predictions  # noqa: E402
from mmfusion.lightning.predictions import gather_predictions  # noqa: E402
from mmfusion.liver import METAVIR  # noqa: E402
from mmfusion.models import create_model, get_preset  # noqa: E402

pytestmark = pytest.mark.xdist_group("lightning")


class StepLosses(pl.Callback):
    """Every training step's total loss and batch size, as the step returned them."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float, int]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self.steps.append((trainer.current_epoch, float(outputs["loss"]), len(batch["label"])))


def make_trainer(root: Path, epochs: int, *callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=str(root),
                      use_distributed_sampler=False, num_sanity_val_steps=0,
                      callbacks=list(callbacks))


@pytest.fixture(scope="module")
def fitted(tiny_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs of a tiny model, then the test split; the checkpoint saved after the test."""
    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", backbone="test_resnet", image_size=64,
                         hidden=(16,), embed_dim=16)
    training = get_preset("liver_fibrosis_quick").training.replace(batch_size=3, epochs=2)
    module = FusionModule(model, training=training, n_bootstrap=10, labels=METAVIR, seed=5)
    dm = FusionDataModule(tiny_manifest, ("us", "swe"), 64, 3, test_size=0.5, labels=METAVIR,
                          seed=5)
    root = tmp_path_factory.mktemp("fit26")
    steps = StepLosses()
    t = make_trainer(root, 2, steps)
    t.fit(module, datamodule=dm)
    t.test(module, datamodule=dm, verbose=False)
    path = root / "final.ckpt"
    t.save_checkpoint(path)
    return {"module": module, "dm": dm, "steps": steps.steps, "ckpt": path, "root": root}


def test_history_holds_lightnings_epoch_means_of_the_steps(fitted: dict[str, Any]) -> None:
    module, steps = fitted["module"], fitted["steps"]
    assert [e["epoch"] for e in module.history] == [1, 2]
    for epoch, entry in enumerate(module.history):
        mine = [(loss, n) for e, loss, n in steps if e == epoch]
        pairs = sum(n for _, n in mine)
        mean = sum(loss * n for loss, n in mine) / pairs  # weighted by batch size, in float64
        assert entry["pairs"] == pairs > 0
        assert entry["loss"] == pytest.approx(mean, rel=1e-6)
        components = {k for k in entry if k.startswith("ce_")} | {"consistency"}
        assert components <= set(entry) and all(np.isfinite(entry[k]) for k in components)
        assert entry["pairs_per_s"] == pytest.approx(pairs / entry["seconds"])
    assert module.history[0]["lr"] == pytest.approx(1e-3)
    assert module.history[1]["lr"] < module.history[0]["lr"]  # cosine, read at epoch start


def _ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width bins over (0, 1], written out independently."""
    conf, pred = probs.max(1), probs.argmax(1)
    bins = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        rows = bins == b
        if rows.any():
            total += rows.sum() / len(conf) * abs((pred[rows] == labels[rows]).mean() - conf[rows].mean())
    return float(total)


def test_metrics_are_those_of_the_gathered_predictions(fitted: dict[str, Any]) -> None:
    module, dm = fitted["module"], fitted["dm"]
    preds, metrics = module.predictions, module.metrics
    assert preds is not None and metrics is not None
    test_idx = sorted(dm.split.test_idx)
    assert preds.indices.tolist() == list(range(len(test_idx)))  # each test sample once, in order
    assert metrics["n_pairs"] == len(preds) == len(test_idx)
    assert all(p.dtype == np.float64 for p in preds.probs.values())
    ens = preds.probs["ensemble"]
    assert metrics["ensemble"]["accuracy"] == pytest.approx((ens.argmax(1) == preds.labels).mean(), abs=1e-12)
    for branch, p in preds.probs.items():
        if branch != "ensemble":
            assert metrics["branches"][branch]["accuracy"] == pytest.approx(
                (p.argmax(1) == preds.labels).mean(), abs=1e-12)
        assert metrics["calibration"][branch]["ece"] == pytest.approx(_ece(p, preds.labels), abs=1e-9)
    ids = sorted(set(preds.groups.tolist()))
    mean = np.stack([ens[preds.groups == g].mean(0) for g in ids])
    truth = np.array([preds.labels[preds.groups == g][0] for g in ids])
    assert metrics["n_patients"] == len(ids)
    assert metrics["patients"]["accuracy"] == pytest.approx((mean.argmax(1) == truth).mean(), abs=1e-12)


def test_load_from_checkpoint_evaluates_like_the_trained_module(fitted: dict[str, Any]) -> None:
    module = fitted["module"]
    restored = FusionModule.load_from_checkpoint(fitted["ckpt"])
    assert restored.history == module.history
    assert restored.labels == module.labels and restored.seed == 5 and restored.n_bootstrap == 10
    for (k, a), b in zip(module.model.state_dict().items(), restored.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    make_trainer(fitted["root"], 1).test(restored, datamodule=fitted["dm"], verbose=False)
    assert restored.metrics is not None and module.metrics is not None
    assert restored.metrics["ensemble"]["accuracy"] == module.metrics["ensemble"]["accuracy"]
    for branch, p in module.predictions.probs.items():
        np.testing.assert_array_equal(restored.predictions.probs[branch], p)


def _local(rows: list[int], k: int = 3) -> dict[str, Any]:
    """Outputs of samples ``rows`` (probabilities a function of the index, so any process agrees)."""
    idx = torch.as_tensor(rows, dtype=torch.long)
    probs = torch.softmax(torch.sin(idx[:, None] * 0.7 + torch.arange(k)[None]).float(), 1)
    return {"probs": {"ensemble": probs, "us": probs.flip(1)}, "labels": idx % k, "indices": idx,
            "available": {"us": torch.ones(len(rows), dtype=torch.uint8),
                          "swe": (idx % 2).to(torch.uint8)}}


def _single(module_world: int = 1) -> Any:
    return SimpleNamespace(trainer=SimpleNamespace(world_size=module_world), device=torch.device("cpu"),
                           all_gather=lambda data: data)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=12, unique=True))
def test_one_process_gather_is_the_outputs_sorted_in_float64(rows: list[int]) -> None:
    local = _local(rows)
    groups = [f"P{i // 2}" for i in rows]
    got = gather_predictions(_single(), local, groups)
    assert got is not None
    order = np.argsort(rows)
    assert got.indices.tolist() == sorted(rows) and got.groups.tolist() == [groups[i] for i in order]
    for branch, p in local["probs"].items():  # float32 -> float64 exactly, nothing recomputed
        np.testing.assert_array_equal(got.probs[branch], p.numpy().astype(np.float64)[order])
    np.testing.assert_array_equal(got.available["swe"], (np.asarray(rows) % 2 == 1)[order])
    assert got.available["swe"].dtype == bool
    assert gather_predictions(_single(), None, []) is None


WORKER = textwrap.dedent('''
    import sys, numpy as np, torch, torch.distributed as dist
    from types import SimpleNamespace
    from lightning.fabric.utilities.distributed import _all_gather_ddp_if_available
    from lightning_utilities.core.apply_func import apply_to_collection
    sys.path.insert(0, sys.argv[2])
    from test_lightning26 import _local
    from mmfusion.lightning.predictions import gather_predictions

    def main(rank, store):
        dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=2)
        module = SimpleNamespace(trainer=SimpleNamespace(world_size=2), device=torch.device("cpu"),
                                 all_gather=lambda d: apply_to_collection(d, torch.Tensor, _all_gather_ddp_if_available))
        for shares in ([[0, 2, 4], [1, 3]], [[], [1, 0, 2]], [[5], [5, 4]]):  # uneven; empty; a repeat
            mine = shares[rank]
            got = gather_predictions(module, _local(mine) if mine else None, [f"P{i}" for i in mine])
            want = sorted(set(shares[0] + shares[1]))
            assert got.indices.tolist() == want, (rank, got.indices)
            assert got.groups.tolist() == [f"P{i}" for i in want]
            np.testing.assert_array_equal(got.probs["us"], _local(want)["probs"]["us"].numpy().astype(np.float64))
            np.testing.assert_array_equal(got.available["swe"], np.asarray(want) % 2 == 1)
        assert gather_predictions(module, None, []) is None
        bad = _local([rank])
        if rank == 1:
            bad["probs"]["us"][0, 0] = float("nan")
        try:
            gather_predictions(module, bad, [f"P{rank}"])
        except ValueError as error:  # on both processes, not only the one with the NaN
            assert "non-finite" in str(error)
        else:
            raise AssertionError(f"rank {rank}: no error")
        dist.destroy_process_group()

    if __name__ == "__main__":
        torch.multiprocessing.spawn(main, args=(sys.argv[1],), nprocs=2)
        print("ok")
''')


def test_two_processes_gather_uneven_and_empty_shares(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
    assert isinstance(Predictions, type)
