"""Preprocessing inside the network, so the exported graph takes exactly what the worker sends."""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Tagger(nn.Module):
    """uint8 NHWC RGB batch → per-tag probabilities. Wraps a network that takes normalized float NCHW."""

    def __init__(
        self,
        net: nn.Module,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        crop: tuple[int, int] | None = None,
    ):
        """``crop`` (height, width): the network sees only the centre of the input, as ImageNet networks were
        evaluated (resize to 256, centre 224), while the worker still sends the whole photo at input size."""
        super().__init__()
        self.net = net
        self.crop = tuple(crop) if crop else None
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)), persistent=False)
        self.register_buffer(
            "shift", (torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1), persistent=False
        )

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC → the normalized float NCHW the network takes."""
        x = images.permute(0, 3, 1, 2)
        if self.crop:
            top, left = (x.shape[2] - self.crop[0]) // 2, (x.shape[3] - self.crop[1]) // 2
            x = x[:, :, top : top + self.crop[0], left : left + self.crop[1]]
        return x.float() * self.scale - self.shift

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))
