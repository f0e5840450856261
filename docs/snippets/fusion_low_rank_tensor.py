"""Low-rank tensor fusion (Liu et al. 2018) of a B-mode map and a lab vector."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

specs = {"us": FeatureSpec("map", 32, (4, 4)), "labs": FeatureSpec("vector", 6)}
fusion = create_fusion("low_rank_tensor", specs, embed_dim=16, rank=4).eval()
x = {"us": torch.randn(3, 32, 4, 4), "labs": torch.randn(3, 6)}
no_labs = {"labs": torch.tensor([True, False, True])}  # sample 1: z_labs = [0, ..., 1]
out = fusion(x, no_labs)
print(tuple(out.fused.shape), sorted(n for n, _ in fusion.factors.named_parameters()))
