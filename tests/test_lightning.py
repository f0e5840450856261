"""mmfusion.lightning: FusionModule and FusionDataModule in a plain Lightning Trainer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="needs the mmfusion[lightning] extra")

from mmfusion import ClassifierHead, EnsembleHead, ModalityEncoder, MultiModalClassifier  # noqa: E402
from mmfusion.lightning import FusionDataModule, FusionModule, Predictions  # noqa: E402
from mmfusion.liver import METAVIR  # noqa: E402
from mmfusion.models import create_model, get_preset  # noqa: E402

pytestmark = pytest.mark.xdist_group("lightning")


@pytest.fixture(scope="module")
def manifest(tiny_manifest: Path) -> Path:
    return tiny_manifest


@pytest.fixture(scope="module")
def swe_missing(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pairs with the SWE path of every fifth pair left empty (20 %)."""
    rows = list(csv.DictReader(manifest.open()))
    for i, row in enumerate(rows):
        row["us_path"] = str(manifest.parent / row["us_path"])
        row["swe_path"] = "" if i % 5 == 0 else str(manifest.parent / row["swe_path"])
    out = tmp_path_factory.mktemp("missing") / "manifest.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient_id", "us_path", "swe_path", "stage"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return out


def trainer(root: Path, epochs: int = 1) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
                      use_distributed_sampler=False, limit_val_batches=0)


def tiny(**overrides: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("liver_fibrosis_quick", backbone="test_resnet", image_size=64, hidden=(16,),
                        embed_dim=16, **overrides)


def test_missing_swe_trains_evaluates_and_reports_per_availability(swe_missing: Path, tmp_path: Path) -> None:
    training = get_preset("liver_fibrosis_quick").training.replace(batch_size=4, epochs=1)
    module = FusionModule(tiny(), training=training, n_bootstrap=10)
    dm = FusionDataModule(swe_missing, ("us", "swe"), 64, 4, test_size=0.5, labels=METAVIR)
    t = trainer(tmp_path)
    t.fit(module, datamodule=dm)
    assert np.isfinite(module.history[0]["loss"])
    t.test(module, datamodule=dm, verbose=False)
    metrics, preds = module.metrics, module.predictions
    assert metrics is not None and preds is not None
    assert metrics["n_pairs"] == len(dm.split.test_idx) == 10  # nothing silently dropped
    missing = (np.asarray(dm.split.test_idx) % 5 == 0)
    np.testing.assert_array_equal(preds.available["swe"], ~missing)
    by = metrics["by_availability"]
    assert set(by) == {"us+swe", "us"}
    assert by["us"]["n_pairs"] == int(missing.sum()) and by["us+swe"]["n_pairs"] == int((~missing).sum())
    assert metrics["patients"]["level"] == "patient" and metrics["patients"]["n"] == metrics["n_patients"]
    assert 0.0 <= metrics["calibration"]["ensemble"]["ece"] <= 1.0


def test_a_hand_assembled_model_trains_with_the_default_loss(manifest: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = MultiModalClassifier({"us": ModalityEncoder("test_resnet", frozen_stages=0)}, None,
                                 EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}))
    module = FusionModule(model, n_bootstrap=0, class_names=["a", "b", "c", "d", "e"])
    dm = FusionDataModule(manifest, ("us",), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    t = trainer(tmp_path)
    t.fit(module, datamodule=dm)
    t.test(module, datamodule=dm, verbose=False)
    assert set(module.metrics["branches"]) == {"us"}
    assert list(module.metrics["ensemble"]["per_class"]) == ["a", "b", "c", "d", "e"]


def test_checkpoint_loads_without_unpickling_and_keeps_the_history(manifest: Path, tmp_path: Path) -> None:
    module = FusionModule(tiny(), training=get_preset("liver_fibrosis_quick").training.replace(epochs=2))
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, labels=METAVIR)
    t = trainer(tmp_path, epochs=2)
    t.fit(module, datamodule=dm)
    path = tmp_path / "final.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # no arbitrary unpickling needed
    assert [e["epoch"] for e in checkpoint["mmfusion_history"]] == [1, 2]
    restored = FusionModule(tiny())
    restored.on_load_checkpoint(checkpoint)
    assert restored.history == module.history
    lrs = [e["lr"] for e in module.history]
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] < lrs[0]  # cosine, recorded at epoch start


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model: expected a MultiModalClassifier, got Linear"):
        FusionModule(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="augment: expected one of"):
        FusionDataModule("m.csv", ("us",), 64, 4, augment="mixup", labels=METAVIR)
    with pytest.raises(ValueError, match="fold: expected 0 <= fold < 3, got 3"):
        FusionDataModule("m.csv", ("us",), 64, 4, folds=3, fold=3, labels=METAVIR)


def test_predictions_merge_keeps_each_index_once() -> None:
    def part(indices: list[int]) -> Predictions:
        idx = np.asarray(indices)
        return Predictions({"ensemble": np.eye(5)[idx % 5]}, idx % 5, np.array([f"P{i}" for i in idx], object),
                           idx, {"us": np.ones(len(idx), bool)})

    merged = Predictions.merge([part([0, 2, 4]), part([1, 3, 0])])  # rank 1 padded with index 0
    assert merged.indices.tolist() == [0, 1, 2, 3, 4]
    assert merged.groups.tolist() == ["P0", "P1", "P2", "P3", "P4"]
    with pytest.raises(ValueError, match="no predictions"):
        Predictions.merge([])
