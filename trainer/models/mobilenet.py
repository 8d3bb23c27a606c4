"""MobileNet-like family: a strided stem, then depthwise-separable blocks, then a multi-label head."""

from __future__ import annotations

import torch
from torch import nn

from trainer.models.registry import register_model


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1: most of a standard conv's accuracy at a fraction of its FLOPs."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.depthwise = conv_bn(cin, cin, stride, groups=cin)
        self.pointwise = conv_bn(cin, cout, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetLite(nn.Module):
    # (output channels, stride) per block, before the width multiplier
    STAGES = ((32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1))

    def __init__(self, num_classes: int, width: float = 1.0, drop: float = 0.1) -> None:
        super().__init__()
        ch = max(8, int(16 * width))
        layers: list[nn.Module] = [conv_bn(3, ch, stride=2)]
        for cout, stride in self.STAGES:
            cout = max(8, int(cout * width))
            layers.append(SeparableBlock(ch, cout, stride))
            ch = cout
        self.features = nn.Sequential(*layers)
        self.num_features = ch
        self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(ch, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW normalized images → per-tag logits."""
        return self.forward_head(self.forward_features(x))


@register_model
def mobilenet_lite_050(num_classes: int, **kw: object) -> MobileNetLite:
    return MobileNetLite(num_classes, width=0.5, **kw)  # type: ignore[arg-type]


@register_model
def mobilenet_lite_075(num_classes: int, **kw: object) -> MobileNetLite:
    return MobileNetLite(num_classes, width=0.75, **kw)  # type: ignore[arg-type]


@register_model
def mobilenet_lite_100(num_classes: int, **kw: object) -> MobileNetLite:
    return MobileNetLite(num_classes, width=1.0, **kw)  # type: ignore[arg-type]
