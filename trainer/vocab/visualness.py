"""Visualness: can a model see this tag? Measured, not guessed, with a quick linear probe on image features.

For a sample of manifest photos (a uniform reservoir sample, at most ~1500), each image is shrunk to 32x24
and described by fixed random convolution features (64 random 5x5 filters, ReLU, max-pooled over a 2x2
grid and averaged over 3 horizontal bands: 448 numbers; untrained, so no model is needed to decide what
the model will learn). For every candidate tag a ridge-regression probe is fitted on the photos' *user*
tags (noisy labels, as the trainer will see them) and scored on held-out photos with K-fold
cross-validation, folds split by owner so a prolific owner's look cannot leak between train and test.

A tag is visual when the probe finds it both *materially* and *significantly* better than chance:

* material: the held-out average precision (AP, what search precision will look like) beats the AP that
  chance gives with the same scores and as many positives (mean over label permutations) by a ``gain`` of
  ``(AP - chance) / (1 - chance)``;
* significant: the held-out rank-sum statistic (AUC) is ``z`` standard errors above 0.5. AP's own null is
  skewed and, for a tag on half the photos, so noisy that even a perfect detector is not significant on a
  thousand photos; the rank-sum test has a known normal null and far more power.

A year, a camera or "love" scores chance on both, whatever its frequency; a sky or a boat does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from trainer.vocab.inputs import ProbePhoto

PROBE_SIZE = (32, 24)  # (width, height) the images are shrunk to
_FILTERS, _KERNEL, _BIAS = 64, 5, 0.5


@dataclass(frozen=True)
class Visualness:
    """How well a linear probe on image features finds a tag on held-out photos."""

    positives: int  # sampled photos with the tag
    ap: float  # held-out average precision
    chance_ap: float  # mean AP of the same scores with permuted labels
    auc: float  # held-out area under the ROC curve
    z: float  # (AUC - 0.5) / its standard error under chance

    @property
    def gain(self) -> float:
        return (self.ap - self.chance_ap) / max(1e-9, 1.0 - self.chance_ap)

    def is_visual(self, min_gain: float, min_z: float) -> bool:
        return self.gain >= min_gain and self.z >= min_z

    def to_dict(self) -> dict:
        return {
            "positives": self.positives,
            "ap": round(self.ap, 4),
            "chance_ap": round(self.chance_ap, 4),
            "gain": round(self.gain, 4),
            "auc": round(self.auc, 4),
            "z": round(self.z, 2),
        }


@dataclass
class Probe:
    """The outcome of one probe run: per-tag visualness, and which images could not be used."""

    images: int
    unreadable: list[tuple[str, str]]  # (path, error) for the first few
    unreadable_total: int
    visualness: dict[str, Visualness]


def load_image(path: str) -> np.ndarray:
    """One image as float32 (H, W, 3) in [0, 1] at ``PROBE_SIZE``; JPEGs are decoded at reduced size."""
    with Image.open(path) as im:
        im.draft("RGB", (PROBE_SIZE[0] * 2, PROBE_SIZE[1] * 2))
        small = im.convert("RGB").resize(PROBE_SIZE, Image.BILINEAR)
    return np.asarray(small, dtype=np.float32) / 255.0


def random_conv_features(images: np.ndarray, seed: int = 0, chunk: int = 128) -> np.ndarray:
    """Fixed random-filter features of ``images`` (N, H, W, 3): a cheap, untrained stand-in for a CNN."""
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((3 * _KERNEL * _KERNEL, _FILTERS)).astype(np.float32)
    weights -= weights.mean(0, keepdims=True)  # respond to patterns, not to brightness
    mean = images.mean((0, 1, 2), keepdims=True)
    std = images.std((0, 1, 2), keepdims=True) + 1e-6
    pad = _KERNEL // 2
    n, h, w, _ = images.shape
    out = []
    for start in range(0, n, chunk):
        x = (images[start : start + chunk] - mean) / std
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        patches = sliding_window_view(x, (_KERNEL, _KERNEL), axis=(1, 2))  # (b, h, w, 3, k, k)
        maps = np.maximum(patches.reshape(-1, weights.shape[0]) @ weights - _BIAS, 0.0)
        maps = maps.reshape(len(x), h, w, _FILTERS)
        grid = maps.reshape(len(x), 2, h // 2, 2, w // 2, _FILTERS).max((2, 4)).reshape(len(x), -1)
        bands = maps.reshape(len(x), 3, h // 3, w, _FILTERS).mean((2, 3)).reshape(len(x), -1)
        out.append(np.concatenate([grid, bands], axis=1))
    return np.concatenate(out)


def held_out_scores(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: int, ridge: float
) -> np.ndarray:
    """Cross-validated ridge-regression scores (N, T) for the label matrix (N, T): each photo scored by a
    probe that never saw its owner's photos."""
    scores = np.zeros(labels.shape, dtype=np.float64)
    fold = groups % folds
    for f in range(folds):
        train, test = fold != f, fold == f
        if not test.any() or not train.any():
            continue
        mu, sd = features[train].mean(0), features[train].std(0) + 1e-6
        a = (features[train] - mu) / sd
        gram = a.T @ a + ridge * len(a) * np.eye(a.shape[1])
        w = np.linalg.solve(gram, a.T @ (labels[train] - labels[train].mean(0)))
        scores[test] = ((features[test] - mu) / sd) @ w
    return scores


def average_precision(sorted_labels: np.ndarray) -> np.ndarray:
    """AP of each row of 0/1 labels already ordered by decreasing score."""
    hits = np.cumsum(sorted_labels, axis=-1)
    precision = hits / np.arange(1, sorted_labels.shape[-1] + 1)
    return (precision * sorted_labels).sum(-1) / np.maximum(sorted_labels.sum(-1), 1)


def rank_sum_auc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC of ``scores`` for 0/1 ``labels`` (ties averaged) and its z-score under chance (Mann–Whitney)."""
    ranks = np.empty(len(scores))
    order = np.argsort(scores, kind="stable")
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # average the ranks of tied scores
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    pos = labels > 0
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return 0.5, 0.0
    auc = (ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return float(auc), float((auc - 0.5) / np.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0)))


def measure_visualness(
    sample: list[ProbePhoto],
    tags: list[str],
    min_positives: int = 8,
    folds: int = 5,
    ridge: float = 0.1,
    permutations: int = 100,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> Probe:
    """Visualness of each of ``tags`` that has at least ``min_positives`` photos in ``sample``."""
    images, groups, tagsets, unreadable = [], [], [], []
    unreadable_total = 0
    for i, photo in enumerate(sample):
        try:
            images.append(load_image(str(photo.path)))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            unreadable_total += 1
            if len(unreadable) < 10:
                unreadable.append((str(photo.path), str(exc) or type(exc).__name__))
            continue
        groups.append(photo.owner)
        tagsets.append(photo.tags)
        if progress is not None and i % 64 == 0:
            progress(i)
    labels = np.array([[t in s for t in tags] for s in tagsets], dtype=np.float64).reshape(
        len(tagsets), len(tags)
    )
    measurable = [j for j, _ in enumerate(tags) if labels[:, j].sum() >= min_positives]
    result: dict[str, Visualness] = {}
    if len(images) >= 2 * folds and measurable:
        features = random_conv_features(np.stack(images), seed=seed)
        owner_groups = np.array(groups, dtype=np.uint64) % np.uint64(2**31)
        scores = held_out_scores(features, labels[:, measurable], owner_groups.astype(np.int64), folds, ridge)
        rng = np.random.default_rng(seed)
        shuffles = np.argsort(rng.random((permutations, len(images))), axis=1)
        for col, j in enumerate(measurable):
            ordered = labels[np.argsort(-scores[:, col], kind="stable"), j]
            auc, z = rank_sum_auc(scores[:, col], labels[:, j])
            result[tags[j]] = Visualness(
                positives=int(ordered.sum()),
                ap=float(average_precision(ordered[None])[0]),
                chance_ap=float(average_precision(ordered[shuffles]).mean()),
                auc=auc,
                z=z,
            )
    return Probe(len(images), unreadable, unreadable_total, result)
