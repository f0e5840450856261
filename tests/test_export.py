"""mmfusion.export: ONNX export (dynamo) of the inference path, onnxruntime parity, bad inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfusion.export import OnnxPredictor, ProbabilitiesModule, to_onnx
from mmfusion.models import build_loss, create_model

pytest.importorskip("onnxruntime", reason="needs the mmfusion[export] extra")
pytest.importorskip("onnxscript", reason="needs the mmfusion[export] extra")
onnx = pytest.importorskip("onnx", reason="needs the mmfusion[export] extra")

SIZE = 64


def build_model(**overrides: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The paper's registered network with ``overrides``, and its loss."""
    model = create_model("liver_fibrosis_paper", **overrides)
    return model, build_loss(model.config)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The paper's model (attention fusion, ensemble, flattened heads) with test_resnet, 64 px."""
    torch.manual_seed(0)
    net, _ = build_model(backbone="test_resnet", image_size=SIZE, hidden=(16,))
    return net.eval()


@pytest.fixture(scope="module")
def onnx_path(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = to_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", image_size=SIZE)
    assert path.is_file()
    return path


def images(batch: int, names=("us", "swe"), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32) for m in names}


def torch_probs(model: torch.nn.Module, x: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model({m: torch.from_numpy(v) for m, v in x.items()}).probs.numpy()


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 5])
def test_onnxruntime_matches_pytorch_at_other_batch_sizes(
    model: torch.nn.Module, onnx_path: Path, batch: int
) -> None:
    predictor = OnnxPredictor(onnx_path)
    x = images(batch, seed=batch)
    probs = predictor(x)
    ref = torch_probs(model, x)
    assert probs.shape == (batch, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    diff = float(np.abs(probs - ref).max())
    print(f"onnx vs torch max abs diff at batch {batch}: {diff:.3e}")
    assert diff < 1e-4


@pytest.mark.slow
def test_graph_inputs_outputs_and_dynamic_batch(onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph)
    inputs = {i.name: i.type.tensor_type for i in graph.graph.input}
    assert list(inputs) == ["us", "swe"]
    assert [o.name for o in graph.graph.output] == ["probs"]
    for tensor_type in inputs.values():
        assert tensor_type.elem_type == onnx.TensorProto.FLOAT
        batch, *rest = tensor_type.shape.dim
        assert batch.dim_param and not batch.HasField("dim_value")  # symbolic batch axis
        assert [d.dim_value for d in rest] == [3, SIZE, SIZE]
    predictor = OnnxPredictor(onnx_path)
    assert predictor.modalities == ("us", "swe")
    assert "model.onnx" in repr(predictor)


@pytest.mark.slow
def test_export_subset_of_modalities_restores_training_mode(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    model.train()
    try:
        flags = [m.training for m in model.modules()]
        path = to_onnx(model, str(tmp_path / "swe.onnx"), modalities=["swe"], image_size=SIZE)
        assert [m.training for m in model.modules()] == flags
    finally:
        model.eval()
    predictor = OnnxPredictor(path)
    assert predictor.modalities == ("swe",)
    x = images(3, names=("swe",))
    np.testing.assert_allclose(predictor(x), torch_probs(model, x), atol=1e-4, rtol=0)


def test_probabilities_module_is_the_inference_path(model: torch.nn.Module) -> None:
    x = {m: torch.from_numpy(v) for m, v in images(2).items()}
    wrapped = ProbabilitiesModule(model)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x["us"], x["swe"]), model(x).probs)
        only_swe = ProbabilitiesModule(model, ("swe",))(x["swe"])
        torch.testing.assert_close(only_swe, model({"swe": x["swe"]}).probs)
    with pytest.raises(ValueError, match="expected 2 tensors"):
        wrapped(x["us"])


def test_to_onnx_bad_inputs(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match="unknown modality"):
        to_onnx(model, path, modalities=["us", "doppler"], image_size=SIZE)
    with pytest.raises(TypeError, match="modalities"):
        to_onnx(model, path, modalities="swe", image_size=SIZE)
    with pytest.raises(ValueError, match="distinct"):
        to_onnx(model, path, modalities=["swe", "swe"], image_size=SIZE)
    for bad in ("64", 64.0, (64,), (64, "64"), True):
        with pytest.raises(TypeError, match="image_size"):
            to_onnx(model, path, image_size=bad)
    with pytest.raises(ValueError, match="image_size"):
        to_onnx(model, path, image_size=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        to_onnx(model, tmp_path / "missing" / "m.onnx", image_size=SIZE)
    with pytest.raises(ValueError, match="batch_size_example"):
        to_onnx(model, path, image_size=SIZE, batch_size_example=1)
    with pytest.raises(ValueError, match="opset"):
        to_onnx(model, path, image_size=SIZE, opset=0)
    with pytest.raises(TypeError, match="MultiModalClassifier"):
        to_onnx(torch.nn.Linear(2, 2), path)
    assert not path.exists()


@pytest.mark.slow
def test_predictor_bad_inputs(onnx_path: Path, tmp_path: Path) -> None:
    predictor = OnnxPredictor(onnx_path)
    x = images(2)
    with pytest.raises(ValueError, match="unknown modality"):
        predictor({**x, "doppler": x["us"]})
    with pytest.raises(ValueError, match="missing modality"):
        predictor({"us": x["us"]})
    with pytest.raises(ValueError, match="shape"):
        predictor({"us": x["us"][:, :, :32], "swe": x["swe"]})
    with pytest.raises(ValueError, match="batch size"):
        predictor({"us": x["us"][:1], "swe": x["swe"]})
    with pytest.raises(TypeError, match="mapping"):
        predictor(x["us"])
    with pytest.raises(TypeError, match="numeric"):
        predictor({"us": x["us"].astype(str), "swe": x["swe"]})
    assert predictor({m: v.astype(np.float64) for m, v in x.items()}).shape == (2, 5)
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        OnnxPredictor(tmp_path / "absent.onnx")


def test_missing_extra_names_it(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"mmfusion\[export\]"):
        to_onnx(model, tmp_path / "m.onnx", image_size=SIZE)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    (tmp_path / "dummy.onnx").write_bytes(b"")
    with pytest.raises(ImportError, match=r"mmfusion\[export\]"):
        OnnxPredictor(tmp_path / "dummy.onnx")
