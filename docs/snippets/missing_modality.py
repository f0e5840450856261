"""Missing modalities: the ready-made container, modality dropout, and prediction without SWE."""

import torch

import mmfusion as mf

MODALITIES = ("us", "swe")
encoders = {m: mf.ModalityEncoder("test_resnet", frozen_stages=2) for m in MODALITIES}
c = encoders["us"].out_channels
fusion = mf.AttentionFusion(c, MODALITIES, embed_dim=32, reduced_channels=(32, 16))
head = mf.EnsembleHead(
    {m: mf.ClassifierHead(c, 5, pool="avg") for m in MODALITIES},
    mf.ClassifierHead(fusion.out_features, 5),
)
# Hide each modality for 30% of the training samples (never both at once).
model = mf.MultiModalClassifier(encoders, fusion, head, modality_dropout=0.3)
loss_fn = mf.EnsembleLoss(alpha=0.2)

images = {m: torch.randn(4, 3, 64, 64) for m in MODALITIES}
stages = torch.tensor([0, 1, 2, 4])
model.train()
out = model(images)  # out.available: m -> bool [B], what modality dropout left visible
loss = loss_fn(out.logits, stages, features=out.features, available=out.available)
loss.total.backward()

model.eval()
with torch.no_grad():
    us_only = model({"us": images["us"]})  # no SWE: a learned placeholder stands in
    flagged = model(images, available={"swe": torch.tensor([True, False, True, False])})
print(sorted(us_only.logits), tuple(us_only.probs.shape), tuple(flagged.probs.shape))
