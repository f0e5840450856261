"""Bottleneck fusion (MBT): modalities meet only through shared bottleneck tokens."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

features = {"us": FeatureSpec("map", 32, (4, 4)), "swe": FeatureSpec("map", 32, (4, 4))}
fusion = create_fusion("bottleneck", features, embed_dim=16, dim=32, n_bottleneck=4)
x = {m: torch.randn(2, 32, 4, 4) for m in features}
out = fusion(x, available={"swe": torch.tensor([True, False])})  # sample 1: no SWE
print(tuple(out.fused.shape))  # (2, 48): us, swe (placeholder where absent), bottleneck
