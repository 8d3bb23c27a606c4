"""Fine-tuning a pretrained backbone on a collection's noisy tags: a new head over frozen, cached features.

A frozen backbone computes the same features for a photo in every epoch and every run, so they are
computed once, for each photo and its mirror image (the horizontal flip that training uses as
augmentation), and kept on disk. The cache key covers everything that changes a feature: the decoded
pixels, the backbone's weights and the preprocessing (input size, mean, std). Training the multi-label
head is then a few thousand small matrix products: seconds to minutes on a CPU, where running the
backbone every epoch would take hours.

``unfreeze`` > 0 trains the last blocks of the backbone with the head instead; the cache cannot serve
that (those blocks change the features), so it trains on the decoded photos, with the frozen blocks in
inference mode (their BatchNorm statistics stay those of the pretrained network).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torch import nn

from trainer.models.preprocess import Tagger

#: Modules of a network that hold its backbone's blocks, in the order they run (first one found).
BLOCK_CONTAINERS = ("blocks", "features")


def backbone_blocks(net: nn.Module) -> nn.Sequential:
    """The backbone's sequence of blocks: ``net.blocks`` or ``net.features``, whichever the family has."""
    for name in BLOCK_CONTAINERS:
        container = getattr(net, name, None)
        if isinstance(container, nn.Sequential):
            return container
    raise ValueError(f"{type(net).__name__} has no nn.Sequential of blocks ({' or '.join(BLOCK_CONTAINERS)})")


def freeze(tagger: Tagger, unfreeze: int) -> list[nn.Module]:
    """Freeze all but the head and, for ``unfreeze`` > 0, the backbone's last ``unfreeze`` blocks and the
    modules that run after them (a final 1x1 conv); returns the frozen leaf modules (none for -1)."""
    net = tagger.net
    if unfreeze < 0:
        return []
    trainable = {net.head}
    if unfreeze:
        blocks = backbone_blocks(net)
        if unfreeze > len(blocks):
            raise ValueError(
                f"option unfreeze={unfreeze}: {type(net).__name__} has only {len(blocks)} blocks"
            )
        trainable |= set(blocks[len(blocks) - unfreeze :])
        # top-level modules registered after the blocks run after them
        names = [name for name, _ in net.named_children()]
        container = next(n for n in BLOCK_CONTAINERS if getattr(net, n, None) is blocks)
        trainable |= {getattr(net, n) for n in names[names.index(container) + 1 :]}
    inside = {id(m) for t in trainable for m in t.modules()}
    frozen = [m for m in net.modules() if id(m) not in inside and not any(m.children())]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


class PartlyFrozenTagger(Tagger):
    """A Tagger whose frozen modules stay in inference mode while the rest trains."""

    def __init__(self, tagger: Tagger, frozen: list[nn.Module]) -> None:
        super().__init__(tagger.net, crop=tagger.crop)
        self.scale, self.shift = tagger.scale, tagger.shift
        self.frozen = frozen

    def train(self, mode: bool = True) -> PartlyFrozenTagger:
        """Train mode for the trainable part only: frozen BatchNorm keeps the pretrained statistics."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self


class HeadOnFeatures(nn.Module):
    """What ``fit`` trains when the backbone is frozen: the network's head, fed cached features.

    ``net`` is the head itself (so ``fit`` optimizes nothing else), and ``normalize`` is the identity
    because features are already the network's own.
    """

    def __init__(self, tagger: Tagger) -> None:
        super().__init__()
        self.net = tagger.net.head

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        return features


def pick_view(features: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """[B, 2, D] features of each photo and its mirror → [B, D], the mirror for a random half (the flip
    augmentation of ``train_one_epoch``, on features)."""
    view = (torch.rand(len(features), generator=gen) < 0.5).long()
    return features[torch.arange(len(features)), view]


def backbone_digest(net: nn.Module) -> str:
    """A hash of every backbone tensor (the head excluded): a new head reuses the same features."""
    digest = hashlib.sha1()
    for key, value in sorted(net.state_dict().items()):
        if not key.startswith("head."):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """On-disk features of a frozen backbone, keyed by the photos' pixels, the backbone and preprocessing."""

    def __init__(self, root: Path) -> None:
        if root.exists() and not root.is_dir():
            raise ValueError(f"feature cache {root} is a file, not a folder; give a folder for the cache")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"feature cache {root} cannot be created: {exc.strerror}") from None
        self.root = root

    def key(self, tagger: Tagger, images: np.ndarray, model: str) -> str:
        """What the features of ``images`` depend on: pixels, backbone weights, model, size, crop, mean, std."""
        digest = hashlib.sha1(np.ascontiguousarray(images).data)
        digest.update(
            json.dumps(
                [model, list(images.shape), backbone_digest(tagger.net), tagger.crop,
                 tagger.scale.flatten().tolist(), tagger.shift.flatten().tolist()]
            ).encode()
        )  # fmt: skip
        return digest.hexdigest()[:20]

    def features(self, tagger: Tagger, images: np.ndarray, model: str, batch_size: int = 64) -> np.ndarray:
        """float32 [N, 2, D]: the pooled features of each photo and its mirror, from disk when cached."""
        path = self.root / f"{model}-{self.key(tagger, images, model)}.npy"
        if path.is_file():
            try:
                cached = np.load(path)
            except (OSError, ValueError):
                cached = None  # a truncated or foreign file: computed again below and replaced
            if cached is not None and cached.shape[:2] == (len(images), 2):
                return cached
        features = extract_features(tagger, images, batch_size)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, features)
        tmp.replace(path)
        return features


@torch.no_grad()
def extract_features(tagger: Tagger, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """float32 [N, 2, D]: ``forward_features`` of uint8 NHWC ``images`` and of their mirror images."""
    tagger.eval()
    out = []
    starts = range(0, len(images), batch_size)
    for start in track(starts, description="backbone features", transient=True):
        x = torch.from_numpy(images[start : start + batch_size])
        views = [tagger.net.forward_features(tagger.normalize(v)) for v in (x, x.flip(2))]
        out.append(torch.stack(views, dim=1).numpy())
    return np.concatenate(out).astype(np.float32)


@torch.no_grad()
def predict_features(tagger: Tagger, features: np.ndarray) -> np.ndarray:
    """Per-tag probabilities from cached [N, 2, D] features (the photos themselves, not their mirrors)."""
    tagger.eval()
    return torch.sigmoid(tagger.net.forward_head(torch.from_numpy(features[:, 0]))).numpy()
