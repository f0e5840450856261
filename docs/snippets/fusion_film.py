"""FiLM/DAFT: an image's map scaled and shifted per channel from a tabular vector."""

import torch

from mmfusion.nn import FeatureSpec, create_fusion

specs = {"us": FeatureSpec("map", 96, (2, 2)), "labs": FeatureSpec("vector", 6)}
fusion = create_fusion("film", specs, embed_dim=16)  # stage=2: inside the encoder
features = {"us": torch.randn(2, 96, 2, 2), "labs": torch.randn(2, 6)}
no_labs = {"labs": torch.tensor([True, False])}  # sample 1: gamma = 1, beta = 0
out = fusion(features, available=no_labs)
print(fusion.targets, tuple(out.fused.shape))
