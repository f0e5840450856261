"""ModalityEncoder: output shapes, frozen stages, BatchNorm statistics, local weight files."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmfusion import ModalityEncoder


def test_output_shape_and_attributes():
    enc = ModalityEncoder("test_resnet", frozen_stages=0)
    out = enc(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, enc.out_channels, 2, 3)
    assert enc.reduction == 32 and enc.num_stages == 4
    assert enc.feature_shape(64) == (enc.out_channels, 2, 2)


def _stage_params(enc: ModalityEncoder, prefix: str) -> list[torch.nn.Parameter]:
    return [p for n, p in enc.body.named_parameters() if n.startswith(prefix)]


@pytest.mark.parametrize("frozen", [0, 1, 3, 4])
def test_gradients_reach_exactly_the_trainable_stages(frozen):
    enc = ModalityEncoder("test_resnet", frozen_stages=frozen).train()
    out = enc(torch.randn(2, 3, 64, 64))
    if frozen == enc.num_stages:
        assert not out.requires_grad
        return
    out.sum().backward()
    stem = _stage_params(enc, "conv1") + _stage_params(enc, "bn1")
    for p in stem:
        assert (p.grad is None) == (frozen >= 1)
    for stage in range(1, 5):
        params = _stage_params(enc, f"layer{stage}.")
        assert params
        for p in params:
            frozen_here = stage <= frozen
            assert p.requires_grad != frozen_here
            assert (p.grad is None) == frozen_here, f"layer{stage} frozen={frozen}"


def test_frozen_batchnorm_statistics_do_not_change_in_train_mode():
    enc = ModalityEncoder("test_resnet", frozen_stages=3)
    enc.train()
    frozen_bn = [m for m in enc.frozen_modules() for m in m.modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
    trainable_bn = [m for m in enc.body.layer4.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert frozen_bn and trainable_bn
    assert all(not m.training for m in frozen_bn) and all(m.training for m in trainable_bn)
    before = [m.running_mean.clone() for m in frozen_bn]
    before4 = [m.running_mean.clone() for m in trainable_bn]
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    enc(torch.randn(4, 3, 64, 64) * 3 + 1).mean().backward()
    opt.step()
    for b, m in zip(before, frozen_bn, strict=True):
        torch.testing.assert_close(m.running_mean, b)
    assert any(not torch.equal(b, m.running_mean) for b, m in zip(before4, trainable_bn, strict=True))


def test_frozen_prefix_keeps_no_graph_by_default():
    enc = ModalityEncoder("test_resnet", frozen_stages=4)
    assert not enc(torch.randn(1, 3, 64, 64)).requires_grad
    enc.frozen_no_grad = False
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None  # gradients w.r.t. the image flow when asked for


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_and_changes_output(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    random_enc = ModalityEncoder("test_resnet", frozen_stages=0).eval()
    torch.manual_seed(2)
    loaded = ModalityEncoder("test_resnet", weights=path, frozen_stages=0).eval()
    loaded_state = loaded.body.state_dict()
    for key in ("layer1.0.conv1.weight", "layer4.0.conv1.weight", "layer4.0.bn1.running_var"):
        torch.testing.assert_close(loaded_state[key], state[key])
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(loaded(x), random_enc(x))


def test_weights_with_other_keys_fail_clearly(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(path))
    with pytest.raises(ValueError, match="does not fit backbone 'test_resnet'"):
        ModalityEncoder("test_resnet", weights=path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": object()}}, path)
    with pytest.raises(ValueError, match="never unpickles"):
        ModalityEncoder("test_resnet", weights=path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone: unknown timm model 'resnet5000'"):
        ModalityEncoder("resnet5000")
    with pytest.raises(ValueError, match=r"frozen_stages: expected an int in \[0, 4\]"):
        ModalityEncoder("test_resnet", frozen_stages=5)
    with pytest.raises(FileNotFoundError, match="weights: no such file"):
        ModalityEncoder("test_resnet", weights="/nonexistent/w.safetensors")
    enc = ModalityEncoder("test_resnet", frozen_stages=0)
    with pytest.raises(ValueError, match=r"x: expected 3 channels"):
        enc(torch.randn(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        enc(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_single_channel_input():
    enc = ModalityEncoder("test_resnet", in_chans=1, frozen_stages=0)
    assert enc(torch.randn(1, 1, 64, 64)).shape[1] == enc.out_channels


def test_torchvision_resnet_state_dict_loads(tmp_path):
    import torchvision

    torch.manual_seed(3)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_torchvision.pth"
    torch.save(tv.state_dict(), path)
    enc = ModalityEncoder("resnet18", weights=path, frozen_stages=3)
    torch.testing.assert_close(enc.body.state_dict()["layer4.1.conv2.weight"],
                               tv.state_dict()["layer4.1.conv2.weight"])
