"""Issue 25, item 7: a second domain proves the generic core (no ``mmfusion.liver`` anywhere).

A small generated problem that is not the liver: 27 patients in three nominal classes
(``normal``, ``benign``, ``malignant``), one image modality ``"ct"`` (48 px PNG slices whose lesion
depends on the class) and one tabular modality ``"labs"`` (three numeric columns, some cells empty,
some patients without any), read from a CSV manifest with a ``label`` column. It goes through
:class:`~mmfusion.lightning.FusionDataModule` (``labels=``, ``tabular=``, a crop of its own),
:class:`~mmfusion.lightning.FusionModule` and a Lightning ``Trainer`` (two CPU epochs, a
``test_resnet`` image encoder and a ``"tabular"`` encoder from the registry), the metrics,
``save_pretrained`` / ``from_pretrained`` and ONNX export with an availability input.

The pipeline (:func:`run_pipeline`) runs once, in a fresh interpreter, so that the test can say
that ``mmfusion.liver`` was never imported (a test process may have imported it for another test);
the tests below read what it left: a JSON summary, the saved model, the ONNX file and one test
batch with the trained model's probabilities.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from mmfusion.labels import LabelSpec

SPEC = LabelSpec(("normal", "benign", "malignant"))
LABS = ("age", "crp", "marker")
TABULAR = {"labs": LABS}
PATIENTS_PER_CLASS = 9
SECOND_VISIT = ("P00", "P10", "P20")  # three patients with a second CT slice
NO_LABS = ("P03", "P04", "P13", "P23")  # patients without any lab value
SIZE = 32  # model input side (the slices are 48 px)

# The module's tests share one run of the pipeline (see the fixture ``run``).
pytestmark = pytest.mark.xdist_group("core25_second_domain")


# --- the data set --------------------------------------------------------------------------


def ct_slice(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48 x 48 "CT slice": a grey body disc on black, with a lesion that depends on the class.

    ``normal``: no lesion; ``benign``: a small bright round spot; ``malignant``: a larger dark
    spot with a ragged edge.
    """
    image = np.zeros((48, 48), np.uint8)
    cv2.circle(image, (24, 24), 20, 110, -1)
    cx, cy = (int(v) for v in rng.integers(18, 31, size=2))
    if label == 1:
        cv2.circle(image, (cx, cy), 4, 220, -1)
    elif label == 2:
        points = [(cx + int(r * math.cos(a)), cy + int(r * math.sin(a)))
                  for a, r in zip(np.linspace(0, 2 * math.pi, 9)[:-1], rng.uniform(4, 8, 8),
                                  strict=True)]
        cv2.fillPoly(image, [np.array(points, np.int32)], 30)
    noise = rng.normal(0, 6, image.shape)
    image = np.clip(image + noise * (image > 0), 0, 255).astype(np.uint8)
    return np.repeat(image[:, :, None], 3, axis=2)


def make_dataset(root: Path) -> Path:
    """Write the slices and ``manifest.csv`` (patient_id, ct_path, label, age, crp, marker)."""
    from mmfusion.data import write_manifest

    rng = np.random.default_rng(25)
    rows: list[dict[str, Any]] = []
    for label, name in enumerate(SPEC.names):
        for k in range(PATIENTS_PER_CLASS):
            patient = f"P{label}{k}"
            labs = {"age": float(rng.integers(30, 80)), "crp": round(float(rng.gamma(2, 3)), 1),
                    "marker": round(float(rng.normal(2 + 3 * label, 1)), 2)}
            if patient in NO_LABS:
                labs = dict.fromkeys(LABS)
            elif k % 3 == 1:
                labs["crp"] = None  # one empty cell
            for visit in range(2 if patient in SECOND_VISIT else 1):
                file = f"{patient}_v{visit}_ct.png"
                assert cv2.imwrite(str(root / file), ct_slice(label, rng))
                rows.append({"patient_id": patient, "ct_path": file, "label": name, **labs})
    return write_manifest(root / "manifest.csv", rows)


class WholeSlice:
    """A crop of this domain: the whole frame (a CT slice has no scan sector to look for)."""

    key = "whole_slice"
    uses_roi = False

    def __call__(self, frame: np.ndarray, row: object, modality: str, roi: object) -> np.ndarray:
        return frame


# --- the pipeline, run in a fresh interpreter -------------------------------------------------


def run_pipeline(root: Path) -> None:
    """Data -> train 2 epochs -> test -> metrics -> save / load -> ONNX, written under ``root``."""
    import lightning.pytorch as pl
    import torch

    from mmfusion.export import to_onnx
    from mmfusion.lightning import FusionDataModule, FusionModule
    from mmfusion.models import ModelConfig, TrainingConfig, create_model, from_pretrained

    torch.set_num_threads(1)  # small tensors: faster on one thread, and beside other tests
    torch.manual_seed(0)
    csv = make_dataset(root)
    config = ModelConfig(
        modalities=("ct", "labs"), fusion="late", backbone="test_resnet", image_size=SIZE,
        frozen_stages=0, hidden=(16,), head_pool="avg", embed_dim=16,
        num_classes=SPEC.num_classes,
        encoders={"labs": {"name": "tabular", "columns": list(LABS), "hidden": [16],
                           "out_features": 8}},
    )
    model = create_model(config)
    training = TrainingConfig(epochs=2, batch_size=8, lr=3e-3, augment="paper")
    data = FusionDataModule.from_model(csv, model, training=training, test_size=0.3, seed=0,
                                       labels=SPEC, tabular=TABULAR, crop={"ct": WholeSlice()})
    module = FusionModule(model, training=training, labels=SPEC, n_bootstrap=20)
    trainer = pl.Trainer(
        max_epochs=training.epochs, accelerator="cpu", devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, default_root_dir=root, deterministic=True,
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)

    model = module.model.eval()
    batch = next(iter(data.test_dataloader()))
    inputs = {m: batch[m] for m in model.modalities}
    available = batch["available"]
    model.save_pretrained(root / "saved")
    loaded = from_pretrained(root / "saved")
    with torch.no_grad():
        probs = model(inputs, available).probs
        same = torch.equal(probs, loaded(inputs, available).probs)
    to_onnx(model, root / "model.onnx", image_size=SIZE, availability_input=True,
            class_names=SPEC.names)
    np.savez(root / "batch.npz", probs=probs.numpy(), label=batch["label"].numpy(),
             patient_id=np.array(batch["patient_id"]),
             available=np.stack([available[m].numpy() for m in model.modalities], axis=1),
             **{m: inputs[m].numpy() for m in model.modalities})
    summary = {
        "metrics": module.metrics,
        "history": module.history,
        "manifest": {"n": len(data.manifest), "modalities": list(data.manifest.modalities),
                     "label_counts": data.manifest.label_counts()},
        "split": {"train": list(data.split.train_idx), "test": list(data.split.test_idx)},
        "test_patients": sorted({data.manifest[i].patient_id for i in data.split.test_idx}),
        "saved_and_loaded_equal": same,
        "loaded_config": loaded.config.to_dict(),
        "modules": sorted(m for m in sys.modules if m.startswith("mmfusion")),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict[str, Any]:
    """Run :func:`run_pipeline` in a fresh interpreter, once per test session; its summary, plus
    ``root``.

    Under pytest-xdist the tests of this module may land on several workers (``xdist_group``
    needs ``--dist loadgroup``, and pytest-xdist 3.8 ignores it under pytest 9), so the run is
    shared through the session's base folder, under a file lock: the first worker runs it, the
    others read what it wrote.
    """
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "core25_second_domain"
    with FileLock(str(root) + ".lock"):
        if not (root / "summary.json").is_file():
            root.mkdir(exist_ok=True)
            code = (
                "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "import test_core25_second_domain as t; t.run_pipeline(Path(sys.argv[2]))"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code, str(Path(__file__).parent), str(root)],
                capture_output=True, text=True, timeout=300,
            )
            assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    return {**summary, "root": root}


# --- the tests ------------------------------------------------------------------------------


def test_the_manifest_reads_named_classes_and_a_tabular_modality(tmp_path: Path) -> None:
    """Checked in this process (no training): what the data module will be given."""
    from mmfusion.data import read_manifest

    manifest = read_manifest(make_dataset(tmp_path), labels=SPEC, tabular=TABULAR)
    assert manifest.modalities == ("ct", "labs")
    assert manifest.label_spec == SPEC
    assert manifest.label_counts() == {"normal": 10, "benign": 10, "malignant": 10}  # 9 + 1 visit
    by_patient = {row.patient_id: row for row in manifest}
    assert all(math.isnan(v) for v in by_patient["P03"].tabular["labs"])
    assert not by_patient["P03"].available["labs"] and by_patient["P03"].available["ct"]
    p01 = by_patient["P01"].tabular["labs"]  # k % 3 == 1: crp left empty
    assert math.isnan(p01[1]) and not math.isnan(p01[0]) and by_patient["P01"].available["labs"]
    assert by_patient["P21"].label == 2 and manifest.labels.tolist().count(2) == 10
    # without the spec, the names are refused: the generic label column holds class indices
    with pytest.raises(ValueError, match="benign"):
        read_manifest(tmp_path / "manifest.csv", tabular=TABULAR)


def test_the_liver_is_never_imported(run: dict[str, Any]) -> None:
    modules = run["modules"]
    assert not [m for m in modules if m == "mmfusion.liver" or m.startswith("mmfusion.liver.")]
    # not vacuous: the pipeline did load the generic floors it used
    assert {"mmfusion.lightning.module", "mmfusion.lightning.datamodule", "mmfusion.labels",
            "mmfusion.nn.tabular", "mmfusion.models.pretrained", "mmfusion.export"} <= set(modules)


def test_the_data_module_reads_the_spec_and_the_tabular_columns(run: dict[str, Any]) -> None:
    manifest = run["manifest"]
    assert manifest == {"n": 30, "modalities": ["ct", "labs"],
                        "label_counts": {"normal": 10, "benign": 10, "malignant": 10}}
    train, test = set(run["split"]["train"]), set(run["split"]["test"])
    assert train.isdisjoint(test) and len(train | test) == 30
    # a batch of the held-out pairs: images [B, 3, 32, 32], lab rows [B, 3] float32, NaN = missing
    batch = np.load(run["root"] / "batch.npz")
    assert batch["ct"].shape[1:] == (3, SIZE, SIZE) and batch["labs"].shape[1:] == (len(LABS),)
    assert batch["labs"].dtype == np.float32 and len(batch["labs"]) == len(test)
    no_labs = np.isin(batch["patient_id"], NO_LABS)
    assert no_labs.any() and np.isnan(batch["labs"][no_labs]).all()
    assert batch["available"].tolist() == [[True, not gone] for gone in no_labs]
    some = ~no_labs & np.isnan(batch["labs"]).any(axis=1)  # an empty crp cell: labs still there
    assert some.any() and batch["available"][some, 1].all()


def test_two_epochs_train_and_the_report_names_the_spec_classes(run: dict[str, Any]) -> None:
    assert [h["epoch"] for h in run["history"]] == [1, 2]
    first, second = (h["loss"] for h in run["history"])
    assert math.isfinite(first) and second < first  # it learns (deterministic on the CPU)
    metrics = run["metrics"]
    n_test = len(run["split"]["test"])
    assert metrics["n_pairs"] == n_test
    assert metrics["n_patients"] == len(run["test_patients"])
    assert set(metrics["branches"]) == {"ct", "labs", "joint"}
    for report in (metrics["ensemble"], *metrics["branches"].values(), metrics["patients"]):
        assert report["class_names"] == ["normal", "benign", "malignant"]
        assert list(report["per_class"]) == ["normal", "benign", "malignant"]
        # a nominal spec: no kappa, no cut-off AUROCs (they would claim an order)
        assert "qwk" not in report and "cutoff_aucs" not in report
        assert not [k for k in report if k.startswith("auc_") and k not in
                    ("auc_macro", "auc_macro_classes")]
    ensemble = metrics["ensemble"]
    matrix = np.array(ensemble["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == n_test
    assert [ensemble["per_class"][n]["support"] for n in SPEC.names] == matrix.sum(axis=1).tolist()
    assert ensemble["accuracy"] == pytest.approx(np.trace(matrix) / n_test)
    assert ensemble["ci"]["n_bootstrap"] == 20 and ensemble["ci"]["unit"] == "patient"
    # held-out pairs without labs are reported apart, by availability pattern
    assert set(metrics["by_availability"]) == {"ct+labs", "ct"}
    assert sum(r["n_pairs"] for r in metrics["by_availability"].values()) == n_test


def test_the_trained_model_saves_and_loads(run: dict[str, Any]) -> None:
    import torch

    from mmfusion.models import from_pretrained

    assert run["saved_and_loaded_equal"]  # in the training process, bit for bit
    loaded = from_pretrained(run["root"] / "saved").eval()
    assert loaded.config.to_dict() == run["loaded_config"]
    assert loaded.config.fusion == "late" and loaded.config.encoder("labs")["columns"] == list(LABS)
    saved = np.load(run["root"] / "batch.npz")
    inputs = {m: torch.from_numpy(saved[m]) for m in ("ct", "labs")}
    available = {m: torch.from_numpy(saved["available"][:, j]) for j, m in enumerate(("ct", "labs"))}
    with torch.no_grad():
        probs = loaded(inputs, available).probs.numpy()
    np.testing.assert_allclose(probs, saved["probs"], rtol=1e-5, atol=1e-6)


def test_onnx_export_with_an_availability_input_matches(run: dict[str, Any]) -> None:
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import torch

    from mmfusion.models import from_pretrained

    session = ort.InferenceSession(str(run["root"] / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["ct", "labs", "available"]
    assert inputs["ct"][1:] == [3, SIZE, SIZE] and inputs["labs"][1:] == [len(LABS)]
    saved = np.load(run["root"] / "batch.npz")
    feeds = {"ct": saved["ct"], "labs": saved["labs"], "available": saved["available"]}
    (probs,) = session.run(None, feeds)  # the batch as served: NaN labs, some rows without
    np.testing.assert_allclose(probs, saved["probs"], rtol=1e-4, atol=1e-5)
    # other masks: the CT of sample 0 flagged absent, every lab row of sample 1 flagged absent
    mask = saved["available"].copy()
    mask[0, 0], mask[1, 1] = False, False
    (masked,) = session.run(None, {**feeds, "available": mask})
    loaded = from_pretrained(run["root"] / "saved").eval()
    with torch.no_grad():
        expected = loaded({m: torch.from_numpy(saved[m]) for m in ("ct", "labs")},
                          {m: torch.from_numpy(mask[:, j]) for j, m in enumerate(("ct", "labs"))})
    assert np.isfinite(masked).all() and not np.allclose(masked[:2], probs[:2])
    np.testing.assert_allclose(masked, expected.probs.numpy(), rtol=1e-4, atol=1e-5)
