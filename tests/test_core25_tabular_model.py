"""Issue 25: an image + tabular model (``"us"`` images, ``"labs"`` values with gaps).

Builds through the registries (``encoders={"labs": {"name": "tabular", ...}}``), runs with NaNs
in the tabular input, trains a step, saves and loads, and exports to ONNX with an availability
input that onnxruntime runs with the same probabilities.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from mmfusion import TabularEncoder
from mmfusion.models import ModelConfig, build_loss, build_model, create_model, from_pretrained

NAN = float("nan")
COLUMNS = ("age", "ast", "alt", "platelets")
SIZE = 32


def config(**changes: object) -> ModelConfig:
    base = dict(
        modalities=("us", "labs"), backbone="test_resnet", image_size=SIZE, frozen_stages=0,
        hidden=(8,), head_pool="avg", embed_dim=8, num_classes=3,
        encoders={"labs": {"name": "tabular", "columns": list(COLUMNS), "hidden": [16],
                           "out_features": 6}},
    )
    return ModelConfig(**{**base, **changes})


def batch(seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    labs = torch.randn(4, len(COLUMNS), generator=g)
    labs[0, 1] = NAN  # one value missing
    labs[1] = NAN  # every value missing
    labs[2, 0] = labs[2, 3] = NAN
    return {"us": torch.randn(4, 3, SIZE, SIZE, generator=g), "labs": labs}


def test_the_tabular_encoder_is_built_from_the_config() -> None:
    torch.manual_seed(0)
    model = create_model(config())
    encoder = model.encoders["labs"]
    assert isinstance(encoder, TabularEncoder)
    assert encoder.columns == COLUMNS and encoder.out_features == 6
    linears = [m for m in encoder.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 6)]  # 2F inputs
    assert model.fusion.embedders["labs"].proj.in_features == 6  # a linear embedding of the vector
    assert model.head.branch_heads["labs"].in_features == 6  # a single-modal head on the vector


def test_nans_in_the_tabular_input_give_finite_outputs() -> None:
    torch.manual_seed(0)
    model = create_model(config()).eval()
    with torch.no_grad():
        out = model(batch())
    assert torch.isfinite(out.probs).all()
    assert all(torch.isfinite(z).all() for z in out.logits.values())
    assert set(out.logits) == {"us", "labs", "joint"}
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(4))


def test_the_missing_value_mask_enters_the_first_layer() -> None:
    """A row of NaNs is the input [0, 0, 0, 0, 1, 1, 1, 1]; a row of zeros is [0] * 8."""
    torch.manual_seed(0)
    encoder = TabularEncoder(COLUMNS, hidden=(5,), out_features=3)
    rows = torch.tensor([[NAN] * 4, [0.0] * 4, [2.0, NAN, -1.0, 0.5]])
    prepared = encoder.prepare(rows)
    assert prepared.tolist() == [
        [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [2.0, 0.0, -1.0, 0.5, 0.0, 1.0, 0.0, 0.0],
    ]
    first = encoder.mlp[0]
    by_hand = first.bias + first.weight[:, 4:].sum(dim=1)  # W @ [0, 0, 0, 0, 1, 1, 1, 1] + b
    torch.testing.assert_close(first(prepared[0]), by_hand)
    torch.testing.assert_close(first(prepared[1]), first.bias)  # zeros measured: the bias alone
    assert not torch.allclose(first(prepared[0]), first(prepared[1]))  # missing != measured 0
    with torch.no_grad():
        torch.testing.assert_close(encoder(rows), encoder.mlp(prepared))


def test_standardisation_before_the_mask() -> None:
    encoder = TabularEncoder(("a", "b"), mean=[10.0, 0.0], std=[2.0, 4.0])
    prepared = encoder.prepare(torch.tensor([[14.0, NAN], [NAN, -8.0]]))
    assert prepared.tolist() == [[2.0, 0.0, 0.0, 1.0], [0.0, -2.0, 1.0, 0.0]]


def test_tabular_inputs_and_arguments_are_checked() -> None:
    model = create_model(config())
    x = batch()
    with pytest.raises(ValueError, match=r"inputs\['labs'\]: expected 4 columns \['age', 'ast', "
                                         r"'alt', 'platelets'\] \(\[B, 4\]\), got shape \(4, 3\)"):
        model({**x, "labs": x["labs"][:, :3]})
    with pytest.raises(ValueError, match=r"inputs\['labs'\]: expected a 2-D tensor"):
        model({**x, "labs": x["labs"][:, :, None]})
    with pytest.raises(TypeError, match=r"x: expected a floating-point tensor"):
        model.encoders["labs"](torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="columns: expected a non-empty sequence of distinct"):
        TabularEncoder("age")
    with pytest.raises(ValueError, match="columns: expected a non-empty sequence of distinct"):
        TabularEncoder(("a", "a"))
    with pytest.raises(ValueError, match="hidden: expected a sequence of positive ints"):
        TabularEncoder(("a",), hidden=(0,))
    with pytest.raises(ValueError, match="out_features: expected a positive int"):
        TabularEncoder(("a",), out_features=True)
    with pytest.raises(ValueError, match=r"std: expected 2 finite positive numbers"):
        TabularEncoder(("a", "b"), std=[1.0, 0.0])
    with pytest.raises(ValueError, match=r"weights\['labs'\]: the 'tabular' encoder of 'labs' takes "
                                         "no weights"):
        build_model(config(), weights={"labs": "weights.safetensors"})


def test_a_tabular_only_model_has_a_head_on_the_vector() -> None:
    torch.manual_seed(0)
    cfg = config(modalities=("labs",), head_pool="flatten",
                 encoders={"labs": {"name": "tabular", "columns": list(COLUMNS)}})
    model = create_model(cfg).eval()
    assert model.fusion is None and model.head.branch_heads["labs"].in_features == 64
    with torch.no_grad():
        probs = model({"labs": batch()["labs"]}).probs
    assert probs.shape == (4, 3) and torch.isfinite(probs).all()


def test_trains_a_step_saves_and_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(config()).train()
    loss_fn = build_loss(model.config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x, y = batch(), torch.tensor([0, 1, 2, 1])
    out = model(x)
    loss = loss_fn(out.logits, y, out.features, out.available).total
    assert math.isfinite(loss.item())
    loss.backward()
    grad = model.encoders["labs"].mlp[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    optimizer.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "encoders.labs.mlp.0.weight" in changed and "fusion.embedders.labs.proj.weight" in changed

    model.eval().save_pretrained(tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    assert loaded.config.encoder("labs")["columns"] == list(COLUMNS)
    with torch.no_grad():
        a, b = model(x), loaded(x)
        assert torch.equal(a.probs, b.probs)
        # the tabular modality absent for some samples: its placeholder travels too
        available = {"labs": torch.tensor([True, False, True, False])}
        assert torch.equal(model(x, available).probs, loaded(x, available).probs)


def test_onnx_export_with_an_availability_input_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from mmfusion.export import to_onnx

    torch.manual_seed(0)
    model = create_model(config()).eval()
    path = to_onnx(model, tmp_path / "m.onnx", image_size=SIZE, availability_input=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name: i.shape for i in session.get_inputs()}
    assert list(inputs) == ["us", "labs", "available"]
    assert inputs["labs"][1:] == [len(COLUMNS)] and inputs["us"][1:] == [3, SIZE, SIZE]
    x = batch(seed=3)
    available = torch.tensor([[True, True], [True, False], [True, True], [False, True]])
    feeds = {"us": x["us"].numpy(), "labs": x["labs"].numpy(), "available": available.numpy()}
    (probs,) = session.run(None, feeds)
    with torch.no_grad():
        expected = model(x, {"us": available[:, 0], "labs": available[:, 1]}).probs
    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5, rtol=1e-4)
