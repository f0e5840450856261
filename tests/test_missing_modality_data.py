"""Missing modalities from the manifest to a batch: flags, zero placeholders, never read from disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    EnsembleHead,
    ModalityEncoder,
    MultiModalClassifier,
)
from mmfusion.data import (
    Manifest,
    PairedImageDataset,
    PlannedAugmentationDataset,
    SectorCrop,
    SeededDataset,
    SeededSampler,
    eval_transforms,
    read_manifest,
    train_transforms,
    zero_unavailable,
)
from mmfusion.liver import METAVIR, PhantomConfig, make_phantom_dataset

CONFIG = PhantomConfig(width=200, height=150)
SIZE = 32


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("phantom")
    return read_manifest(make_phantom_dataset(root, n_patients=4, seed=1, config=CONFIG, workers=0), labels=METAVIR)


def drop(manifest: Manifest, missing: dict[int, str]) -> Manifest:
    """``manifest`` with modality ``missing[i]`` removed from row ``i``."""
    rows = tuple(
        dataclasses.replace(
            row, paths={m: None if missing.get(i) == m else p for m, p in row.paths.items()}
        )
        for i, row in enumerate(manifest.rows)
    )
    return Manifest(rows, manifest.modalities, manifest.source, label_spec=manifest.label_spec)


def test_missing_image_is_never_read(full: Manifest, tmp_path: Path, monkeypatch) -> None:
    rows = ["patient_id,us_path,swe_path,stage"]
    for i, row in enumerate(full.rows[:4]):
        swe = "" if i % 2 else str(row.paths["swe"])
        rows.append(f"{row.patient_id},{row.paths['us']},{swe},{row.stage}")
    csv = tmp_path / "partial.csv"
    csv.write_text("\n".join(rows) + "\n")
    read: list[str] = []
    original = np.fromfile

    def spy(file, *args, **kwargs):
        read.append(str(file))
        return original(file, *args, **kwargs)

    monkeypatch.setattr(np, "fromfile", spy)
    manifest = read_manifest(csv, labels=METAVIR)  # decodes every present file once
    ds = PairedImageDataset(manifest, size=SIZE)
    for i in range(len(ds)):
        ds[i]
    present = {str(p) for r in manifest for p in r.paths.values() if p is not None}
    assert set(read) == present and len(read) == 2 * len(present)
    assert not any(str(r.paths["swe"]) in read for r in full.rows[1:4:2])


def test_uint8_samples_flag_and_zero_the_missing_modality(full: Manifest) -> None:
    ds = PairedImageDataset(drop(full, {0: "swe", 1: "us"}), size=(SIZE, SIZE + 8))
    first, second, third = ds[0], ds[1], ds[2]
    assert first["available"] == {"us": True, "swe": False}
    assert second["available"] == {"us": False, "swe": True}
    assert third["available"] == {"us": True, "swe": True}
    for item, missing in ((first, "swe"), (second, "us")):
        assert item[missing].shape == (3, SIZE, SIZE + 8) and item[missing].dtype == torch.uint8
        assert not item[missing].any()
    assert first["us"].any() and second["swe"].any()
    assert ds.availability[:3].tolist() == [[True, False], [False, True], [True, True]]

    # Without size=, the placeholder takes the shape of the pair's present crop.
    raw = PairedImageDataset(drop(full, {0: "swe"}))[0]
    assert raw["swe"].shape == raw["us"].shape and not raw["swe"].any()


@pytest.mark.parametrize("train", [True, False])
def test_transformed_batches_have_bool_masks_and_exact_zeros(full: Manifest, train: bool) -> None:
    missing = {0: "swe", 2: "swe", 3: "us"}
    transform = train_transforms(SIZE, max_shift=3) if train else eval_transforms(SIZE)
    ds = PairedImageDataset(drop(full, missing), transform=transform, size=48)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["us"].shape == batch["swe"].shape == (5, 3, SIZE, SIZE)
    assert list(batch["available"]) == ["us", "swe"]
    for m in ("us", "swe"):
        flags = batch["available"][m]
        assert flags.dtype == torch.bool and flags.shape == (5,)
        assert flags.tolist() == [missing.get(i) != m for i in range(5)]
        images = batch[m]
        # Exactly zero where missing (normalisation would have made it -mean/std), real elsewhere.
        assert all(images[i].abs().sum() == 0 for i in range(5) if not flags[i])
        assert all(images[i].std() > 0.1 for i in range(5) if flags[i])


def test_roi_crop_in_the_pipeline_skips_the_placeholder(full: Manifest) -> None:
    manifest = drop(full, {0: "swe"})
    ds = PairedImageDataset(manifest, transform=eval_transforms(SIZE, roi_crop=True), roi=False)
    item = ds[0]
    assert item["us"].shape == item["swe"].shape == (3, SIZE, SIZE)
    assert item["available"] == {"us": True, "swe": False} and not item["swe"].any()
    # A blank frame has no sector: without the flag, SectorCrop fails on it.
    blank = {"us": tv_tensors.Image(torch.zeros(3, 60, 80, dtype=torch.uint8))}
    with pytest.raises(ValueError, match="sector"):
        SectorCrop()(blank)
    flagged = SectorCrop()({**blank, "available": {"us": False}})
    assert flagged["us"].shape == (3, 60, 80)


def test_offline_plan_and_seeded_dataset_pass_the_mask_through(full: Manifest) -> None:
    base = PairedImageDataset(drop(full, {1: "swe"}), cache=True, size=SIZE)
    plan = [(1, True, 3), (1, False, -2), (0, True, 0)]
    planned = PlannedAugmentationDataset(base, plan, transform=eval_transforms(SIZE))
    for k, (index, _, _) in enumerate(plan):
        item = planned[k]
        assert item["available"] == {"us": True, "swe": index != 1}
        assert bool(item["swe"].any()) == (index != 1)

    seeded = SeededDataset(base, transform=train_transforms(SIZE, max_shift=2))
    loader = DataLoader(seeded, batch_size=3, sampler=SeededSampler(3, seed=0, shuffle=False))
    batch = next(iter(loader))
    assert batch["available"]["swe"].tolist() == [True, False, True]
    assert not batch["swe"][1].any() and batch["swe"][0].any()
    again = next(iter(loader))
    assert torch.equal(batch["us"], again["us"])  # the per-sample seed still rules


def test_model_ignores_the_placeholder_pixels(full: Manifest) -> None:
    torch.manual_seed(0)
    mods = ("us", "swe")
    encoders = {m: ModalityEncoder("test_resnet", frozen_stages=0) for m in mods}
    fusion = AttentionFusion(96, mods, embed_dim=16, reduced_channels=(16, 8))
    head = EnsembleHead({m: ClassifierHead(96, 5, pool="avg") for m in mods}, ClassifierHead(32, 5))
    model = MultiModalClassifier(encoders, fusion, head).eval()
    ds = PairedImageDataset(drop(full, {0: "swe", 2: "us"}), transform=eval_transforms(SIZE))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    noisy = {m: batch[m].clone() for m in mods}
    noisy["swe"][0] = torch.randn(3, SIZE, SIZE) * 3
    noisy["us"][2] = torch.randn(3, SIZE, SIZE) * 3
    with torch.no_grad():
        masked = model({m: batch[m] for m in mods}, available=batch["available"]).probs
        masked_noisy = model(noisy, available=batch["available"]).probs
        unmasked_noisy = model(noisy).probs
    torch.testing.assert_close(masked_noisy, masked, rtol=0, atol=1e-6)
    assert (unmasked_noisy[[0, 2]] - masked[[0, 2]]).abs().max() > 1e-4  # the mask matters


@settings(max_examples=15, deadline=None)
@given(pattern=st.lists(st.sampled_from(["", "us", "swe"]), min_size=4, max_size=4))
def test_any_pattern_gives_matching_flags_and_zeros(full: Manifest, pattern: list[str]) -> None:
    manifest = drop(full, {i: m for i, m in enumerate(pattern) if m})
    ds = PairedImageDataset(manifest, transform=eval_transforms(16), size=24)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    for j, m in enumerate(manifest.modalities):
        flags = batch["available"][m]
        assert flags.tolist() == manifest.availability[:4, j].tolist()
        assert flags.tolist() == [pattern[i] != m for i in range(4)]
        assert ((batch[m].flatten(1).abs().sum(1) > 0) == flags).all()


def test_zero_unavailable_checks_its_input() -> None:
    image = torch.ones(3, 2, 2)
    same = {"us": image, "label": 1}
    assert zero_unavailable(same) is same
    out = zero_unavailable({"us": tv_tensors.Image(image), "available": {"us": False}})
    assert isinstance(out["us"], tv_tensors.Image) and not out["us"].any()
    with pytest.raises(ValueError, match=r"sample\['available'\]: flags \['swe'\] as missing"):
        zero_unavailable({"us": image, "available": {"us": True, "swe": False}})
    with pytest.raises(TypeError, match=r"sample\['available'\]: expected a mapping"):
        zero_unavailable({"us": image, "available": [True]})
