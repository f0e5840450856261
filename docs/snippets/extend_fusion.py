"""A fusion of your own: registered by name, built by create_model, saved and loaded."""

import tempfile
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmfusion.models import ModelConfig, build_loss, create_model, from_pretrained
from mmfusion.nn import FeatureSpec, FusionOutput, register_fusion


@register_fusion("gated_sum")
class GatedSumFusion(nn.Module):
    """Each modality -> a gated embed_dim vector; the fused vector is their sum."""

    def __init__(self, features: Mapping[str, FeatureSpec], embed_dim: int = 64,
                 gate_init: float = 0.0) -> None:
        super().__init__()
        self.modalities = tuple(features)  # required: the fusion order
        self.out_features = embed_dim  # required: the size D of the fused vector
        self.proj = nn.ModuleDict(
            {m: nn.Linear(spec.channels, embed_dim) for m, spec in features.items()})
        self.gate = nn.ParameterDict(
            {m: nn.Parameter(torch.full((embed_dim,), gate_init)) for m in features})

    def forward(self, features: Mapping[str, Tensor],
                available: Mapping[str, Tensor] | None = None,
                return_attention: bool = False) -> FusionOutput:
        vectors, fused = {}, 0.0
        for m, x in features.items():  # any non-empty subset of self.modalities
            x = x.mean(dim=(2, 3)) if x.ndim == 4 else x  # a map [B,C,H,W] or a vector
            vectors[m] = self.proj[m](x)  # [B, D]
            weight = torch.sigmoid(self.gate[m])  # [D]
            if available is not None and m in available:  # bool [B]: absent -> 0
                weight = weight * available[m][:, None].to(x.dtype)
            fused = fused + weight * vectors[m]
        return FusionOutput(fused=fused, features=vectors)


config = ModelConfig(
    modalities=("us", "swe"), fusion="gated_sum", fusion_kwargs={"gate_init": 1.0},
    backbone="test_resnet", image_size=64, hidden=(16,), head_pool="avg",
    embed_dim=32, num_classes=3,
)
model = create_model(config)  # create_fusion("gated_sum", features, embed_dim=32, ...)
images = {m: torch.randn(4, 3, 64, 64) for m in config.modalities}
out = model(images)
loss = build_loss(config)(out.logits, torch.tensor([0, 1, 2, 1]), out.features,
                          out.available)
loss.total.backward()  # ensemble loss, eq. (1)-(3), through your fusion

folder = tempfile.mkdtemp()
model.eval().save_pretrained(folder)  # config.json names "gated_sum" and its kwargs
loaded = from_pretrained(folder)  # rebuilt through the registry
swe_missing = {"swe": torch.tensor([True, False, True, False])}  # no SWE for 2 samples
with torch.no_grad():
    probs = model(images, swe_missing).probs
    assert torch.equal(probs, loaded(images, swe_missing).probs)  # identical outputs
print(type(loaded.fusion).__name__, loaded.config.fusion_kwargs, tuple(probs.shape))
