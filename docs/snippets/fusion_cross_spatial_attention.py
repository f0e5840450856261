"""Cross-modal spatial attention: each attention map reads both registered maps."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

specs = {m: FeatureSpec("map", 96, (2, 2)) for m in ("us", "swe")}  # one field of view
fusion = create_fusion("cross_spatial_attention", specs, embed_dim=16).eval()
x = {m: torch.randn(3, 96, 2, 2) for m in specs}
no_swe = {"swe": torch.tensor([True, False, True])}  # sample 1: no SWE (placeholder)
out = fusion(x, no_swe, return_attention=True)
print(tuple(out.fused.shape), tuple(out.attention["us"].shape))
