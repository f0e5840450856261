"""A new domain: 3 nominal classes, CT slices + lab values, a crop and a preset."""

import tempfile
from pathlib import Path

import cv2
import lightning.pytorch as pl
import numpy as np

from mmfusion.data import write_manifest
from mmfusion.labels import LabelSpec
from mmfusion.lightning import FusionDataModule, FusionModule
from mmfusion.models import (
    ModelConfig,
    Preset,
    TrainingConfig,
    create_model,
    get_preset,
    register_model,
)

# 1. The labels: class names in index order, the manifest column, no order (nominal).
LESION = LabelSpec(("normal", "benign", "malignant"), column="label", aliases={"b": 1})
LABS = {"labs": ("age", "crp", "marker")}  # a tabular modality: three numeric columns


# 2. A crop: the part of a frame the model sees; it may read the row's own columns.
def parse_box(text: str) -> tuple[int, int, int, int]:
    """A "lesion_box" cell, "x y w h" in pixels (read_manifest(columns=) calls it)."""
    x, y, w, h = (int(v) for v in text.split())
    return x, y, w, h


class LesionBox:
    """The row's lesion box plus a margin; the whole frame where the cell is empty."""

    uses_roi = False  # no scan sector to look for

    def __init__(self, margin: int = 4) -> None:
        self.margin = margin
        self.key = f"lesion_box(margin={margin})"  # names every parameter

    def __call__(self, frame, row, modality, roi):
        box = row.values.get("lesion_box")
        if box is None:
            return frame
        x, y, w, h = box
        m = self.margin
        return frame[max(0, y - m): y + h + m, max(0, x - m): x + w + m]


# 3. A preset: a named architecture + training recipe (a domain registers it on import).
register_model("ct_lesion_tiny", Preset(
    ModelConfig(modalities=("ct", "labs"), fusion="attention", backbone="test_resnet",
                image_size=32, frozen_stages=0, hidden=(16,), head_pool="avg",
                embed_dim=16, num_classes=LESION.num_classes,
                fusion_kwargs={"reduced_channels": [8, 4]},
                encoders={"labs": {"name": "tabular", "columns": list(LABS["labs"]),
                                   "hidden": [16], "out_features": 8}}),
    TrainingConfig(epochs=1, batch_size=8, lr=3e-3, augment="paper"),
    "CT lesion + labs, 3 classes: a CPU-sized example",
))

# 4. Data: a CSV manifest with a label column, a <modality>_path column, lab columns.
root, rng, rows = Path(tempfile.mkdtemp()), np.random.default_rng(0), []
for p in range(18):
    label = p % 3
    image = np.zeros((64, 64, 3), np.uint8)
    cv2.circle(image, (32, 32), 28, (110, 110, 110), -1)
    x, y = (int(v) for v in rng.integers(16, 40, size=2))
    cv2.circle(image, (x + 4, y + 4), 2 + 2 * label, (60 + 80 * label,) * 3, -1)
    cv2.imwrite(str(root / f"p{p}.png"), image)
    labs = {"age": rng.integers(30, 80), "crp": rng.gamma(2, 3),
            "marker": 2 + 3 * label}
    if p % 5 == 0:
        labs = {}  # no lab values for this patient: "labs" is absent
    rows.append({"patient_id": f"P{p}", "ct_path": f"p{p}.png",
                 "label": LESION.names[label],
                 "lesion_box": f"{x} {y} 8 8" if p % 4 else "", **labs})
csv = write_manifest(root / "manifest.csv", rows)  # missing values: empty cells

# 5. Train and test with Lightning; the report speaks the spec's names.
preset = get_preset("ct_lesion_tiny")
model = create_model("ct_lesion_tiny")
training = preset.training
data = FusionDataModule.from_model(
    csv, model, training=training, test_size=0.34, labels=LESION, tabular=LABS,
    columns={"lesion_box": parse_box}, crop={"ct": LesionBox(margin=4)})
module = FusionModule(model, training=training, labels=LESION, n_bootstrap=0)
trainer = pl.Trainer(max_epochs=training.epochs, accelerator="cpu", logger=False,
                     default_root_dir=root, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     use_distributed_sampler=False)  # the data module shards itself
trainer.fit(module, datamodule=data)
trainer.test(module, datamodule=data, verbose=False)
report = module.metrics["ensemble"]
print(report["class_names"], "qwk" in report, sorted(module.metrics["branches"]))
