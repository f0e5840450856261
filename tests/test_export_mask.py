"""ONNX export with a per-sample availability mask: one graph for pairs with and without SWE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    EnsembleHead,
    ModalityEncoder,
    MultiModalClassifier,
)
from mmfusion.export import AVAILABLE_INPUT, OnnxPredictor, ProbabilitiesModule, to_onnx

pytest.importorskip("onnxruntime", reason="needs the mmfusion[export] extra")
pytest.importorskip("onnxscript", reason="needs the mmfusion[export] extra")
onnx = pytest.importorskip("onnx", reason="needs the mmfusion[export] extra")

SIZE = 64
MODS = ("us", "swe")


def tiny_model(modalities: tuple[str, ...] = MODS) -> MultiModalClassifier:
    """The paper's layout (attention fusion, flattened branch heads, joint head), test_resnet."""
    torch.manual_seed(0)
    encoders = {m: ModalityEncoder("test_resnet", frozen_stages=0) for m in modalities}
    fusion = AttentionFusion(96, modalities, embed_dim=16, reduced_channels=(16, 8))
    branches = {m: ClassifierHead(96 * 2 * 2, 5, hidden=(16,)) for m in modalities}
    head = EnsembleHead(branches, ClassifierHead(16 * len(modalities), 5))
    return MultiModalClassifier(encoders, fusion, head).eval()


@pytest.fixture(scope="module")
def model() -> MultiModalClassifier:
    return tiny_model()


@pytest.fixture(scope="module")
def onnx_path(model: MultiModalClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "mask.onnx"
    return to_onnx(model, out, image_size=SIZE, availability_input=True)


def images(batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32) for m in MODS}


def torch_probs(model: MultiModalClassifier, x: dict[str, np.ndarray], available=None):
    masks = None if available is None else {m: torch.from_numpy(v) for m, v in available.items()}
    with torch.no_grad():
        return model({m: torch.from_numpy(v) for m, v in x.items()}, available=masks).probs.numpy()


#: Per-sample SWE/US flags of a batch of 5: both, no SWE, no US, no SWE, both.
FLAGS = {"us": np.array([1, 1, 0, 1, 1], bool), "swe": np.array([1, 0, 1, 0, 1], bool)}


@pytest.mark.slow
def test_onnxruntime_with_mask_matches_pytorch(model, onnx_path: Path) -> None:
    predictor = OnnxPredictor(onnx_path)
    assert predictor.modalities == MODS and predictor.availability_input
    x = images(5, seed=1)
    probs = predictor(x, available=FLAGS)
    ref = torch_probs(model, x, FLAGS)
    assert probs.shape == (5, 5) and probs.dtype == np.float32
    diff = float(np.abs(probs - ref).max())
    print(f"onnx (mask input) vs torch max abs diff, batch 5: {diff:.3e}")
    assert diff < 1e-4
    # The mask matters: without it the samples lacking a modality get other probabilities.
    assert np.abs(ref - torch_probs(model, x))[[1, 2, 3]].max() > 1e-3

    # A missing modality's pixels are ignored: zeros or noise, same answer.
    zeroed = {m: v.copy() for m, v in x.items()}
    for m, flags in FLAGS.items():
        zeroed[m][~flags] = 0.0
    np.testing.assert_allclose(predictor(zeroed, available=FLAGS), probs, atol=1e-5, rtol=0)

    # No flags (or only some): every unflagged modality present, as in PyTorch.
    np.testing.assert_allclose(predictor(x), torch_probs(model, x), atol=1e-4, rtol=0)
    only_swe = {"swe": FLAGS["swe"]}
    np.testing.assert_allclose(
        predictor(x, available=only_swe), torch_probs(model, x, only_swe), atol=1e-4, rtol=0
    )
    one = {m: v[:1] for m, v in x.items()}  # the batch axis stays dynamic
    no_swe = {"swe": np.array([False])}
    np.testing.assert_allclose(
        predictor(one, available=no_swe), torch_probs(model, one, no_swe), atol=1e-4, rtol=0
    )


@pytest.mark.slow
def test_graph_has_a_bool_mask_input_with_the_batch_axis(onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path))
    onnx.checker.check_model(graph)
    inputs = {i.name: i.type.tensor_type for i in graph.graph.input}
    assert list(inputs) == ["us", "swe", AVAILABLE_INPUT]
    mask = inputs[AVAILABLE_INPUT]
    assert mask.elem_type == onnx.TensorProto.BOOL
    batch, columns = mask.shape.dim
    assert batch.dim_param == inputs["us"].shape.dim[0].dim_param and columns.dim_value == 2
    assert "availability_input=True" in repr(OnnxPredictor(onnx_path))


@pytest.mark.slow
def test_predictor_mask_errors(onnx_path: Path, model, tmp_path: Path) -> None:
    predictor = OnnxPredictor(onnx_path)
    x = images(2)
    with pytest.raises(TypeError, match=r"available\['swe'\]: expected a bool array of shape \[2\]"):
        predictor(x, available={"swe": np.array([1, 0])})
    with pytest.raises(ValueError, match=r"available\['swe'\]: expected shape \[2\]"):
        predictor(x, available={"swe": np.array([True])})
    with pytest.raises(ValueError, match="available: unknown modality"):
        predictor(x, available={"doppler": np.array([True, True])})
    with pytest.raises(TypeError, match="available: expected a mapping"):
        predictor(x, available=np.ones((2, 2), bool))
    plain = OnnxPredictor(to_onnx(model, tmp_path / "plain.onnx", ["us"], image_size=SIZE))
    assert not plain.availability_input
    with pytest.raises(ValueError, match="has no 'available' input; export it with"):
        plain({"us": x["us"]}, available={"us": np.array([True, True])})


def test_probabilities_module_passes_the_mask(model) -> None:
    x = {m: torch.from_numpy(v) for m, v in images(5, seed=2).items()}
    mask = torch.from_numpy(np.stack([FLAGS[m] for m in MODS], axis=1))
    wrapped = ProbabilitiesModule(model, availability_input=True)
    available = {m: torch.from_numpy(FLAGS[m]) for m in MODS}
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x["us"], x["swe"], mask), model(x, available).probs)
        # Reordered inputs: the mask's columns follow the wrapper's modality order.
        swapped = ProbabilitiesModule(model, ("swe", "us"), availability_input=True)
        torch.testing.assert_close(
            swapped(x["swe"], x["us"], mask.flip(1)), model(x, available).probs
        )
    with pytest.raises(ValueError, match=r"expected 3 tensors \['us', 'swe', 'available'\]"):
        wrapped(x["us"], x["swe"])
    with pytest.raises(TypeError, match=r"available: expected a bool tensor \[B, 2\]"):
        wrapped(x["us"], x["swe"], mask.float())
    with pytest.raises(ValueError, match=r"available: expected shape \[B, 2\]"):
        wrapped(x["us"], x["swe"], mask[:, :1])


def test_a_modality_named_available_clashes_with_the_mask() -> None:
    encoders = {"available": ModalityEncoder("test_resnet")}
    head = EnsembleHead({"available": ClassifierHead(96, 5, pool="avg")})
    clash = MultiModalClassifier(encoders, None, head)
    ProbabilitiesModule(clash)  # fine without the mask input
    with pytest.raises(ValueError, match="modalities: 'available' names the availability input"):
        ProbabilitiesModule(clash, availability_input=True)
