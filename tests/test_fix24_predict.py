"""Issue 24, ``predict``: every view gets its own crops (item 1), a diverged model is refused
(item 3), and the frame of a cine file and the region of a dual-view file are chosen, said and
recorded (item 24).

The run folders are untrained (random ``test_resnet`` weights, 64 px, saved as ``train`` saves
them): their probabilities still depend on the input, which is all these checks need.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.liver_fibrosis import predict
from examples.liver_fibrosis.cli import run
from examples.liver_fibrosis.options import preset_config
from examples.liver_fibrosis.runs import load_run, save_run_model
from mmfusion.data import Manifest, ManifestRow, read_manifest
from mmfusion.data.pipeline import eval_dataset
from mmfusion.liver import METAVIR
from mmfusion.models import build_model

pytestmark = pytest.mark.xdist_group("example_cli")

TINY = dict(backbone="test_resnet", image_size=64, hidden=(16,), embed_dim=16)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (config.json + model.safetensors) of an untrained US + SWE model."""
    cfg = preset_config("quick", dict(TINY))
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "tiny"
    save_run_model(build_model(cfg.model), cfg, folder)
    return folder


@pytest.fixture(scope="module")
def reference(run_dir: Path):  # noqa: ANN201 - a function
    """``reference(paths)``: the ``[K]`` probabilities of the run's model on ``paths`` (modality
    -> file), through the evaluation pipeline."""
    cfg, model = load_run(run_dir, torch.device("cpu"))
    return lambda paths: reference_probs(cfg.model.image_size, model, paths)


def reference_probs(size: int, model: torch.nn.Module, paths: dict[str, Path]) -> np.ndarray:
    """``[K]`` probabilities of ``model`` on ``paths``, through the evaluation pipeline."""
    row = ManifestRow(line=2, patient_id="ref", label=0, paths=dict(paths))
    manifest = Manifest((row,), tuple(paths), f"reference {sorted(paths.items())}")
    sample = eval_dataset(manifest, tuple(paths), size)[0]
    with torch.no_grad():
        return model({m: sample[m][None] for m in paths}).probs[0].numpy()


def probs_of(entry: dict) -> np.ndarray:
    return np.array(list(entry["probabilities"].values()))


# -- item 1: several views of one patient -------------------------------------------------------


def test_each_view_is_predicted_from_its_own_images(
    run_dir: Path, reference, tiny_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tiny_manifest.parent / "P002"
    argv = ["--checkpoint", str(run_dir), "--views", str(folder), "--out", str(tmp_path / "v"),
            "--device", "cpu"]
    assert run(predict.main, argv) == 0
    views = json.loads(capsys.readouterr().out)["views"]
    assert sorted(views) == ["view1", "view2"]
    for name, entry in views.items():  # each view's probabilities are those of its own pair
        paths = {m: folder / f"{name}_{m}.png" for m in ("us", "swe")}
        np.testing.assert_allclose(probs_of(entry), reference(paths), atol=2e-6)
    assert not np.allclose(probs_of(views["view1"]), probs_of(views["view2"]), atol=1e-5)

    argv = ["--checkpoint", str(run_dir), "--manifest", str(tiny_manifest), "--patient", "P002",
            "--out", str(tmp_path / "m"), "--device", "cpu"]
    assert run(predict.main, argv) == 0
    by_line = json.loads(capsys.readouterr().out)["views"]
    rows = [r for r in read_manifest(tiny_manifest, verify="none", labels=METAVIR).rows if r.patient_id == "P002"]
    assert sorted(by_line) == sorted(f"line {r.line}" for r in rows)  # the manifest's own lines
    for row in rows:
        expected = views[f"view{int(row.extra['view']) + 1}"]
        np.testing.assert_allclose(probs_of(by_line[f"line {row.line}"]), probs_of(expected),
                                   atol=2e-6)


# -- item 3: a diverged model ---------------------------------------------------------------------


def test_non_finite_probabilities_are_an_error(
    run_dir: Path, tiny_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, model = load_run(run_dir, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # what train --lr 1e30 leaves
    monkeypatch.setattr(predict, "load_run", lambda *_: (cfg, model))  # whatever load refuses
    pair = tiny_manifest.parent / "P001"
    out = tmp_path / "p"
    argv = ["--checkpoint", str(run_dir), "--us", str(pair / "view1_us.png"),
            "--swe", str(pair / "view1_swe.png"), "--out", str(out), "--device", "cpu"]
    assert run(predict.main, argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in captured.err
    assert "not finite" in errors[0] and "diverged" in errors[0] and "--checkpoint" in errors[0]
    assert captured.out == "" and not (out / "prediction.json").exists()


# -- item 24: the frame of a cine file, the view of a dual-view file ------------------------------


def write_cine(path: Path, frames: list[np.ndarray]) -> Path:
    """A native MONOCHROME2 multi-frame DICOM file (a cine loop) of the uint8 ``frames``."""
    pydicom = pytest.importorskip("pydicom", reason="needs the mmfusion[dicom] extra")
    from pydicom.dataset import Dataset
    from pydicom.uid import UltrasoundMultiFrameImageStorage

    ds = Dataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[str(path)])
    ds.set_pixel_data(np.stack(frames), "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_cine_frame_is_chosen_said_and_recorded(
    run_dir: Path, reference, tiny_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    pngs = [tiny_manifest.parent / f"P00{k}" / "view1_us.png" for k in (1, 2, 3)]
    cine = write_cine(tmp_path / "cine.dcm",
                      [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in pngs])
    base = ["--checkpoint", str(run_dir), "--us", str(cine), "--device", "cpu"]

    assert run(predict.main, [*base, "--out", str(tmp_path / "default")]) == 0
    captured = capsys.readouterr()
    assert "frame 1 of 3" in captured.err and "--frame" in captured.err  # said, with the option
    report = json.loads(captured.out)
    assert report["frames"] == {"us": {"frame": 1, "n_frames": 3}}
    assert json.loads((tmp_path / "default" / "prediction.json").read_text())["frames"] == {
        "us": {"frame": 1, "n_frames": 3}}
    np.testing.assert_allclose(probs_of(report), reference({"us": pngs[1]}),
                               atol=2e-6)  # the middle frame is P002's image

    assert run(predict.main, [*base, "--frame", "0", "--out", str(tmp_path / "f0")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["frames"] == {"us": {"frame": 0, "n_frames": 3}}
    np.testing.assert_allclose(probs_of(first), reference({"us": pngs[0]}),
                               atol=2e-6)

    assert run(predict.main, [*base, "--frame", "3", "--out", str(tmp_path / "f3")]) == 2
    err = capsys.readouterr().err
    assert "error: --frame:" in err and "3 frame(s)" in err and "Traceback" not in err
    png_only = ["--checkpoint", str(run_dir), "--us", str(pngs[0]), "--device", "cpu"]
    assert run(predict.main, [*png_only, "--frame", "1", "--out", str(tmp_path / "png")]) == 2
    err = capsys.readouterr().err
    assert "error: --frame:" in err and "several frames" in err


def test_dual_view_file_records_the_region_used(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = pytest.importorskip("pydicom.data", reason="needs the mmfusion[dicom] extra")
    path = data.get_testdata_file("gdcm-US-ALOKA-16.dcm", download=False)
    if path is None:
        pytest.skip("pydicom-data (the dev extra) is not installed")
    argv = ["--checkpoint", str(run_dir), "--us", str(path), "--out", str(tmp_path / "d"),
            "--device", "cpu"]
    assert run(predict.main, argv) == 0
    captured = capsys.readouterr()
    roi = json.loads(captured.out)["roi"]["us"]
    assert roi["source"] == "dicom_region"
    assert roi["region"] == {"index": 0, "box": [32, 24, 336, 416], "kind": "tissue"}
    assert roi["tissue_regions"] == 2  # a dual-view screen: two tissue views, the first used
    assert "region 0" in captured.err and "2 tissue regions" in captured.err
    assert json.loads(captured.out)["frames"] == {"us": {"frame": 0, "n_frames": 1}}
