"""How well each version of a rollout agrees with what owners corrected (``darkroom compare``; docs/rollout.md).

An owner's edit (contracts/edits.py) says which tags a photo should have had (``added``) and which it should
not (``removed``). Only those explicit corrections are scored: a tag the owner left alone says little (they
may not have looked). For each edited photo with both a live and a shadow event, each version is scored on
the corrections: a removed tag it still emits is a false positive, an added tag it misses is a false
negative, every other corrected tag it got right.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from contracts.edits import EditRejected, normalize_tag, parse_tag_edit


@dataclass(frozen=True)
class Corrections:
    """An owner's corrections of one photo, all their edits folded in order (a later edit wins a tag)."""

    added: frozenset[str]
    removed: frozenset[str]


@dataclass
class EditScore:
    """One version's agreement with owners' corrections over the edited photos."""

    photos: int = 0  # edited photos scored
    added: int = 0  # tags owners added on those photos
    removed: int = 0  # tags owners removed on those photos
    false_positives: int = 0  # removed tags the version still emits
    false_negatives: int = 0  # added tags the version misses

    @property
    def agreement(self) -> float:
        """The share of corrected tags the version got right (emits an added one, leaves out a removed
        one); 0 without any."""
        corrected = self.added + self.removed
        return (corrected - self.false_positives - self.false_negatives) / corrected if corrected else 0.0

    @property
    def recall(self) -> float:
        """Of the tags owners added, the share the version emits; 1 when none were added."""
        return (self.added - self.false_negatives) / self.added if self.added else 1.0

    def to_json(self) -> dict:
        return {**asdict(self), "agreement": self.agreement, "recall": self.recall}


def corrections(values: list[bytes | None]) -> tuple[dict[str, Corrections], int]:
    """Every photo's folded corrections from raw ``photo-tag-edits`` values (in topic order), and how many
    values were not valid edits (skipped, as the indexer dead-letters them)."""
    wanted_by_photo: dict[str, dict[str, bool]] = {}
    skipped = 0
    for value in values:
        try:
            edit = parse_tag_edit(value, 0.0)
        except EditRejected:
            skipped += 1
            continue
        wanted = wanted_by_photo.setdefault(edit.photo_id, {})
        for tag in edit.added:
            wanted[tag] = True
        for tag in edit.removed:
            wanted[tag] = False
    folded = {
        pid: Corrections(frozenset(t for t, keep in tags.items() if keep),
                         frozenset(t for t, keep in tags.items() if not keep))
        for pid, tags in wanted_by_photo.items()
    }  # fmt: skip
    return folded, skipped


def score(tags: frozenset[str], fix: Corrections, into: EditScore) -> None:
    """Add one version's tags of one edited photo to its score (tags compared as edits store them)."""
    tags = frozenset(normalize_tag(t) for t in tags)
    into.photos += 1
    into.added += len(fix.added)
    into.removed += len(fix.removed)
    into.false_negatives += len(fix.added - tags)
    into.false_positives += len(fix.removed & tags)
