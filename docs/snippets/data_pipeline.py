"""Data: a small phantom -> manifest -> patient-level split -> paired transforms -> one batch."""

import tempfile
from pathlib import Path

import torch

import mmfusion.data as md
import mmfusion.liver as liver

root = Path(tempfile.mkdtemp()) / "phantom"  # your data: a manifest CSV and images
small = liver.PhantomConfig(width=192, height=144)  # default: 800 x 600 scanner frames
csv = liver.make_phantom_dataset(root, n_patients=25, seed=0, config=small, workers=0)
# labels=: the label column and its classes (METAVIR: stages F0-F4 in a "stage" column);
# without it, a "label" column of class indices. Checks every row, lists every problem.
manifest = md.read_manifest(csv, labels=liver.METAVIR)
print(len(manifest), "pairs of", len(set(manifest.groups)), "patients")
print(manifest.label_counts())  # {"F0": ..., "F4": ...}

train, test = md.patient_split(manifest, test_size=0.2, seed=0)  # stratified by class
assert not set(train.groups) & set(test.groups)  # no patient on both sides: no leakage
# ROI crop, resize to 96 px and cache; then the paired transforms at 64 px
train_set = md.PairedImageDataset(train, md.train_transforms(64), cache=True, size=96)
test_set = md.PairedImageDataset(test, md.eval_transforms(64), cache=True, size=96)
loader = torch.utils.data.DataLoader(train_set, batch_size=4, shuffle=True)
batch = next(iter(loader))  # "us", "swe": [4, 3, 64, 64]; "label": [4]; "patient_id"
print({k: tuple(v.shape) for k, v in batch.items() if torch.is_tensor(v)})
print(len(train_set), "training pairs,", len(test_set), "test pairs")
