"""The contract of every method of the fusion catalogue (issue 27), run over each registered name.

Per method: shapes and finite outputs over generated modality counts, kinds and sizes
(hypothesis); a sample's output does not depend on the other samples of its batch; a modality
flagged absent for a sample gives that sample exactly what leaving the modality out gives
(masked == absent); ONNX export with the availability input matches PyTorch; torch.compile
(fullgraph) where the method declares it; one epoch of training through ``create_model`` on the
phantom. Each method's own file (``tests/test_fusion27_<name>.py``) checks its formula by hand.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from mmfusion.nn import FeatureSpec, create_fusion
from mmfusion.nn.registry import get_fusion, list_fusions

CATALOGUE = (
    "attention",
    "late",
    "cross_spatial_attention",
    "gated",
    "low_rank_tensor",
    "film",
    "cross_attention",
    "bottleneck",
    "perceiver",
    "evidential",
)
NUM_CLASSES = 3


def _traits(name: str) -> dict[str, object]:
    cls = get_fusion(name)
    return {
        "kinds": tuple(getattr(cls, "kinds", ("map", "vector"))),
        "min": int(getattr(cls, "min_modalities", 1)),
        "max": getattr(cls, "max_modalities", None),
        "compiles": bool(getattr(cls, "compiles", True)),
    }


def build(name: str, specs: dict[str, FeatureSpec], embed_dim: int = 8) -> nn.Module:
    """The fusion ``name`` over ``specs`` in eval mode, with a fixed initialisation."""
    torch.manual_seed(0)
    extra = {"num_classes": NUM_CLASSES} if "num_classes" in inspect.signature(
        get_fusion(name)).parameters else {}
    fusion = create_fusion(name, specs, embed_dim=embed_dim, **extra)
    with torch.no_grad():  # move learned placeholders and null tokens off zero
        for pname, param in fusion.named_parameters():
            if param.abs().sum() == 0 and "bias" not in pname:
                param.normal_(0.0, 0.3)
    return fusion.eval()


def default_specs(name: str) -> dict[str, FeatureSpec]:
    """Two maps (one size) and, where the method takes vectors, a vector; M within its limits."""
    traits = _traits(name)
    specs = {"us": FeatureSpec("map", 12, (3, 3)), "swe": FeatureSpec("map", 8, (3, 3))}
    if "vector" in traits["kinds"] and (traits["max"] is None or traits["max"] >= 3):
        specs["labs"] = FeatureSpec("vector", 5)
    if "map" not in traits["kinds"]:
        specs = {"a": FeatureSpec("vector", 6), "b": FeatureSpec("vector", 4)}
    return specs


def inputs(specs: dict[str, FeatureSpec], batch: int, seed: int = 1) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for m, spec in specs.items():
        shape = (batch, spec.channels, *spec.spatial) if spec.kind == "map" else (batch, spec.channels)
        out[m] = torch.randn(shape, generator=gen)
    return out


def random_masks(modalities: tuple[str, ...], batch: int, seed: int) -> dict[str, Tensor]:
    """Per-sample presence with at least one present modality per sample."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, len(modalities), generator=gen) < 0.6
    empty = ~mask.any(dim=1)
    mask[empty, torch.randint(len(modalities), (int(empty.sum()),), generator=gen)] = True
    return {m: mask[:, j] for j, m in enumerate(modalities)}


@pytest.mark.parametrize("name", CATALOGUE)
def test_every_catalogue_method_is_registered_and_described(name: str) -> None:
    assert name in list_fusions()
    cls = get_fusion(name)
    for attr in ("reference", "missing"):
        assert isinstance(getattr(cls, attr, None), str) and getattr(cls, attr).strip(), attr


@pytest.mark.parametrize("name", CATALOGUE)
def test_a_sample_does_not_depend_on_the_other_samples_of_its_batch(name: str) -> None:
    specs = default_specs(name)
    fusion = build(name, specs)
    x = inputs(specs, batch=4)
    with torch.no_grad():
        together = fusion(x).fused
        for i in range(4):
            alone = fusion({m: t[i:i + 1] for m, t in x.items()}).fused
            torch.testing.assert_close(together[i:i + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CATALOGUE)
def test_masked_equals_absent(name: str) -> None:
    """A sample flagged absent for a modality gets what leaving that modality out gives."""
    specs = default_specs(name)
    fusion = build(name, specs)
    x = inputs(specs, batch=6)
    masks = random_masks(tuple(specs), 6, seed=3)
    with torch.no_grad():
        masked = fusion(x, masks).fused
        assert torch.isfinite(masked).all()
        for i in range(6):
            present = [m for m in specs if bool(masks[m][i])]
            alone = fusion({m: x[m][i:i + 1] for m in present}).fused
            torch.testing.assert_close(masked[i:i + 1], alone, atol=1e-5, rtol=1e-5)
        # what a masked sample's tensor holds is never read: huge values, NaN
        for junk in (1e6, float("nan")):
            noisy = {m: torch.where(masks[m].view(-1, *([1] * (t.ndim - 1))), t,
                                    torch.full_like(t, junk)) for m, t in x.items()}
            out = fusion(noisy, masks)
            torch.testing.assert_close(out.fused, masked, atol=1e-5, rtol=1e-5)
            for m, vector in out.features.items():  # features of present samples are finite
                assert torch.isfinite(vector[masks[m]]).all(), m


@st.composite
def catalogue_case(draw: st.DrawFn, name: str) -> tuple[dict[str, FeatureSpec], int, int]:
    traits = _traits(name)
    most = 3 if traits["max"] is None else min(3, int(traits["max"]))
    count = draw(st.integers(min_value=max(1, traits["min"]), max_value=max(most, traits["min"])))
    side = draw(st.integers(min_value=2, max_value=4))
    specs: dict[str, FeatureSpec] = {}
    for j in range(count):
        kind = draw(st.sampled_from(traits["kinds"]))
        if kind == "map":
            specs[f"m{j}"] = FeatureSpec("map", draw(st.sampled_from([4, 8, 12, 16])), (side, side))
        else:
            specs[f"m{j}"] = FeatureSpec("vector", draw(st.integers(min_value=3, max_value=16)))
    return specs, draw(st.integers(min_value=1, max_value=3)), draw(st.sampled_from([8, 16]))


@pytest.mark.parametrize("name", CATALOGUE)
def test_shapes_and_finiteness_over_modality_counts_kinds_and_sizes(name: str) -> None:
    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=catalogue_case(name), seed=st.integers(0, 2**16))
    def check(case: tuple[dict[str, FeatureSpec], int, int], seed: int) -> None:
        specs, batch, embed_dim = case
        fusion = build(name, specs, embed_dim)
        x = inputs(specs, batch, seed)
        masks = random_masks(tuple(specs), batch, seed)
        with torch.no_grad():
            for avail in (None, masks):
                out = fusion(x, avail)
                assert out.fused.shape == (batch, fusion.out_features)
                assert torch.isfinite(out.fused).all()
                assert set(out.features) <= set(specs)
                for vector in out.features.values():
                    assert vector.shape[0] == batch and torch.isfinite(vector).all()
            first = next(iter(specs))
            if len(specs) > 1:  # a modality left out for every sample
                out = fusion({m: t for m, t in x.items() if m != first})
                assert out.fused.shape == (batch, fusion.out_features)
                assert first not in out.features

    check()


class _Positional(nn.Module):
    """Tensors in modality order plus a ``[B, M]`` bool mask -> the fused vector."""

    def __init__(self, fusion: nn.Module) -> None:
        super().__init__()
        self.fusion = fusion
        self.names = tuple(fusion.modalities)

    def forward(self, *args: Tensor) -> Tensor:
        *tensors, mask = args
        available = {m: mask[:, j] for j, m in enumerate(self.names)}
        return self.fusion(dict(zip(self.names, tensors, strict=True)), available).fused


@pytest.mark.parametrize("name", CATALOGUE)
def test_onnx_export_with_the_availability_input_matches_pytorch(name: str, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="needs the mmfusion[export] extra")
    pytest.importorskip("onnxscript", reason="needs the mmfusion[export] extra")
    specs = default_specs(name)
    wrapper = _Positional(build(name, specs)).eval()
    x = inputs(specs, batch=4)
    mask = torch.stack(list(random_masks(tuple(specs), 4, seed=5).values()), dim=1)
    args = (*x.values(), mask)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(wrapper, args, str(path), dynamo=True, verbose=False,
                      input_names=[*specs, "available"], output_names=["fused"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for trial_mask in (mask, torch.ones_like(mask)):
        feeds = {m: t.numpy() for m, t in x.items()} | {"available": trial_mask.numpy()}
        got = session.run(None, feeds)[0]
        with torch.no_grad():
            want = wrapper(*x.values(), trial_mask).numpy()
        assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("name", CATALOGUE)
def test_torch_compile_fullgraph_matches_eager(name: str) -> None:
    if not _traits(name)["compiles"]:
        pytest.skip(f"{name} declares that it does not compile in one graph (see its docstring)")
    specs = default_specs(name)
    wrapper = _Positional(build(name, specs)).eval()
    x = inputs(specs, batch=3)
    mask = torch.stack(list(random_masks(tuple(specs), 3, seed=7).values()), dim=1)
    torch._dynamo.reset()
    compiled = torch.compile(wrapper, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*x.values(), mask), wrapper(*x.values(), mask),
                                   atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def phantom_data(tiny_manifest: Path) -> object:
    """One data module (the tiny phantom, 64 px) shared by the one-epoch runs."""
    pytest.importorskip("lightning.pytorch", reason="needs the mmfusion[lightning] extra")
    from mmfusion.lightning import FusionDataModule
    from mmfusion.liver import METAVIR

    return FusionDataModule(tiny_manifest, ("us", "swe"), 64, 8, test_size=0.5, labels=METAVIR)


@pytest.mark.parametrize("name", CATALOGUE)
def test_trains_one_epoch_on_the_phantom_through_create_model(name: str, phantom_data: object,
                                                               tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from mmfusion.lightning import FusionModule
    from mmfusion.models import create_model, get_preset

    torch.manual_seed(0)
    model = create_model("liver_fibrosis_quick", fusion=name, backbone="test_resnet",
                         image_size=64, hidden=(16,), embed_dim=16)
    before = {k: v.clone() for k, v in model.fusion.state_dict().items()}
    training = get_preset("liver_fibrosis_quick").training.replace(batch_size=8, epochs=1)
    module = FusionModule(model, training=training, n_bootstrap=10)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path),
                         use_distributed_sampler=False, limit_val_batches=0)
    trainer.fit(module, datamodule=phantom_data)
    assert np.isfinite(module.history[0]["loss"])
    after = model.fusion.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())
    model.eval()
    with torch.no_grad():
        out = model({m: torch.randn(2, 3, 64, 64) for m in ("us", "swe")})
    torch.testing.assert_close(out.probs.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", CATALOGUE)
def test_save_pretrained_and_from_pretrained_give_the_same_model(name: str, tmp_path: Path) -> None:
    from mmfusion.models import create_model, from_pretrained

    torch.manual_seed(0)
    kwargs = {"stage": 2} if name == "film" else {}
    model = create_model("liver_fibrosis_quick", fusion=name, backbone="test_resnet",
                         image_size=64, hidden=(16,), embed_dim=16, fusion_kwargs=kwargs).eval()
    with torch.no_grad():  # move zero-initialised parameters (placeholders, last layers) off zero
        for param in model.fusion.parameters():
            param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path).eval()
    assert loaded.config.fusion == name and loaded.config.fusion_kwargs == kwargs
    x = {m: torch.randn(3, 3, 64, 64) for m in ("us", "swe")}
    available = {"swe": torch.tensor([True, False, True])}
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, available).probs, model(x, available).probs)
