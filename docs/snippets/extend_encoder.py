"""An encoder of your own: registered, configured per modality, saved and loaded."""

import tempfile

import torch
from torch import Tensor, nn

from mmfusion.models import ModelConfig, create_model, from_pretrained
from mmfusion.nn import FeatureSpec, register_encoder


@register_encoder("small_cnn")
class SmallCNN(nn.Module):
    """Two stride-2 convolutions: [B, 3, H, W] -> a map [B, channels, H/4, W/4]."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.channels = channels
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
        )

    def feature_spec(self, image_size: int) -> FeatureSpec:  # required
        side = -(-image_size // 4)  # each convolution halves the side, rounding up
        return FeatureSpec("map", self.channels, (side, side))

    def check_input(self, x: object, name: str) -> None:  # optional
        if not (isinstance(x, Tensor) and x.ndim == 4 and x.shape[1] == 3):
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name}: expected [B, 3, H, W] images, got {shape}")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


config = ModelConfig(
    modalities=("us", "swe"), backbone="test_resnet", image_size=64, hidden=(16,),
    embed_dim=32, num_classes=3, fusion_kwargs={"reduced_channels": [8, 4]},
    encoders={"swe": {"name": "small_cnn", "channels": 16}},  # "us": timm's backbone
)
model = create_model(config)
print(type(model.encoders["us"]).__name__, type(model.encoders["swe"]).__name__)
images = {m: torch.randn(2, 3, 64, 64) for m in config.modalities}
try:
    model({**images, "swe": images["swe"][:, :1]})  # one channel: your check names it
except ValueError as err:
    print(err)

folder = tempfile.mkdtemp()
model.eval().save_pretrained(folder)  # config.json: the "small_cnn" entry
loaded = from_pretrained(folder)
with torch.no_grad():
    assert torch.equal(model(images).probs, loaded(images).probs)  # identical outputs
print(loaded.config.encoder("swe"))
