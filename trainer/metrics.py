"""Multi-label metrics on clean labels, and per-tag thresholds calibrated to a target precision."""

from __future__ import annotations

import numpy as np

#: Fewer true positives than this above a cut and its precision is noise: use the fallback instead.
MIN_SUPPORT = 5


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Non-interpolated AP of one tag (NaN when the tag has no positives)."""
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = targets[order] > 0
    precision_at_hit = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hit.sum() / positives)


def calibrate_thresholds(
    scores: np.ndarray, targets: np.ndarray, target_precision: float = 0.9
) -> list[float]:
    """Per tag, the lowest score threshold whose precision on (scores, targets) is >= target_precision.

    Lowest such threshold = the most recall at the wanted precision. Fallback, when no cut with at least
    MIN_SUPPORT true positives reaches the target (rare or hard tags): the threshold of best F1, but
    never below 0.5, so a tag the model cannot predict precisely is emitted rarely rather than often.
    """
    return [_threshold(scores[:, k], targets[:, k], target_precision) for k in range(scores.shape[1])]


def _threshold(scores: np.ndarray, targets: np.ndarray, target_precision: float) -> float:
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], targets[order] > 0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(s) + 1)
    # a cut is only valid between distinct scores
    valid = np.append(s[1:] < s[:-1], True)
    ok = valid & (precision >= target_precision) & (tp >= MIN_SUPPORT)
    if ok.any():
        return float(s[np.flatnonzero(ok)[-1]])
    if hits.sum() == 0:
        return 1.0
    recall = tp / hits.sum()
    f1 = np.where(valid, 2 * precision * recall / np.maximum(precision + recall, 1e-9), -1)
    return max(0.5, float(s[int(np.argmax(f1))]))


def precision_recall_at_k(scores: np.ndarray, targets: np.ndarray, k: int) -> tuple[float, float]:
    """Mean over images of precision@k and recall@k (images without positives are left out of recall)."""
    top = np.argsort(-scores, axis=1)[:, :k]
    hits = np.take_along_axis(targets, top, axis=1).sum(axis=1)
    positives = targets.sum(axis=1)
    recall = hits[positives > 0] / positives[positives > 0]
    return float((hits / k).mean()), float(recall.mean()) if len(recall) else float("nan")


def threshold_reached(
    scores: np.ndarray, targets: np.ndarray, threshold: float, target_precision: float
) -> bool:
    """Whether ``threshold`` meets ``target_precision`` with at least MIN_SUPPORT true positives."""
    above = scores >= threshold
    tp = int((targets[above] > 0).sum())
    return bool(above.any()) and tp >= MIN_SUPPORT and tp / int(above.sum()) >= target_precision


def score_metrics(scores: np.ndarray, targets: np.ndarray, tags: list[str]) -> dict:
    """mAP, per-tag AP and precision/recall@k against ``targets`` (clean labels)."""
    per_tag = {t: average_precision(scores[:, i], targets[:, i]) for i, t in enumerate(tags)}
    valid = [ap for ap in per_tag.values() if not np.isnan(ap)]
    at_k = {}
    for k in (1, 3, 5):
        p, r = precision_recall_at_k(scores, targets, min(k, scores.shape[1]))
        at_k[f"P@{k}"], at_k[f"R@{k}"] = p, r
    return {"mAP": float(np.mean(valid)) if valid else float("nan"), "per_tag_ap": per_tag, **at_k}


def calibrate(
    scores: np.ndarray, targets: np.ndarray, target_precision: float = 0.9
) -> tuple[list[float], list[bool]]:
    """Per-tag thresholds for ``target_precision`` and, per tag, whether its threshold really reaches it
    (False where ``calibrate_thresholds`` had to fall back): the one way every command calibrates."""
    thresholds = calibrate_thresholds(scores, targets, target_precision)
    reached = [
        threshold_reached(scores[:, k], targets[:, k], t, target_precision) for k, t in enumerate(thresholds)
    ]
    return thresholds, reached
