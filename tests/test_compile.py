"""torch.compile(fullgraph=True) of the inference path: no graph break, same probabilities.

On CPU the default inductor backend compiles C++ kernels (40-60 s for this tiny model on two
cores), so the suite compiles with ``backend="aot_eager"``: it still traces the whole forward with
TorchDynamo and AOTAutograd in one graph (``fullgraph=True`` raises on any graph break), but runs
it eagerly. The inductor test runs on a CUDA machine, or on CPU with ``MMFUSION_TEST_INDUCTOR=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from mmfusion.export import ProbabilitiesModule
from mmfusion.models import build_loss, create_model

SIZE = 64


def build_model(**overrides: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The paper's registered network with ``overrides``, and its loss."""
    model = create_model("liver_fibrosis_paper", **overrides)
    return model, build_loss(model.config)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def tiny(device: str = "cpu") -> torch.nn.Module:
    """The paper's model (frozen stages under no_grad, attention fusion, ensemble), test_resnet."""
    torch.manual_seed(0)
    model, _ = build_model(backbone="test_resnet", image_size=SIZE, hidden=(16,))
    return model.to(device).eval()


def images(batch: int, device: str = "cpu", names=("us", "swe")) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    return {m: torch.randn(batch, 3, SIZE, SIZE, generator=g).to(device) for m in names}


@pytest.mark.slow
def test_compile_fullgraph_model_matches_eager() -> None:
    model = tiny()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for batch in (2, 3):  # the second size recompiles once, with a symbolic batch axis
            x = images(batch)
            out = compiled(x, return_attention=True)
            ref = model(x, return_attention=True)
            torch.testing.assert_close(out.probs, ref.probs, atol=1e-6, rtol=0)
            for m in ("us", "swe"):
                torch.testing.assert_close(out.attention[m], ref.attention[m], atol=1e-6, rtol=0)
                torch.testing.assert_close(out.logits[m], ref.logits[m], atol=1e-5, rtol=0)


@pytest.mark.slow
def test_compile_fullgraph_training_step_with_modality_dropout() -> None:
    """Modality dropout (with its rescue of samples left with nothing) compiles in one graph."""
    torch.manual_seed(0)
    model, loss_fn = build_model(backbone="test_resnet", image_size=SIZE, hidden=(16,),
                                 modality_dropout=0.9)
    model.train()

    def step(x: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return loss_fn(out.logits, y, out.features, out.available).total

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(images(4), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.slow
def test_compile_fullgraph_positional_wrapper_missing_modality() -> None:
    model = tiny()
    wrapper = ProbabilitiesModule(model, ("swe",)).eval()
    compiled = torch.compile(wrapper, fullgraph=True, backend="aot_eager")
    x = images(2, names=("swe",))["swe"]
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model({"swe": x}).probs, atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("MMFUSION_TEST_INDUCTOR") == "1"),
    reason="inductor on CPU takes 40-60 s; set MMFUSION_TEST_INDUCTOR=1 (or use a GPU)",
)
def test_compile_fullgraph_inductor() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = tiny(device)
    compiled = torch.compile(model, fullgraph=True)
    x = images(2, device)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).probs, model(x).probs, atol=1e-5, rtol=1e-4)
