"""Learning from owners' tag edits: a training set from the edit log and the uploads' user tags, a head
fine-tuned on cached backbone features, judged on held-out edits.

**Labels.** Every photo of the collection starts from its user tags (the noisy labels the served head was
trained on). An edited photo's labels then change only where owners *as a group* agree: a correction
``(tag, "added" | "removed" | "kept")`` counts when at least ``votes`` distinct owners made it
(``search.edits.global_corrections``; "kept" = a predicted tag the owner saw and left). A single owner,
however many photos they edit, changes no global label; their edits still change their own photos in the
index at once.

**Held out.** A fixed share of the edited photos (their truth: what the owner kept or added) (by a hash of the photo id, so the split is stable as edits
accumulate) is never trained on: the per-tag AP of the served head and of the candidate on them decides. A
new version is written only when the candidate's mean AP there is higher (``min_gain``).

**Weight.** A photo an owner checked counts ``edited_weight`` times (4) against one with user tags only.

**Thresholds.** Calibrated on out-of-fold scores of the training photos (k-fold: each photo scored by a head
that did not see it) for the target precision, as ``darkroom train`` does on its validation set.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

import numpy as np

from trainer.checkpoint import load_tagger
from trainer.finetune import predict_features
from trainer.metrics import average_precision, calibrate
from trainer.models.preprocess import Tagger
from trainer.train import TrainConfig, fit_head
from trainer.vocab.vocabulary import Vocabulary

#: What an edited photo says about a tag: added, removed, or a predicted tag the owner kept.
DIRECTIONS = ("kept", "added", "removed")


@dataclass(frozen=True)
class EditedPhoto:
    """One owner's last word on one photo of the collection (``row``: its row in the features)."""

    row: int
    photo_id: str
    owner: str
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()
    kept: frozenset[str] = frozenset()


def feedback_targets(
    base: np.ndarray, vocab: Vocabulary, edited: list[EditedPhoto], corrections: set[tuple[str, str]]
) -> np.ndarray:
    """``base`` (user tags, [N, T]) with the corrections that passed the vote applied to the edited rows."""
    targets = base.copy()
    for photo in edited:
        for direction in DIRECTIONS:  # removed last: it wins over a kept or added synonym
            for raw in getattr(photo, direction):
                tag = vocab.canonical(raw)
                if tag is not None and (raw, direction) in corrections:
                    targets[photo.row, vocab.index[tag]] = 0.0 if direction == "removed" else 1.0
    return targets


def owner_targets(vocab: Vocabulary, edited: list[EditedPhoto]) -> np.ndarray:
    """The edited photos' labels as their owners gave them (no vote): what they kept or added, and nothing
    else. The held-out truth: an owner who corrected a photo says what it shows."""
    targets = np.zeros((len(edited), len(vocab.tags)), np.float32)
    for i, photo in enumerate(edited):
        for raw in photo.kept | photo.added:
            tag = vocab.canonical(raw)
            if tag is not None:
                targets[i, vocab.index[tag]] = 1.0
    return targets


def heldout(photo_ids: list[str], share: float, salt: str = "darkroom-feedback") -> np.ndarray:
    """A stable boolean mask: the photos (by id) that are held out, about ``share`` of them.

    Each photo's place is decided by a hash of its id, so a photo stays on its side as edits accumulate. A
    handful of edited photos could all hash to one side (6 photos at 0.25: 18 % of rounds would hold none out,
    and no version could ever be judged), so with two or more photos at least one is held out and at least
    one is trained on: the photo(s) nearest the cut move across.
    """
    hashes = np.array(
        [int.from_bytes(hashlib.sha1(f"{salt}:{pid}".encode()).digest()[:4], "big") for pid in photo_ids],
        dtype=np.int64,
    )
    mask = hashes < int(share * 2**32)
    if len(mask) >= 2 and 0 < share < 1:
        if not mask.any():
            mask[np.argmin(hashes)] = True
        elif mask.all():
            mask[np.argmax(hashes)] = False
    return mask


def out_of_fold_scores(
    tagger: Tagger, features: np.ndarray, targets: np.ndarray, config: TrainConfig, folds: int = 4
) -> np.ndarray:
    """Each photo's scores from a head fine-tuned (from ``tagger``'s) on the other folds."""
    order = np.random.default_rng(config.seed).permutation(len(features))
    scores = np.zeros(targets.shape, np.float32)
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        model = copy.deepcopy(tagger)
        fit_head(model, features[rest], targets[rest], config)
        scores[fold] = predict_features(model, features[fold])
    return scores


@dataclass
class FeedbackResult:
    """The candidate head and how it compares with the served one on the held-out edits."""

    checkpoint: dict
    before: dict[str, float]  # per-tag AP of the served head on the held-out edits
    after: dict[str, float]  # ... of the candidate
    trained_on: int
    heldout: int
    corrections: list[tuple[str, str]] = field(default_factory=list)

    @property
    def before_map(self) -> float:
        return _mean(self.before)

    @property
    def after_map(self) -> float:
        return _mean(self.after)

    def better(self, min_gain: float = 0.0) -> bool:
        """Whether the candidate beats the served head on the held-out edits (by more than ``min_gain``)."""
        return bool(self.before) and self.after_map > self.before_map + min_gain

    def summary(self) -> dict:
        return {
            "trained_on": self.trained_on,
            "heldout_edits": self.heldout,
            "corrections": [list(c) for c in self.corrections],
            "heldout_mAP_before": round(self.before_map, 4),
            "heldout_mAP_after": round(self.after_map, 4),
            "per_tag_ap_before": {t: round(v, 4) for t, v in self.before.items()},
            "per_tag_ap_after": {t: round(v, 4) for t, v in self.after.items()},
        }


def _mean(per_tag: dict[str, float]) -> float:
    return float(np.mean(list(per_tag.values()))) if per_tag else float("nan")


def train_on_feedback(
    checkpoint: dict,
    features: np.ndarray,
    base: np.ndarray,
    edited: list[EditedPhoto],
    corrections: set[tuple[str, str]],
    config: TrainConfig,
    heldout_share: float = 0.25,
    folds: int = 4,
    edited_weight: int = 4,
) -> FeedbackResult:
    """Fine-tune ``checkpoint``'s head on the collection's features ([N, 2, D]) with ``base`` user-tag
    targets corrected by the voted ``corrections``; compare it with the served head on held-out edits."""
    vocab = Vocabulary(
        **{k: v for k, v in checkpoint["vocab"].items() if k in ("tags", "aliases", "version")}
    )
    held = heldout([p.photo_id for p in edited], heldout_share)
    held_photos = [p for p, h in zip(edited, held, strict=True) if h]
    train_rows = np.setdiff1d(np.arange(len(features)), [p.row for p in held_photos])
    trained = [p for p, h in zip(edited, held, strict=True) if not h]
    targets = feedback_targets(base, vocab, trained, corrections)
    # an owner-checked photo counts ``edited_weight`` times against one with user tags only
    repeats = np.repeat(np.array([p.row for p in trained], dtype=int), edited_weight - 1)
    train_rows = np.concatenate([train_rows, repeats]).astype(int)
    served = load_tagger(checkpoint)
    candidate = copy.deepcopy(served)
    fit_head(candidate, features[train_rows], targets[train_rows], config)
    before, after = {}, {}
    if held_photos:
        rows = [p.row for p in held_photos]
        truth = owner_targets(vocab, held_photos)
        old, new = predict_features(served, features[rows]), predict_features(candidate, features[rows])
        for k, tag in enumerate(vocab.tags):
            if truth[:, k].any():
                before[tag] = average_precision(old[:, k], truth[:, k])
                after[tag] = average_precision(new[:, k], truth[:, k])
    unique = np.unique(train_rows)  # each photo once: a repeat in another fold would score itself
    oof = out_of_fold_scores(served, features[unique], targets[unique], config, folds)
    thresholds, calibrated = calibrate(oof, targets[unique], config.target_precision)
    result = FeedbackResult(
        {**checkpoint, "state_dict": candidate.net.state_dict(), "thresholds": thresholds},
        before, after, len(unique), len(held_photos), sorted(corrections),
    )  # fmt: skip
    result.checkpoint["metrics"] = {
        **checkpoint.get("metrics", {}),
        "feedback": {**result.summary(), "calibrated": calibrated},
    }
    return result
