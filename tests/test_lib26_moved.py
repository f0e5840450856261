"""Issue 26: what moved from the example into the library (checkpoints, epoch log, figures, checked
replacement); the run folder is tested in test_runs_folder.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mmfusion import files


def test_replace_checked_replaces_only_after_the_block_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_text("old")
    with pytest.raises(RuntimeError), files.replace_checked(out) as candidate:
        candidate.write_text("bad")
        raise RuntimeError("check failed")
    assert out.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    stale = tmp_path / ".model.onnx.k1ll3d.tmp"
    stale.write_text("killed")
    with files.replace_checked(out) as candidate:
        assert candidate.parent == tmp_path and candidate.name.startswith(".model.onnx.")
        assert files.remove_stale_candidates(out) == []  # the live candidate is locked
        candidate.write_text("new")
    assert out.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_check_checkpoint_accepts_a_training_checkpoint_and_moves_a_broken_one(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from mmfusion.lightning import AtomicCheckpointIO, check_checkpoint

    good = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}, "loops": {}}, good)
    assert check_checkpoint(good) == good
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, good, storage_options={})
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        check_checkpoint(bad, move_aside=False)
    assert bad.exists()
    with pytest.raises(ValueError, match="moved to"):
        check_checkpoint(bad)
    assert not bad.exists() and len(list(tmp_path.glob("bad.ckpt.corrupt-*"))) == 1


def test_epoch_log_writes_every_epoch_and_says_each_once(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from mmfusion.lightning import EpochLog

    said: list[str] = []
    log = EpochLog(tmp_path, 2, say=said.append)
    entry = {"epoch": 1, "loss": 0.5, "ce_joint": 0.25, "lr": 1e-3, "seconds": 2.0, "pairs_per_s": 8.0}
    module, trainer = SimpleNamespace(history=[entry]), SimpleNamespace(is_global_zero=True)
    log.on_train_epoch_start(trainer, module)
    log.on_train_end(trainer, module)
    assert said == ["epoch 1/2, loss 0.5000, ce_joint 0.250, lr 1.00e-03, 2 s, 8.0 pairs/s"]
    assert [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()] == [entry]
    EpochLog(tmp_path / "other", 2).on_train_end(SimpleNamespace(is_global_zero=False), module)
    assert not (tmp_path / "other").exists()


def test_to_display_undoes_the_normalisation() -> None:
    from mmfusion.plots import to_display

    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    pixels = np.array([0.0, 0.25, 1.0])[:, None, None] * np.ones((3, 2, 4))
    image = torch.as_tensor((pixels - np.array(mean)[:, None, None]) / np.array(std)[:, None, None])
    shown = to_display(image, mean, std)
    assert shown.shape == (2, 4, 3) and shown.dtype == np.uint8
    assert shown[0, 0].tolist() == [0, 64, 255]


def test_plot_maps_and_explain_maps_draw_an_attention_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from mmfusion.explain import explain_maps
    from mmfusion.models import create_model
    from mmfusion.plots import plot_maps, to_display

    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", image_size=32).eval()
    inputs = {m: torch.randn(2, 3, 32, 32) for m in model.modalities}
    maps = explain_maps(model, inputs)
    assert list(maps) == ["attention"]
    for v in maps["attention"].values():
        assert isinstance(v, np.ndarray) and v.shape == (2, 32, 32) and 0.0 <= v.min() <= v.max() <= 1.0
    images = {m: to_display(x[0], (0.5,) * 3, (0.5,) * 3) for m, x in inputs.items()}
    path = plot_maps(images, {k: {m: v[0] for m, v in per.items()} for k, per in maps.items()},
                     tmp_path / "pair.png", "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="png"):
        plot_maps(images, {}, tmp_path / "pair.jpg")


def test_export_facts_name_each_preprocessing_difference() -> None:
    from mmfusion.onnx_predictor import ExportFacts

    facts = ExportFacts(("us", "swe"), (224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                        ("F0", "F1"), crop={"us": "sector", "swe": "swe_box"})
    same = facts.differences(224, {"swe": "swe_box"}, (0.4850000001, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert same == []
    differ = facts.differences((256, 256), {}, (0.5, 0.5, 0.5), (0.229, 0.224, 0.225))
    assert [d.split(" ")[0] for d in differ] == ["image_size", "crop", "mean"]
    assert differ[0] == "image_size (224, 224) (given: (256, 256))"
