"""Quickstart: compose mmfusion's layers into your own two-modality model; run one training step."""

import torch
from torch import nn

import mmfusion as mf

MODALITIES = ("us", "swe")  # B-mode ultrasound, shear-wave elastography
BACKBONE = "test_resnet"  # a tiny timm ResNet for this demo; the paper uses "resnet50"
encoders = nn.ModuleDict()
for m in MODALITIES:  # one encoder per modality, each with its own weights
    encoders[m] = mf.ModalityEncoder(BACKBONE, frozen_stages=2)
c = encoders["us"].out_channels  # 96 for test_resnet, 2048 for resnet50
fusion = mf.AttentionFusion(c, MODALITIES, embed_dim=32, reduced_channels=(32, 16))
head = mf.EnsembleHead(
    {m: mf.ClassifierHead(c, 5, hidden=(64,), pool="avg") for m in MODALITIES},
    mf.ClassifierHead(fusion.out_features, 5),  # the joint branch, on the fused vector
)
model = nn.ModuleDict({"encoders": encoders, "fusion": fusion, "head": head})
loss_fn = mf.EnsembleLoss(alpha=0.2)  # CE_us + CE_swe + CE_joint + 0.2 * L_C
trainable = [p for p in model.parameters() if p.requires_grad]  # frozen stages left out
optimizer = torch.optim.Adam(trainable, lr=7e-5, weight_decay=1e-3)

images = {m: torch.randn(4, 3, 64, 64) for m in MODALITIES}  # normalised, 64 px
stages = torch.tensor([0, 1, 2, 4])  # fibrosis stages F0..F4 as class indices
model.train()
maps = {m: encoders[m](x) for m, x in images.items()}  # m -> [B, C, h, w]
fused = fusion(maps)  # .fused: [B, 64]; .features: m -> f_m [B, 32]
out = head(maps, fused.fused)  # .logits: branch -> [B, 5]; .probs: [B, 5]
loss = loss_fn(out.logits, stages, features=fused.features)
optimizer.zero_grad()
loss.total.backward()
optimizer.step()
parts = {k: round(v.item(), 3) for k, v in loss.components.items()}
print(f"loss {loss.total.item():.3f}", parts)
