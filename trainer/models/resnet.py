"""ResNet family: a light variant (basic blocks, thin widths) and the larger reference model.

The reference (``resnet_ref``) is the "big model" the paper's cost lesson is measured against: standard
3x3 convolutions in ResNet-18's layout, several times the FLOPs of the lightweight variants.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem (3x3 stride 2, optionally a max-pool as in ResNet-18), four stages of basic blocks (strides 1, 2, 2, 2), average pool, linear head."""

    def __init__(
        self,
        num_classes: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        stem_pool: bool = False,
        drop: float = 0.1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity(),
        )
        layers: list[nn.Module] = []
        ch = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            for j in range(depth):
                layers.append(BasicBlock(ch, width, 2 if (j == 0 and i > 0) else 1))
                ch = width
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(ch, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x)).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW normalized images → per-tag logits."""
        return self.forward_head(self.forward_features(x))


@register_model
def resnet_lite_050(num_classes: int, **kw: object) -> ResNet:
    return ResNet(num_classes, widths=(16, 32, 64, 128), depths=(1, 1, 1, 1), **kw)  # type: ignore[arg-type]


@register_model
def resnet_ref(num_classes: int, **kw: object) -> ResNet:
    """The reference: ResNet-18's layout (max-pool stem, 2-2-2-2 basic blocks) at half its widths."""
    return ResNet(num_classes, widths=(32, 64, 128, 256), depths=(2, 2, 2, 2), stem_pool=True, **kw)  # type: ignore[arg-type]
