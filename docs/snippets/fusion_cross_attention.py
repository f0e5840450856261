"""Cross-attention fusion (MulT-style): each modality's tokens attend to the others'."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

features = {"us": FeatureSpec("map", 32, (4, 4)), "labs": FeatureSpec("vector", 8)}
fusion = create_fusion("cross_attention", features, embed_dim=16, dim=32, heads=4)
x = {"us": torch.randn(2, 32, 4, 4), "labs": torch.randn(2, 8)}
out = fusion(x, available={"labs": torch.tensor([True, False])}, return_attention=True)
print(tuple(out.fused.shape), tuple(out.attention["us"].shape))  # (2, 32) (2, 1, 4, 4)
