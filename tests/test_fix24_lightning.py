"""Issue 24, the Lightning integration: no test set under the validation name (item 2), a diverged
model stops training and cannot be evaluated (item 3), checkpoints load by themselves, the cosine
schedule follows the Trainer, a data module built from its model, the manifest checked up front
(item 22), and a modality absent from every pair is warned about (item 7)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="needs the mmfusion[lightning] extra")

from mmfusion import ClassifierHead, EnsembleHead, ModalityEncoder, MultiModalClassifier  # noqa: E402
from mmfusion.lightning import FusionDataModule, FusionModule, Predictions  # noqa: E402
from mmfusion.liver import METAVIR  # noqa: E402
from mmfusion.models import TrainingConfig, create_model, get_preset  # noqa: E402

pytestmark = pytest.mark.xdist_group("lightning")

QUICK = get_preset("liver_fibrosis_quick").training  # Adam 1e-3, cosine


@pytest.fixture(scope="module")
def manifest(tiny_manifest: Path) -> Path:
    return tiny_manifest


@pytest.fixture(scope="module")
def twenty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 patients (4 per stage, 1 view each): room for a test and a validation split."""
    from mmfusion.liver import PhantomConfig, make_phantom_dataset

    config = PhantomConfig(width=128, height=96, stage_prevalence=(1, 1, 1, 1, 1),
                           views_range=(1, 1), pairs_per_patient=1.0)
    return make_phantom_dataset(tmp_path_factory.mktemp("twenty"), n_patients=20, seed=0,
                                config=config, workers=1)


def tiny(**overrides: object) -> MultiModalClassifier:
    torch.manual_seed(0)
    return create_model("liver_fibrosis_quick", backbone="test_resnet", image_size=64, hidden=(16,),
                        embed_dim=16, **overrides)


def trainer(root: Path, epochs: int = 1, batches: int | float = 1, **kwargs: object) -> pl.Trainer:
    """A CPU trainer that validates whenever there is a validation loader (Lightning's default)."""
    return pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=str(root),
                      use_distributed_sampler=False, limit_train_batches=batches,
                      num_sanity_val_steps=0, **kwargs)


def patients(dm: FusionDataModule, idx: tuple[int, ...]) -> set[str]:
    assert dm.manifest is not None
    return {dm.manifest[i].patient_id for i in idx}


def loader_patients(loader: torch.utils.data.DataLoader) -> set[str]:
    return {str(p) for batch in loader for p in batch["patient_id"]}


# ---------------------------------------------------------------------------------- item 2


def test_without_a_validation_split_fit_validates_nothing(manifest: Path, tmp_path: Path) -> None:
    module = FusionModule(tiny(), training=QUICK.replace(batch_size=4), n_bootstrap=0)
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, labels=METAVIR)  # val_size=0 (default)
    t = trainer(tmp_path)
    t.fit(module, datamodule=dm)
    assert module.history and not [k for k in t.logged_metrics if k.startswith("val_")]
    assert module.predictions is None  # no evaluation ran: the test patients stayed unseen
    with pytest.raises(ValueError, match="val_size: no validation split"):
        t.validate(module, datamodule=dm, verbose=False)
    with pytest.raises(ValueError, match="val_size"):
        dm.val_dataloader()


def test_a_validation_split_is_disjoint_from_train_and_test(twenty: Path, tmp_path: Path) -> None:
    module = FusionModule(tiny(), training=QUICK.replace(batch_size=4), n_bootstrap=0)
    dm = FusionDataModule(twenty, ("us", "swe"), 64, 4, test_size=0.25, val_size=0.34,
                          augment="none", labels=METAVIR)
    t = trainer(tmp_path)
    t.fit(module, datamodule=dm)
    assert dm.split is not None
    val, test = patients(dm, dm.val_idx), patients(dm, dm.split.test_idx)
    train = patients(dm, tuple(sorted(set(dm.split.train_idx) - set(dm.val_idx))))
    assert val and test and train
    assert not val & test and not val & train and not train & test
    assert loader_patients(dm.val_dataloader()) == val
    assert "val_accuracy" in t.logged_metrics  # the validation patients, under their own name
    assert module.predictions is not None and set(module.predictions.groups.tolist()) == val


# ---------------------------------------------------------------------------------- item 3


def test_training_stops_at_the_first_non_finite_loss(manifest: Path, tmp_path: Path) -> None:
    module = FusionModule(tiny(), training=QUICK.replace(batch_size=4, lr=1e30), n_bootstrap=0)
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \((nan|inf)\) at epoch \d+, "
                                                 r"step [1-9]\d*.*lower the learning rate"):
        trainer(tmp_path, epochs=5, batches=1.0).fit(module, datamodule=dm)
    assert not module.history or all(math.isfinite(e["loss"]) for e in module.history)


def test_a_nan_parameter_stops_training_before_any_update(manifest: Path, tmp_path: Path) -> None:
    model = tiny()
    with torch.no_grad():
        model.head.joint_head.mlp[-1].bias[0] = float("nan")
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    module = FusionModule(model, training=QUICK.replace(batch_size=4), n_bootstrap=0)
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at epoch 1, step 0"):
        trainer(tmp_path).fit(module, datamodule=dm)
    after = dict(model.named_parameters())
    for key, value in before.items():  # the step was refused: no weight changed
        torch.testing.assert_close(after[key], value, equal_nan=True, rtol=0, atol=0)


def test_predictions_refuse_non_finite_probabilities() -> None:
    probs = np.full((3, 5), 0.2)
    probs[1] = np.nan
    args = (np.array([0, 1, 2]), np.array(["a", "b", "c"], object), np.arange(3),
            {"us": np.ones(3, bool)})
    with pytest.raises(ValueError, match=r"probs\['us'\]: 1 of 3 samples have non-finite"):
        Predictions({"ensemble": np.full((3, 5), 0.2), "us": probs}, *args)
    Predictions({"ensemble": np.full((3, 5), 0.2)}, *args)  # finite: accepted


def test_a_nan_model_cannot_be_evaluated(manifest: Path, tmp_path: Path) -> None:
    model = tiny()
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    module = FusionModule(model, training=QUICK, n_bootstrap=0)
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    with pytest.raises(ValueError, match=r"probs\['ensemble'\]: 10 of 10 samples have non-finite"):
        trainer(tmp_path).test(module, datamodule=dm, verbose=False)


# ---------------------------------------------------------------------------------- item 22


def test_load_from_checkpoint_needs_no_arguments(manifest: Path, tmp_path: Path) -> None:
    training = QUICK.replace(batch_size=4, epochs=3)
    module = FusionModule(tiny(modalities=("us",)), training=training, seed=7, n_bootstrap=5,
                          class_names=["F0", "F1", "F2", "F3", "F4"])
    dm = FusionDataModule(manifest, ("us",), 64, 4, test_size=0.5, labels=METAVIR)
    t = trainer(tmp_path)
    t.fit(module, datamodule=dm)
    path = tmp_path / "one-step.ckpt"
    t.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)  # plain JSON types: no unpickling of objects
    assert saved["hyper_parameters"]["model_config"]["modalities"] == ["us"]
    restored = FusionModule.load_from_checkpoint(path)
    assert restored.model.config == module.model.config
    assert restored.training_config == training and restored.seed == 7
    assert restored.class_names == ["F0", "F1", "F2", "F3", "F4"] and restored.n_bootstrap == 5
    x = {"us": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        expected, got = module.eval()(x).probs, restored.eval()(x).probs
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_module_needs_a_model_or_its_config() -> None:
    with pytest.raises(ValueError, match="model: expected a MultiModalClassifier or model_config"):
        FusionModule()
    with pytest.raises(ValueError, match="model_config: .* differs from the model's"):
        FusionModule(tiny(), model_config=tiny(modalities=("us",)).config.to_dict())
    rebuilt = FusionModule(model_config=tiny().config.to_dict(), training=QUICK.to_dict())
    assert rebuilt.model.config == tiny().config and rebuilt.training_config == QUICK


def test_the_cosine_schedule_ends_at_the_trainers_last_epoch(manifest: Path, tmp_path: Path) -> None:
    training = QUICK.replace(batch_size=4, epochs=40)  # the preset's length; the Trainer stops at 2
    assert training.schedule == "cosine" and training.lr == pytest.approx(1e-3)
    module = FusionModule(tiny(), training=training, n_bootstrap=0)
    dm = FusionDataModule(manifest, ("us", "swe"), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    t = trainer(tmp_path, epochs=2)
    t.fit(module, datamodule=dm)
    # lr_e = eta + (lr - eta) (1 + cos(pi e / 2)) / 2, eta = lr / 100: 1e-3, 5.05e-4, then 1e-5
    assert [e["lr"] for e in module.history] == pytest.approx([1e-3, 5.05e-4])
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-5)


def test_a_data_module_from_its_model(manifest: Path) -> None:
    model = tiny(modalities=("us",))
    dm = FusionDataModule.from_model(manifest, model, training=TrainingConfig(batch_size=3,
                                                                              augment="none"), labels=METAVIR)
    assert (dm.modalities, dm.image_size, dm.batch_size, dm.augment) == (("us",), 64, 3, "none")
    dm = FusionDataModule.from_model(manifest, model, batch_size=5, augment="online", labels=METAVIR)
    assert (dm.batch_size, dm.augment) == (5, "online")
    with pytest.raises(ValueError, match="image_size: the model was built for 64 px, got 96"):
        FusionDataModule.from_model(manifest, model, batch_size=4, image_size=96, labels=METAVIR)
    with pytest.raises(ValueError, match="batch_size: expected batch_size= or training="):
        FusionDataModule.from_model(manifest, model, labels=METAVIR)
    bare = MultiModalClassifier({"us": ModalityEncoder("test_resnet")}, None,
                                EnsembleHead({"us": ClassifierHead(96, 5, pool="avg")}))
    with pytest.raises(ValueError, match="image_size: the model has no config"):
        FusionDataModule.from_model(manifest, bare, batch_size=4, labels=METAVIR)
    assert FusionDataModule.from_model(manifest, bare, batch_size=4, image_size=48, labels=METAVIR).image_size == 48


def test_a_missing_manifest_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"manifest: no such file: .*my_pairs\.csv"):
        FusionDataModule(tmp_path / "my_pairs.csv", ("us",), 64, 4, labels=METAVIR)
    with pytest.raises(FileNotFoundError, match=r"manifest: expected a CSV file, got a folder"):
        FusionDataModule(tmp_path, ("us",), 64, 4, labels=METAVIR)
    # a manifest that prepare_data will write is looked for only then
    FusionDataModule(tmp_path / "later.csv", ("us",), 64, 4, prepare=lambda: None, labels=METAVIR)


# ---------------------------------------------------------------------------------- item 7


def test_a_modality_missing_from_every_pair_is_warned(manifest: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(manifest.open()))
    out = tmp_path / "no_swe.csv"
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["patient_id", "us_path", "swe_path", "stage"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "us_path": str(manifest.parent / r["us_path"]), "swe_path": ""}
                         for r in rows)
    dm = FusionDataModule(out, ("us", "swe"), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    with pytest.warns(UserWarning, match=r"modality 'swe': no pair of the manifest has an image.*"
                                         r"modalities=\('us',\)"):
        dm.setup("fit")
    quiet = FusionDataModule(out, ("us",), 64, 4, test_size=0.5, augment="none", labels=METAVIR)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.setup("fit")
