"""Evidential fusion (TMC, Han et al. 2021): probabilities and an uncertainty each."""

import torch

from mmfusion.models import create_model

model = create_model("liver_fibrosis_quick", fusion="evidential",
                     backbone="test_resnet", image_size=64, embed_dim=16).eval()
images = {m: torch.randn(3, 3, 64, 64) for m in model.config.modalities}
with torch.no_grad():  # no SWE in sample 1: its opinion is dropped, uncertainty rises
    out = model(images, {"swe": torch.tensor([True, False, True])})
print(out.logits["joint"].exp().sum(1), out.uncertainty)
