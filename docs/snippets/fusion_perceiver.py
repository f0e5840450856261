"""Perceiver latent fusion (Jaegle et al. 2021): 8 latents attend to the tokens."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

specs = {"us": FeatureSpec("map", 96, (2, 2)), "swe": FeatureSpec("map", 96, (2, 2))}
fusion = create_fusion("perceiver", specs, embed_dim=16).eval()  # latents [8, 64]
x = {m: torch.randn(3, 96, 2, 2) for m in specs}
no_swe = {"swe": torch.tensor([True, False, True])}  # sample 1: SWE weight 0
out = fusion(x, no_swe, return_attention=True)  # attention: m -> [B, 1, H, W]
print(tuple(out.fused.shape), out.attention["swe"][1].sum().item())  # (3, 16) 0.0
