"""Encoders of different timm families in one model: a CNN for US, a ViT for SWE."""

import torch

import mmfusion as mf

SIZE = 64  # the ViT is built for this size (img_size); ResNet takes any size
encoders = {
    "us": mf.ModalityEncoder("test_resnet", frozen_stages=3),  # [B, 96, 2, 2] at 64 px
    # [B, 64, 4, 4]
    "swe": mf.ModalityEncoder("test_vit", frozen_stages=2, img_size=SIZE),
}
shapes = {m: enc.feature_shape(SIZE) for m, enc in encoders.items()}
channels = {m: c for m, (c, _, _) in shapes.items()}  # per modality: {"us": 96, ...}
# 32 divides both channel counts
fusion = mf.AttentionFusion(channels, embed_dim=32, reduced_channels=(32, 16))
branches = {
    m: mf.ClassifierHead(c * h * w, 5, hidden=(16,)) for m, (c, h, w) in shapes.items()
}
head = mf.EnsembleHead(branches, mf.ClassifierHead(fusion.out_features, 5))
model = mf.MultiModalClassifier(encoders, fusion, head)

images = {m: torch.randn(2, 3, SIZE, SIZE) for m in encoders}
out = model(images, return_attention=True)
attention = {m: tuple(a.shape) for m, a in out.attention.items()}
print(shapes, tuple(out.probs.shape), attention)
