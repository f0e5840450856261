"""ModalityEncoder over timm families: freezing by stage, maps as [B, C, H, W], weight files, and
encoders of different families in one model (fusion, heads, Grad-CAM, ONNX, torch.compile).

Every family runs as a tiny variant (timm's ``test_*`` models, or the smallest model shrunk with
constructor arguments) on 64-pixel images, with random weights.
"""

from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmfusion import (
    AttentionFusion,
    ClassifierHead,
    ConcatFusion,
    EnsembleHead,
    ModalityEncoder,
    MultiModalClassifier,
)

SIZE = 64

# family -> (timm name, constructor arguments that make it tiny)
FAMILIES: dict[str, tuple[str, dict]] = {
    "resnet": ("test_resnet", {}),
    "resnext": ("resnext50_32x4d", dict(layers=(1, 1, 1, 1))),
    "regnet": ("regnetx_002", {}),
    "efficientnet": ("test_efficientnet", {}),
    "mobilenetv3": ("mobilenetv3_small_050", {}),
    "convnext": ("test_convnext", {}),
    "densenet": ("densenet121", dict(growth_rate=8, block_config=(1, 1, 1, 1))),
    "vit": ("test_vit", dict(img_size=SIZE)),
    "deit": ("deit_tiny_distilled_patch16_224",
             dict(img_size=SIZE, depth=4, embed_dim=32, num_heads=2)),
    "swin": ("swin_tiny_patch4_window7_224",
             dict(img_size=SIZE, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                  window_size=2)),
    "vit_hybrid": ("vit_tiny_r_s16_p8_224", dict(img_size=SIZE, depth=3)),
    "pit": ("pit_ti_224", dict(img_size=SIZE, depth=(1, 1, 1))),  # timm's hook wrapper
}


def _owners(names) -> set[str]:
    """Modules (names inside ``body``) that hold the given parameters directly, except those
    that also contain other such modules (a model whose ``pos_embed`` is used inside its own
    forward, which a hook cannot place before or after its children)."""
    owners = {n.rpartition(".")[0] for n in names}
    return {o for o in owners if not any(p.startswith(f"{o}.") for p in owners)}


def _module_run_order(enc: ModalityEncoder, x: torch.Tensor) -> list[tuple[str, str]]:
    """``("start" | "end", module name)`` for every parameter-holding module, in call order."""
    events: list[tuple[str, str]] = []
    handles = []
    for name, module in enc.body.named_modules():
        if next(module.parameters(recurse=False), None) is None:
            continue
        handles.append(module.register_forward_pre_hook(
            lambda _m, _a, n=name: events.append(("start", n))))
        handles.append(module.register_forward_hook(
            lambda _m, _a, _o, n=name: events.append(("end", n))))
    try:
        with torch.no_grad():
            enc(x)
    finally:
        for h in handles:
            h.remove()
    return events


def _saved_tensor_count(fn) -> int:
    count = 0

    def pack(t):
        nonlocal count
        count += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return count


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_freezes_by_stage_and_trains_the_rest(family: str) -> None:
    name, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    start = time.perf_counter()
    probe = ModalityEncoder(name, frozen_stages=0, **kwargs)
    k = probe.num_stages - 1
    assert k >= 2, f"{family}: expected at least 3 stages, got {probe.stage_modules}"
    enc = ModalityEncoder(name, frozen_stages=k, **kwargs).train()

    # Output: channels first, the reported channels and spatial size, for any family.
    c, h, w = enc.feature_shape(SIZE)
    assert (c, h, w) == (enc.out_channels, SIZE // enc.reduction, SIZE // enc.reduction)
    x = torch.randn(2, 3, SIZE, SIZE)
    out = enc(x)
    assert out.shape == (2, c, h, w)

    # The frozen part is a prefix of the forward pass: it finishes before any trainable module.
    frozen = dict(enc.frozen_parameters())
    assert frozen and all(not p.requires_grad for p in frozen.values())
    frozen_ids = {id(p) for p in frozen.values()}
    assert all(id(p) in frozen_ids for p in enc.stage(k).parameters())  # stage k: frozen
    assert not any(id(p) in frozen_ids for p in enc.stage(k + 1).parameters())  # k + 1: not
    trainable = {n: p for n, p in enc.body.named_parameters() if n not in frozen}
    assert trainable and all(p.requires_grad for p in trainable.values())
    events = _module_run_order(enc, x)
    frozen_owners, trainable_owners = _owners(frozen), _owners(trainable) - _owners(frozen)
    last_frozen = max(i for i, (_, n) in enumerate(events) if n in frozen_owners)
    first_trainable = min(
        i for i, (kind, n) in enumerate(events) if kind == "start" and n in trainable_owners
    )
    assert last_frozen < first_trainable, f"{family}: {events[first_trainable]} runs too early"
    assert all(not m.training for f in enc.frozen_modules() for m in f.modules())

    # One training step: frozen weights and buffers stay, the last stage changes.
    state = {n: t.clone() for n, t in enc.body.state_dict().items()}
    opt = torch.optim.SGD(list(trainable.values()), lr=0.5)
    (enc(torch.randn(4, 3, SIZE, SIZE) * 2 + 1) ** 2).mean().backward()
    assert all(p.grad is None for p in frozen.values())
    later_stages = [p for i in range(k + 1, enc.num_stages + 1) for p in enc.stage(i).parameters()]
    assert later_stages and all(p.grad is not None for p in later_stages)
    opt.step()
    after = enc.body.state_dict()
    frozen_prefixes = tuple(f"{n}." for n in enc._frozen_module_names)
    frozen_keys = [n for n in state if n in frozen or n.startswith(frozen_prefixes)]
    assert frozen_keys
    for key in frozen_keys:
        assert torch.equal(after[key], state[key]), f"{family}: frozen {key} changed"
    last_stage = {id(p) for p in enc.stage(enc.num_stages).parameters()}
    changed = [n for n, p in trainable.items()
               if id(p) in last_stage and not torch.equal(p, state[n])]
    assert changed, f"{family}: the last stage did not change"
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("family", [
    pytest.param(f, marks=pytest.mark.xfail(strict=True, reason=(
        "timm's hook wrapper runs all of PiT, so its final norm and classifier (after the last "
        "stage, trainable, unused) record a graph"))) if f == "pit" else f
    for f in FAMILIES
])
def test_family_fully_frozen_records_no_graph(family: str) -> None:
    """All stages frozen: nothing is saved for backward even when the input asks for gradients."""
    name, kwargs = FAMILIES[family]
    enc = ModalityEncoder(name, frozen_stages=0, **kwargs)
    enc = ModalityEncoder(name, frozen_stages=enc.num_stages, **kwargs).train()
    x = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
    outputs = []
    assert _saved_tensor_count(lambda: outputs.append(enc(x))) == 0
    assert not outputs[0].requires_grad
    enc.frozen_no_grad = False  # the naive path keeps the graph (and its activations)
    assert _saved_tensor_count(lambda: outputs.append(enc(x))) > 0
    assert outputs[1].requires_grad


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_loads_a_local_weights_file(tmp_path, family: str) -> None:
    name, kwargs = FAMILIES[family]
    torch.manual_seed(1)
    source = {k: v.detach().clone().contiguous()
              for k, v in timm.create_model(name, pretrained=False, **kwargs).state_dict().items()}
    path = tmp_path / f"{family}.safetensors"
    save_file(source, str(path))
    torch.manual_seed(2)
    enc = ModalityEncoder(name, weights=path, frozen_stages=2, **kwargs)
    loaded = enc.body.state_dict()
    for key, tensor in loaded.items():
        spellings = (key, key.removeprefix("model."), key.removeprefix("body."), *_flattened(key))
        match = [c for c in spellings if c in source]
        assert match, f"{family}: {key} has no source tensor"
        torch.testing.assert_close(tensor, source[match[0]], rtol=0, atol=0)
    # strict: a file without one of the feature extractor's tensors is refused
    del source[next(k for k in source if "norm" in k or "bn" in k)]
    save_file(source, str(path))
    with pytest.raises(ValueError, match=f"does not fit backbone '{name}'"):
        ModalityEncoder(name, weights=path, frozen_stages=0, **kwargs)


def _flattened(key: str) -> list[str]:
    """``stages_0.x`` -> ``stages.0.x`` (timm's sequential wrappers flatten one level)."""
    head, _, rest = key.partition(".")
    return [f"{head[:i]}.{head[i + 1:]}.{rest}" for i, c in enumerate(head) if c == "_"]


@pytest.mark.parametrize(
    ("name", "last_frozen", "stages"),
    [
        ("efficientnet_b0", "blocks.2", ("blocks.1", "blocks.2", "blocks.4", "blocks.6")),
        ("mobilenetv3_small_100", "blocks.1", ("blocks.0", "blocks.1", "blocks.3", "blocks.5")),
        ("vit_tiny_patch16_224", "model.blocks.10", ("blocks.9", "blocks.10", "blocks.11")),
    ],
)
def test_issue_constructors_freeze_two_stages(name: str, last_frozen: str, stages: tuple) -> None:
    enc = ModalityEncoder(name, frozen_stages=2)
    assert enc.stage_modules == stages
    assert enc._frozen_module_names[-1] == last_frozen
    frozen = dict(enc.frozen_parameters())
    if name.startswith("vit"):
        assert {"model.cls_token", "model.pos_embed"} <= set(frozen)
        assert any(n.startswith("model.patch_embed.") for n in frozen)
        assert all(p.requires_grad for n, p in enc.body.named_parameters()
                   if n.startswith("model.blocks.11."))
    assert sum(not p.requires_grad for p in enc.parameters()) == len(frozen)


def test_stage_chains_that_are_not_a_prefix_are_refused() -> None:
    # CrossViT's two feature levels come from one module (two token streams of blocks.2).
    enc = ModalityEncoder("crossvit_tiny_240", frozen_stages=0, depth=((1, 1, 0),) * 3)
    assert enc.stage_modules == ("blocks.2", "blocks.2")
    with pytest.raises(ValueError, match="not one chain of distinct modules"):
        ModalityEncoder("crossvit_tiny_240", frozen_stages=1, depth=((1, 1, 0),) * 3)


def test_stage_ending_inside_a_block_is_refused() -> None:
    # Xception's stages 1-3 are taps inside a block whose shortcut is defined before its main
    # branch but runs after it: no prefix of the definition order ends there.
    enc = ModalityEncoder("xception41", frozen_stages=4)
    assert enc.stage_modules[:2] == ("blocks.1.stack.act3", "blocks.2.stack.act3")
    with pytest.raises(ValueError, match=(
        r"frozen_stages: stage 1 of 'xception41' ends inside a block \('blocks.1.stack.act3', "
        r"a feature tap of XceptionModule\)"
    )):
        ModalityEncoder("xception41", frozen_stages=1)


def test_feature_info_naming_a_missing_module_is_refused() -> None:
    # Twins' feature_info names "block.0" .. "block.3"; the model's stages are "blocks.0" ...
    tiny = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    enc = ModalityEncoder("twins_svt_small", frozen_stages=0, **tiny)
    if enc.stage_modules[0] != "block.0":
        pytest.skip(f"timm now names the stages of Twins {enc.stage_modules}")
    with pytest.raises(ValueError, match="names the stage module 'block.0', which its "):
        ModalityEncoder("twins_svt_small", frozen_stages=1, **tiny)
    with pytest.raises(ValueError, match=r"^index: timm's feature_info of 'twins_svt_small'"):
        enc.stage(1)


def test_stage_accessor() -> None:
    enc = ModalityEncoder("test_resnet", frozen_stages=0)
    assert enc.stage(4) is enc.body.layer4
    with pytest.raises(ValueError, match=r"index: expected an int in \[1, 4\], got 5"):
        enc.stage(5)


# ---- encoders of different families in one model -------------------------------------------

MIXED = {  # modality -> (timm name, arguments): channels 96 / 64 / 128, maps 2x2 / 4x4 / 2x2
    "us": ("test_resnet", {}),
    "swe": ("test_vit", dict(img_size=SIZE)),
    "doppler": FAMILIES["swin"],
}


def _mixed_model(fusion_kind: str = "attention") -> MultiModalClassifier:
    torch.manual_seed(0)
    encoders = {m: ModalityEncoder(n, frozen_stages=2, **kw) for m, (n, kw) in MIXED.items()}
    shapes = {m: e.feature_shape(SIZE) for m, e in encoders.items()}
    assert len({s for s in shapes.values()}) == 3  # different channels and sizes
    channels = {m: s[0] for m, s in shapes.items()}
    fusion = (AttentionFusion(channels, embed_dim=16, reduced_channels=(32, 16))
              if fusion_kind == "attention" else ConcatFusion(channels, embed_dim=16))
    heads = {m: ClassifierHead(c * h * w, 5, hidden=(8,)) for m, (c, h, w) in shapes.items()}
    return MultiModalClassifier(encoders, fusion, EnsembleHead(heads, ClassifierHead(48, 5)))


def _mixed_inputs(batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    return {m: torch.randn(batch, 3, SIZE, SIZE, generator=g) for m in MIXED}


@pytest.mark.parametrize("fusion_kind", ["attention", "concat"])
def test_mixed_encoders_train_in_one_model(fusion_kind: str) -> None:
    model = _mixed_model(fusion_kind).train()
    out = model(_mixed_inputs(3), return_attention=True)
    assert out.probs.shape == (3, 5)
    assert set(out.logits) == {"us", "swe", "doppler", "joint"}
    if fusion_kind == "attention":
        assert {m: tuple(a.shape) for m, a in out.attention.items()} == {
            "us": (3, 1, 2, 2), "swe": (3, 1, 4, 4), "doppler": (3, 1, 2, 2)}
    sum(z.logsumexp(1).mean() for z in out.logits.values()).backward()
    for name, enc in model.encoders.items():
        last = list(enc.stage(enc.num_stages).parameters())
        assert all(p.grad is not None for p in last), name


def test_mixed_encoders_grad_cam() -> None:
    from mmfusion.explain import grad_cam

    model = _mixed_model()
    cams = grad_cam(model, _mixed_inputs())
    assert {m: tuple(c.shape) for m, c in cams.items()} == {m: (2, SIZE, SIZE) for m in MIXED}
    assert all(torch.isfinite(c).all() for c in cams.values())


@pytest.mark.slow  # about 25 s on a 2-core CPU: three dynamo exports
def test_mixed_encoders_export_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from mmfusion.export import OnnxPredictor, to_onnx

    model = _mixed_model().eval()
    path = to_onnx(model, tmp_path / "mixed.onnx", image_size=SIZE)
    x = _mixed_inputs(3)
    with torch.no_grad():
        expected = model(x).probs.numpy()
    got = OnnxPredictor(path)({m: t.numpy() for m, t in x.items()})
    assert got.shape == (3, 5)
    assert abs(got - expected).max() < 1e-4


@pytest.mark.slow  # about 10 s on a 2-core CPU
def test_mixed_encoders_compile_in_one_graph() -> None:
    """torch.compile(fullgraph=True) traces ResNet, ViT and Swin encoders without a graph break
    (backend aot_eager: Dynamo and AOTAutograd, no C++ kernels to build on a CPU)."""
    torch._dynamo.reset()
    model = _mixed_model().eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = _mixed_inputs()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).probs, model(x).probs, atol=1e-6, rtol=0)
    torch._dynamo.reset()
