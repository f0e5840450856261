"""Gated multimodal unit (Arevalo et al. 2017): softmax gates over the modalities."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

specs = {"us": FeatureSpec("map", 96, (2, 2)), "labs": FeatureSpec("vector", 6)}
fusion = create_fusion("gated", specs, embed_dim=16).eval()
x = {"us": torch.randn(3, 96, 2, 2), "labs": torch.randn(3, 6)}
no_labs = {"labs": torch.tensor([True, False, True])}  # sample 1: gate of "us" is 1
gates = fusion.gates(x, no_labs)  # [B, M, embed_dim], 0 for an absent modality
print(tuple(fusion(x, no_labs).fused.shape), gates[1, :, 0].tolist())
