"""Issue 24, ONNX export: a save that dies keeps the previous file (item 12), a diverged model or
a NaN comparison fails the export (item 3), and the file carries its preprocessing facts for a
predictor that runs without PyTorch (item 25).

The torch-free predictor is checked in a subprocess where ``import torch`` (and torchvision, timm,
Lightning) fails; building a whole virtual environment without torch would take minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.liver_fibrosis import export
from examples.liver_fibrosis.cli import run
from examples.liver_fibrosis.options import preset_config
from examples.liver_fibrosis.runs import load_run, save_run_model
from mmfusion.data import Manifest, ManifestRow
from mmfusion.data.pipeline import eval_dataset
from mmfusion.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mmfusion.elastography import crop_from_name
from mmfusion.export import OnnxPredictor, to_onnx
from mmfusion.files import file_mode
from mmfusion.models import build_model

pytest.importorskip("onnxruntime", reason="needs the mmfusion[export] extra")
pytest.importorskip("onnxscript", reason="needs the mmfusion[export] extra")
onnx = pytest.importorskip("onnx", reason="needs the mmfusion[export] extra")

pytestmark = pytest.mark.xdist_group("example_cli")

SIZE = 64
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder (config.json + model.safetensors) of an untrained US + SWE model."""
    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=SIZE, hidden=(16,),
                                      embed_dim=16))
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "tiny"
    save_run_model(build_model(cfg.model), cfg, folder)
    return folder


#: The export CLI's arguments of the one real export of this module.
EXPORT_ARGS = ["--modalities", "swe,us", "--availability-input"]


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The run exported once by the CLI (``EXPORT_ARGS``), and the ``ONNXProgram`` it saved.

    The other tests replay that program (``torch.onnx.export`` patched to return it), so they
    test what happens around the save without tracing the model again.
    """
    real, programs = torch.onnx.export, []

    def capture(*args: object, **kwargs: object) -> object:
        programs.append(real(*args, **kwargs))
        return programs[-1]

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.onnx, "export", capture)
        assert run(export.main, ["--checkpoint", str(run_dir), "--out", str(out), *EXPORT_ARGS]) == 0
    assert len(programs) == 1
    return out, programs[0]


def replay(monkeypatch: pytest.MonkeyPatch, program: object) -> None:
    """Make ``torch.onnx.export`` return ``program`` at once."""
    monkeypatch.setattr(torch.onnx, "export", lambda *args, **kwargs: program)


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# -- item 12: a save that dies ----------------------------------------------------------------------


def test_a_save_that_dies_keeps_the_previous_file(
    run_dir: Path, exported: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model = load_run(run_dir, torch.device("cpu"))
    replay(monkeypatch, exported[1])
    kwargs = dict(modalities=["swe", "us"], image_size=SIZE, availability_input=True)
    path = to_onnx(model, tmp_path / "model.onnx", **kwargs)
    before = path.read_bytes()
    assert path.stat().st_mode & 0o777 == file_mode()  # the umask's mode, not mkstemp's 0600

    def killed(self: object, destination: str, **kwargs: object) -> None:
        Path(destination).write_bytes(before[: len(before) // 3])  # partly written, then killed
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        to_onnx(model, path, **kwargs)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary file left

    def truncated(self: object, destination: str, **kwargs: object) -> None:
        Path(destination).write_bytes(before[:1000])  # returns, but the file is cut short

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", truncated)
    with pytest.raises(ValueError, match="path: the ONNX file written for .*model.onnx' is not val"):
        to_onnx(model, path, **kwargs)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_export_overwrite_that_dies_keeps_the_previous_model(
    run_dir: Path, exported: tuple[Path, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(exported[0].read_bytes())
    before = out.read_bytes()
    replay(monkeypatch, exported[1])

    def killed(self: object, destination: str, **kwargs: object) -> None:
        Path(destination).write_bytes(before[:4096])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx.ONNXProgram, "save", killed)
    argv = ["--checkpoint", str(run_dir), "--out", str(out), "--overwrite", *EXPORT_ARGS]
    assert run(export.main, argv) == 130
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# -- item 3: a diverged model -------------------------------------------------------------------


def test_export_refuses_a_model_with_non_finite_weights(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg, model = load_run(run_dir, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # what train --lr 1e30 leaves
    monkeypatch.setattr(export, "load_run", lambda *_: (cfg, model))  # whatever load refuses
    out = tmp_path / "nan.onnx"
    assert run(export.main, ["--checkpoint", str(run_dir), "--out", str(out)]) == 2
    line = one_error(capsys)
    assert "not finite" in line and "diverged" in line
    assert list(tmp_path.iterdir()) == []


def test_export_treats_a_nan_comparison_as_a_failure(
    run_dir: Path, exported: tuple[Path, object], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    replay(monkeypatch, exported[1])

    def nan_probs(self: object, inputs: dict, available: object = None) -> np.ndarray:
        return np.full((len(next(iter(inputs.values()))), 5), np.nan, np.float32)

    monkeypatch.setattr(OnnxPredictor, "__call__", nan_probs)  # ONNX Runtime gives NaN
    argv = ["--checkpoint", str(run_dir), "--out", str(out), "--overwrite", *EXPORT_ARGS]
    assert run(export.main, argv) == 2
    line = one_error(capsys)
    assert "ONNX Runtime" in line and "not finite" in line and "nan" in line
    assert out.read_bytes() == b"previous"  # the failed export did not replace it
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


# -- item 25: metadata and a predictor without torch ---------------------------------------------


TORCH_FREE = """
import json, sys
for name in ("torch", "torchvision", "timm", "lightning", "pytorch_lightning"):
    sys.modules[name] = None  # any import of them fails
from mmfusion.onnx_predictor import OnnxPredictor
predictor = OnnxPredictor(sys.argv[1])
out = {}
for key, files in json.loads(sys.argv[2]).items():
    result = predictor.predict_files(files)
    out[key] = {"probs": result.probabilities.tolist(), "stage": result.predicted,
                "frames": {m: [p.frame, p.n_frames] for m, p in result.images.items()}}
loaded = [m for m in ("torch", "torchvision", "timm") if sys.modules.get(m) is not None]
print(json.dumps({"results": out, "loaded": loaded, "classes": list(predictor.class_names)}))
"""


def reference_probs(run: Path, paths: dict[str, Path]) -> np.ndarray:
    """``[K]`` probabilities of the run's torch model on ``paths`` (the evaluation pipeline)."""
    cfg, model = load_run(run, torch.device("cpu"))
    row = ManifestRow(line=2, patient_id="ref", label=0, paths=dict(paths))
    manifest = Manifest((row,), tuple(paths), f"reference {sorted(paths.items())}")
    sample = eval_dataset(manifest, tuple(paths), cfg.model.image_size)[0]
    with torch.no_grad():
        return model({m: sample[m][None] for m in paths}).probs[0].numpy()


def test_onnx_file_carries_its_preprocessing_and_runs_without_torch(
    run_dir: Path, exported: tuple[Path, object], tiny_manifest: Path, tmp_path: Path
) -> None:
    import mmfusion

    out = exported[0]  # --modalities swe,us --availability-input
    graph = onnx.load(str(out))
    props = {p.key: p.value for p in graph.metadata_props}
    inputs = [i.name for i in graph.graph.input]
    assert inputs == ["swe", "us", "available"]
    facts = {k: json.loads(v) for k, v in props.items() if k.startswith("mmfusion.")}
    assert facts["mmfusion.modalities"] == ["swe", "us"]  # input order, as exported
    assert facts["mmfusion.image_size"] == [SIZE, SIZE]
    assert facts["mmfusion.mean"] == pytest.approx(list(IMAGENET_MEAN))
    assert facts["mmfusion.std"] == pytest.approx(list(IMAGENET_STD))
    assert facts["mmfusion.class_names"] == ["F0", "F1", "F2", "F3", "F4"]
    assert facts["mmfusion.crop"] == {"swe": "sector", "us": "sector"}  # --swe-input frame
    assert facts["mmfusion.availability_input"] == "available"
    assert facts["mmfusion.output"] == "probs"
    assert facts["mmfusion.version"] == mmfusion.__version__

    folder = tiny_manifest.parent / "P003"
    cases = {"pair": {m: folder / f"view2_{m}.png" for m in ("us", "swe")},
             "us only": {"us": folder / "view1_us.png"}}
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(out),
         json.dumps({k: {m: str(p) for m, p in v.items()} for k, v in cases.items()})],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["loaded"] == [] and result["classes"] == ["F0", "F1", "F2", "F3", "F4"]
    for key, paths in cases.items():
        got = np.array(result["results"][key]["probs"])
        np.testing.assert_allclose(got, reference_probs(run_dir, paths), atol=1e-4)
        assert result["results"][key]["frames"] == {m: [0, 1] for m in paths}
    assert (result["results"]["pair"]["probs"] != result["results"]["us only"]["probs"])


@pytest.mark.parametrize("crop", ["sector", "swe_box", "swe_box_mask"])
def test_torch_free_preprocessing_is_the_evaluation_pipelines(
    tiny_manifest: Path, crop: str
) -> None:
    from mmfusion.onnx_predictor import prepare_image

    path = tiny_manifest.parent / "P004" / "view1_swe.png"
    row = ManifestRow(line=2, patient_id="x", label=0, paths={"swe": path})
    manifest = Manifest((row,), ("swe",), f"one file {path}")
    expected = eval_dataset(manifest, ("swe",), SIZE, crop={"swe": crop_from_name(crop)})[0][
        "swe"
    ].numpy()
    got = prepare_image(path, (SIZE, SIZE), crop=crop, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert got.image.shape == (3, SIZE, SIZE) and got.image.dtype == np.float32
    np.testing.assert_allclose(got.image, expected, atol=1e-6, rtol=0)
    assert got.crop == crop and (got.frame, got.n_frames) == (0, 1)


def test_predict_onnx_refuses_a_file_exported_with_other_preprocessing(
    run_dir: Path, exported: tuple[Path, object], tiny_manifest: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``predict --onnx`` preprocesses with the run's settings: a file whose metadata records
    another SWE crop (same architecture, so the shapes fit) is refused, not silently fed."""
    from examples.liver_fibrosis import predict

    boxed = tmp_path / "boxed"
    cfg = preset_config("quick", dict(backbone="test_resnet", image_size=SIZE, hidden=(16,),
                                      embed_dim=16, swe_input="box"))
    save_run_model(build_model(cfg.model), cfg, boxed)
    pair = tiny_manifest.parent / "P001"
    images = ["--us", str(pair / "view1_us.png"), "--swe", str(pair / "view1_swe.png")]
    argv = [*images, "--onnx", str(exported[0]), "--device", "cpu"]
    assert run(predict.main, ["--checkpoint", str(boxed), *argv, "--out", str(tmp_path / "a")]) == 2
    line = one_error(capsys)
    assert "--onnx:" in line and "crop" in line and "swe_box" in line
    assert run(predict.main, ["--checkpoint", str(run_dir), *argv, "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "onnxruntime"
