"""A custom tag from a handful of examples: a logistic head on the backbone's embedding, its threshold
calibrated by cross-validation, appended to the model's head for the next version.

5-20 positives cannot train a network, but the frozen backbone already separates most visual concepts: a
linear classifier on its pooled features (each photo and its mirror image) is enough. Negatives are photos
sampled from the collection, and some of them show the object unlabelled (a collection's cat photos are
not all among the examples): the negatives are scored out of fold, and those scoring above the lower
quartile of the examples' out-of-fold scores are dropped as likely unlabelled positives before the real
fit. (Dropping only those above the median example left about half of them in: counted as false
positives, they held the calibrated threshold far too high — on the kite, recall 0.48 ± 0.35 after 10
examples against 0.82 ± 0.07 with the quartile; see docs/feedback.md.)

**Threshold.** Every example and negative is scored by a classifier trained on the other folds
(stratified k-fold); the threshold is the lowest out-of-fold score whose precision reaches the target, and
the precision and recall there are the reported estimate. Where no cut reaches the target the tag is still
added with the most precise cut, and the estimate says ``reached: false``.

**Serving.** The classifier is one more row of the head's final linear layer (the feature scaling folded
into it), so the next version serves the tag like any other, with its own threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: Below this many positives a threshold cannot be estimated by cross-validation at all.
MIN_EXAMPLES = 5
#: Negatives scoring (out of fold) above this quantile of the examples' scores are dropped as likely
#: unlabelled photos of the object.
DROP_QUANTILE = 0.25


@dataclass
class CustomTag:
    """A learned tag: the linear classifier on raw features, its threshold and its estimate."""

    name: str
    weight: np.ndarray  # [D]
    bias: float
    threshold: float
    estimate: dict


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, seed: int = 0) -> tuple[np.ndarray, float]:
    """A class-balanced, L2-regularized logistic regression on raw features ``x`` [n, D]; returns the
    weights and bias on the raw features (standardization folded in)."""
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y.astype(np.float32))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / max(pos, 1.0))
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = xt @ w + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, pos_weight=pos_weight)
        loss = loss + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    weight = w.detach().numpy() / std
    return weight.astype(np.float32), float(b.item() - (weight * mean).sum())


def _views(features: np.ndarray) -> np.ndarray:
    """[n, 2, D] (photo, mirror) → [2n, D]: both views train."""
    return features.reshape(-1, features.shape[-1])


def out_of_fold(
    positives: np.ndarray, negatives: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of every positive and negative (the photo itself, not its mirror) and the
    labels, stratified so each fold holds its share of positives."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    fold_of = np.empty(len(y), int)
    for label in (1, 0):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold_of[rows] = np.arange(len(rows)) % folds
    scores = np.zeros(len(y), np.float32)
    for k in range(folds):
        train, test = fold_of != k, fold_of == k
        weight, bias = fit_logistic(_views(x[train]), np.repeat(y[train], 2), seed=seed)
        scores[test] = 1 / (1 + np.exp(-(x[test, 0] @ weight + bias)))
    return scores, y


def drop_likely_positives(
    positives: np.ndarray, negatives: np.ndarray, folds: int, seed: int
) -> tuple[np.ndarray, int]:
    """The negatives less those scored (out of fold) above the ``DROP_QUANTILE`` of the examples'
    out-of-fold scores: likely unlabelled photos of the object. Returns them and how many were dropped."""
    scores, labels = out_of_fold(positives, negatives, folds, seed)
    keep = scores[labels == 0] < np.quantile(scores[labels == 1], DROP_QUANTILE)
    return negatives[keep], int((~keep).sum())


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target_precision: float) -> dict:
    """The lowest cut whose precision reaches the target (most recall at that precision); else the most
    precise cut. Returns the threshold with the precision and recall there."""
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], labels[order] > 0
    tp = np.cumsum(hits)
    precision, recall = tp / np.arange(1, len(s) + 1), tp / max(1, hits.sum())
    valid = np.append(s[1:] < s[:-1], True) & hits  # cut just below a positive, between distinct scores
    ok = valid & (precision >= target_precision)
    reached = bool(ok.any())
    if reached:
        i = int(np.flatnonzero(ok)[-1])
    else:
        i = int(np.flatnonzero(valid)[np.argmax(precision[valid])]) if valid.any() else 0
    return {"threshold": float(s[i]), "precision": float(precision[i]), "recall": float(recall[i]),
            "reached": reached}  # fmt: skip


def learn_tag(
    name: str,
    positives: np.ndarray,
    negatives: np.ndarray,
    target_precision: float = 0.9,
    folds: int = 5,
    seed: int = 0,
) -> CustomTag:
    """Learn tag ``name`` from [P, 2, D] positive and [N, 2, D] negative features."""
    if len(positives) < MIN_EXAMPLES:
        raise ValueError(f"a custom tag needs at least {MIN_EXAMPLES} example photos, got {len(positives)}")
    if len(negatives) < 2 * len(positives):
        raise ValueError(f"too few negative photos ({len(negatives)}); sample at least {2 * len(positives)}")
    folds = min(folds, len(positives))
    negatives, dropped = drop_likely_positives(positives, negatives, folds, seed)
    scores, labels = out_of_fold(positives, negatives, folds, seed)
    cut = choose_threshold(scores, labels, target_precision)
    x = np.concatenate([positives, negatives])
    y = np.concatenate([np.ones(len(positives)), np.zeros(len(negatives))])
    weight, bias = fit_logistic(_views(x), np.repeat(y, 2), seed=seed)
    estimate = {
        "precision": round(cut["precision"], 4),
        "recall": round(cut["recall"], 4),
        "reached": cut["reached"],
        "target_precision": target_precision,
        "positives": len(positives),
        "negatives": len(negatives),
        "dropped_negatives": dropped,
        "folds": folds,
    }
    return CustomTag(name, weight, bias, cut["threshold"], estimate)


def final_linear_key(state_dict: dict) -> str:
    """The state-dict prefix of the head's final linear layer; ValueError where the head is not a linear
    layer over the features (the general tagger maps ImageNet classes to tags through a fixed matrix)."""
    keys = [k for k in state_dict if k.startswith("head.") and k.endswith(".weight")]
    buffers = [k for k in state_dict if k.startswith("head.") and not k.endswith((".weight", ".bias"))]
    if len(keys) != 1 or buffers:
        raise ValueError(
            "this model's head is not one linear layer over the backbone's features (the general tagger maps "
            "ImageNet classes to tags); fine-tune a head first (`darkroom train` or `darkroom feedback train`)"
        )
    return keys[0][: -len(".weight")]


def add_tag(checkpoint: dict, tag: CustomTag) -> dict:
    """A new checkpoint: ``checkpoint`` with ``tag`` as one more output, threshold and vocabulary entry."""
    if tag.name in checkpoint["vocab"]["tags"]:
        raise ValueError(f"the model already has a tag {tag.name!r}; pick another name")
    state = dict(checkpoint["state_dict"])
    key = final_linear_key(state)
    weight, bias = state[f"{key}.weight"], state[f"{key}.bias"]
    if weight.shape[1] != len(tag.weight):
        raise ValueError(
            f"the tag was learned on {len(tag.weight)}-d features, the head takes {weight.shape[1]}"
        )
    state[f"{key}.weight"] = torch.cat([weight, torch.from_numpy(tag.weight)[None].to(weight.dtype)])
    state[f"{key}.bias"] = torch.cat([bias, torch.tensor([tag.bias], dtype=bias.dtype)])
    vocab = {**checkpoint["vocab"], "tags": [*checkpoint["vocab"]["tags"], tag.name]}
    metrics = dict(checkpoint.get("metrics", {}))
    metrics["custom_tags"] = {**metrics.get("custom_tags", {}), tag.name: tag.estimate}
    return {
        **checkpoint,
        "state_dict": state,
        "vocab": vocab,
        "thresholds": [*checkpoint["thresholds"], tag.threshold],
        "metrics": metrics,
    }
