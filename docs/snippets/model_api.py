"""The paper's network in one line: build it by name, save it whole, load it back."""

import tempfile

import torch

from mmfusion.models import create_model, from_pretrained, list_models

print(list_models("liver_fibrosis_paper*"))  # the paper's model, its Table I variants
paper = create_model("liver_fibrosis_paper")  # 2 ResNet-50s, attention fusion, ensemble
print(f"{sum(p.numel() for p in paper.parameters()) / 1e6:.1f} M parameters")  # 127.9

# Any field of its ModelConfig can be replaced; a tiny backbone at 64 px for a demo.
model = create_model("liver_fibrosis_paper", backbone="test_resnet", image_size=64)
model.eval()
folder = tempfile.mkdtemp()
model.save_pretrained(folder)  # config.json + model.safetensors (nothing pickled)
again = from_pretrained(folder)  # rebuilt from the config, weights loaded strictly
images = {m: torch.randn(2, 3, 64, 64) for m in model.modalities}  # "us", "swe"
with torch.no_grad():
    assert torch.equal(model(images).probs, again(images).probs)
    print(again({"us": images["us"]}).probs.shape)  # SWE missing: still [2, 5]
