"""Owners' tag edits in the search index: the edit log, each photo's overrides, and its effective tags.

A photo's *effective* tags are what search finds and the page shows: the newest model version's tags, less
those its owner removed, plus those its owner added (score 1.0, marked ``"edited": "added"``). The model's
own tags are kept aside (``predicted_tags``), so that every change (a new model version, an edit, the
upload that names the photo's owner) recomputes the effective tags from the same three inputs: a later
version never brings back a tag the owner removed, nor drops one they added.

An edit applies only to its owner's own photo: the photo's upload names its owner, and an edit by anyone
else is refused (``not_owner``). An edit that arrives before the photo's upload is kept in the log and
applies once the upload shows the same owner. Each owner may make ``edit_rate_limit`` edits per
``edit_rate_window_s`` (by the records' timestamps, so a replay decides the same); more are refused
(``rate_limited``). Refused edits become dead letters (``photo-tag-edits-dlq``) with the reason.

The log (``edits``) is what ``darkroom feedback train`` learns from; :func:`global_corrections` is how one
owner's edits stay one vote among owners there.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from contracts.edits import EditError, EditRejected, TagEdit, normalize_tag, parse_tag_edit
from contracts.records import dead_letter, parse_rfc3339

SCHEMA = """
CREATE TABLE IF NOT EXISTS edits (
    source_topic     TEXT NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    INTEGER NOT NULL,
    photo_id         TEXT NOT NULL,
    owner            TEXT NOT NULL,
    added            TEXT NOT NULL,  -- JSON list of normalized tags
    removed          TEXT NOT NULL,
    model_version    INTEGER,
    at               TEXT NOT NULL,
    at_s             REAL NOT NULL,  -- the record's time, seconds: the rate limit's clock
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX IF NOT EXISTS edits_by_owner ON edits (owner, at_s);
CREATE INDEX IF NOT EXISTS edits_by_photo ON edits (photo_id);
CREATE TABLE IF NOT EXISTS tag_overrides (
    photo_id TEXT NOT NULL,
    owner    TEXT NOT NULL,
    tag      TEXT NOT NULL,
    state    TEXT NOT NULL CHECK (state IN ('added', 'removed')),
    PRIMARY KEY (photo_id, owner, tag)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS predicted_tags (
    photo_id TEXT PRIMARY KEY,
    tags     TEXT NOT NULL  -- the newest model version's own tags, JSON, as the tag event had them
);
"""

#: tables :meth:`SearchIndex.reset` empties besides its own
TABLES = ("edits", "tag_overrides", "predicted_tags")

TagId = Callable[[sqlite3.Connection, str], int]


@dataclass(frozen=True)
class EditLimits:
    """The per-owner rate limit (from Settings: ``edit_rate_limit`` per ``edit_rate_window_s``)."""

    rate_limit: int = 600
    window_s: float = 3600.0


def apply_edit(
    db: sqlite3.Connection,
    raw: bytes | None,
    source: tuple[str, int, int],
    timestamp: float | None,
    limits: EditLimits,
    tag_id: TagId,
) -> TagEdit:
    """Validate one ``photo-tag-edits`` record, log it and apply it to its owner's photo; EditRejected (with
    its dead-letter code) when it is malformed, rate-limited or names someone else's photo. A redelivered
    record (same source) changes nothing."""
    edit = parse_tag_edit(raw, timestamp)
    if db.execute(
        "SELECT 1 FROM edits WHERE source_topic = ? AND source_partition = ? AND source_offset = ?", source
    ).fetchone():
        return edit
    row = db.execute("SELECT owner FROM uploads WHERE photo_id = ?", (edit.photo_id,)).fetchone()
    if row is not None and row[0] != edit.owner:
        raise EditRejected(
            EditError.NOT_OWNER,
            f"photo {edit.photo_id!r} belongs to "
            + ("nobody (its upload names no owner)" if row[0] is None else "another owner"),
        )
    at_s = timestamp if timestamp is not None and timestamp >= 0 else parse_rfc3339(edit.at).timestamp()
    (recent,) = db.execute(
        "SELECT count(*) FROM edits WHERE owner = ? AND at_s > ? AND at_s <= ?",
        (edit.owner, at_s - limits.window_s, at_s),
    ).fetchone()
    if recent >= limits.rate_limit:
        raise EditRejected(
            EditError.RATE_LIMITED,
            f"owner made {recent} edits in {limits.window_s:.0f}s, limit {limits.rate_limit}",
        )
    db.execute(
        "INSERT INTO edits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*source, edit.photo_id, edit.owner, orjson.dumps(edit.added).decode(),
         orjson.dumps(edit.removed).decode(), edit.model_version, edit.at, at_s),
    )  # fmt: skip
    for state, tags in (("added", edit.added), ("removed", edit.removed)):
        for tag in tags:
            db.execute(
                "INSERT INTO tag_overrides VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET state = excluded.state",
                (edit.photo_id, edit.owner, tag, state),
            )
    refresh(db, edit.photo_id, tag_id)
    return edit


def edit_dead_letter(
    raw: bytes | None, error: EditRejected, source: tuple[str, int, int], timestamp: float | None
) -> tuple[bytes | None, bytes]:
    """(key, value) of the dead letter of a refused edit: the uploads' dead-letter record, keyed by photo."""
    from contracts.records import photo_id_hint

    photo_id = photo_id_hint(raw, None)
    value = dead_letter(raw, photo_id, error, *source, record_timestamp=timestamp)  # type: ignore[arg-type]
    return (photo_id.encode() if photo_id else None), value


def remember_prediction(db: sqlite3.Connection, photo_id: str, tags_json: str) -> None:
    """Keep the model's own tags of a photo (the tag event's), from which :func:`refresh` starts."""
    db.execute("INSERT OR REPLACE INTO predicted_tags VALUES (?, ?)", (photo_id, tags_json))


def refresh(db: sqlite3.Connection, photo_id: str, tag_id: TagId) -> None:
    """Recompute a tagged photo's effective tags (``photos.tags`` and ``photo_tags``) from the model's tags
    and its owner's overrides; nothing for a photo without a tag event yet."""
    predicted = db.execute(
        "SELECT coalesce((SELECT tags FROM predicted_tags WHERE photo_id = ?1), "
        "(SELECT tags FROM photos WHERE photo_id = ?1))",  # an index from before edits: its tags are the model's
        (photo_id,),
    ).fetchone()[0]
    if predicted is None:
        return
    overrides = dict(
        db.execute(
            "SELECT o.tag, o.state FROM tag_overrides o JOIN uploads u "
            "ON u.photo_id = o.photo_id AND u.owner = o.owner WHERE o.photo_id = ?",
            (photo_id,),
        ).fetchall()
    )
    tags = effective_tags(orjson.loads(predicted), overrides)
    db.execute("UPDATE photos SET tags = ? WHERE photo_id = ?", (orjson.dumps(tags).decode(), photo_id))
    db.execute("DELETE FROM photo_tags WHERE photo_id = ?", (photo_id,))
    for tag in tags:
        db.execute(
            "INSERT INTO photo_tags VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET score = max(score, excluded.score)",
            (photo_id, tag_id(db, tag["tag"]), tag["score"]),
        )


def effective_tags(predicted: list[dict], overrides: dict[str, str]) -> list[dict]:
    """The model's tags less the removed, plus the added (score 1.0, ``"edited": "added"``), best first."""
    added = [tag for tag, state in overrides.items() if state == "added"]
    kept = [
        t for t in predicted if overrides.get(normalize_tag(t["tag"])) is None
    ]  # an added tag the model also has is shown once, as the owner's
    tags = [{"tag": tag, "score": 1.0, "edited": "added"} for tag in sorted(added)] + kept
    return sorted(tags, key=lambda t: -t["score"])


# -- the edit log, for training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoLabels:
    """What one owner says about one of their photos, all their edits folded (the last word on a tag wins);
    ``kept``: the model's tags of the photo that the owner saw and left as they were."""

    photo_id: str
    owner: str
    added: frozenset[str]
    removed: frozenset[str]
    kept: frozenset[str] = frozenset()


def owner_labels(db: sqlite3.Connection) -> list[PhotoLabels]:
    """Every edited photo's labels from its owner (edits whose photo turned out to be someone else's are
    left out), in the order of their first edit."""
    rows = db.execute(
        "SELECT e.photo_id, e.owner, e.added, e.removed FROM edits e JOIN uploads u "
        "ON u.photo_id = e.photo_id AND u.owner = e.owner ORDER BY e.at_s, e.source_partition, e.source_offset"
    ).fetchall()
    predicted = {
        pid: {normalize_tag(t["tag"]) for t in orjson.loads(tags)}
        for pid, tags in db.execute(
            "SELECT photo_id, tags FROM predicted_tags WHERE photo_id IN (SELECT photo_id FROM edits)"
        )
    }
    folded: dict[tuple[str, str], dict[str, str]] = {}
    for photo_id, owner, added, removed in rows:
        states = folded.setdefault((photo_id, owner), {})
        states.update(dict.fromkeys(orjson.loads(added), "added"))
        states.update(dict.fromkeys(orjson.loads(removed), "removed"))
    return [
        PhotoLabels(
            pid,
            owner,
            frozenset(t for t, s in states.items() if s == "added"),
            frozenset(t for t, s in states.items() if s == "removed"),
            frozenset(predicted.get(pid, set()) - set(states)),
        )
        for (pid, owner), states in folded.items()
    ]


def global_corrections(labels: list[PhotoLabels], votes: int) -> set[tuple[str, str]]:
    """The corrections that may enter global training: ``(tag, "added" | "removed" | "kept")`` made by at
    least ``votes`` distinct owners. One owner is one vote however many photos they edit, so no single owner (nor
    fewer than ``votes`` owners together) can change a global label."""
    owners: dict[tuple[str, str], set[str]] = defaultdict(set)
    for photo in labels:
        for tag in photo.added:
            owners[(tag, "added")].add(photo.owner)
        for tag in photo.removed:
            owners[(tag, "removed")].add(photo.owner)
        for tag in photo.kept:
            owners[(tag, "kept")].add(photo.owner)
    return {correction for correction, who in owners.items() if len(who) >= votes}
