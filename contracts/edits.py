"""Users' tag edits: the ``photo-tag-edits`` record (schemas/photo-tag-edits.schema.json), its parser and builder.

An edit says what one owner changed on one of their photos: tags they added, predicted tags they removed, and
the model version whose tags they saw. Values are parsed by hand, as uploads are, so a malformed value
becomes a dead letter (``photo-tag-edits-dlq``, the dead-letter schema of the uploads) naming the problem,
never an exception inside the indexer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson

from contracts.records import (
    MAX_ID_CHARS,
    MAX_TAG_CHARS,
    now_rfc3339,
    parse_rfc3339,
    record_time,
)

#: An edit is a few tags: anything bigger is not a person clicking.
MAX_EDIT_BYTES = 16 * 1024
#: Tags one edit may add or remove (each list).
MAX_EDIT_TAGS = 64


class EditError(StrEnum):
    """Why an edit was dead-lettered (``photo-tag-edits-dlq``'s ``error``)."""

    INVALID_EVENT = "invalid_event"
    EVENT_TOO_LARGE = "event_too_large"
    #: the owner sent more edits in the rate window than ``edit_rate_limit`` allows
    RATE_LIMITED = "rate_limited"
    #: the photo belongs to another owner (as its upload says): an edit labels only the editor's own photos
    NOT_OWNER = "not_owner"


class EditRejected(ValueError):
    """An edit that is dead-lettered with ``code`` and ``detail`` (the interface of records.PermanentError)."""

    def __init__(self, code: EditError, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class TagEdit:
    """A validated ``photo-tag-edits`` value: tags normalized (trimmed, lower case), no tag both added and
    removed, at least one change."""

    photo_id: str
    owner: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    model_version: int | None
    at: str

    def to_json(self) -> dict:
        return {
            "photo_id": self.photo_id,
            "owner": self.owner,
            "added": list(self.added),
            "removed": list(self.removed),
            "model_version": None if self.model_version is None else str(self.model_version),
            "at": self.at,
        }


def normalize_tag(tag: str) -> str:
    """The form an edited tag is stored and matched in: trimmed, inner spaces collapsed, lower case."""
    return " ".join(tag.split()).lower()


def parse_tag_edit(raw: bytes | None, record_timestamp: float | None = None) -> TagEdit:
    """Validate a raw ``photo-tag-edits`` value; raise EditRejected naming the first problem. A missing
    ``at`` is the record's timestamp (never the clock), so a redelivery yields the same edit."""
    if raw is None:
        raise EditRejected(EditError.INVALID_EVENT, "empty value (tombstone)")
    if len(raw) > MAX_EDIT_BYTES:
        raise EditRejected(EditError.EVENT_TOO_LARGE, f"edit is {len(raw)} bytes, limit {MAX_EDIT_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EditRejected(EditError.INVALID_EVENT, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EditRejected(EditError.INVALID_EVENT, f"expected a JSON object, got {type(data).__name__}")
    photo_id, owner = (_required(data, key) for key in ("photo_id", "owner"))
    added, removed = (_tags(data, key) for key in ("added", "removed"))
    both = sorted(set(added) & set(removed))
    if both:
        raise EditRejected(EditError.INVALID_EVENT, f"tag(s) {', '.join(both)} both added and removed")
    if not added and not removed:
        raise EditRejected(EditError.INVALID_EVENT, "an edit must add or remove at least one tag")
    version = data.get("model_version")
    if version is not None and (
        not isinstance(version, str) or not version.isascii() or not version.isdigit() or version[0] == "0"
    ):
        raise EditRejected(
            EditError.INVALID_EVENT,
            f"'model_version' must be a positive integer as a string, got {version!r:.40}",
        )
    at = data.get("at")
    if at is None:
        at = record_time(record_timestamp)
        if at is None:
            raise EditRejected(EditError.INVALID_EVENT, "'at' is missing and the record carries no timestamp")
    elif not isinstance(at, str):
        raise EditRejected(EditError.INVALID_EVENT, "'at' must be an RFC 3339 string")
    else:
        try:
            parse_rfc3339(at)
        except ValueError:
            raise EditRejected(EditError.INVALID_EVENT, f"'at' {at[:40]!r} is not RFC 3339") from None
    return TagEdit(photo_id, owner, added, removed, int(version) if version else None, at)


def _required(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EditRejected(EditError.INVALID_EVENT, f"'{key}' is required and must be a non-empty string")
    if len(value) > MAX_ID_CHARS:
        raise EditRejected(EditError.INVALID_EVENT, f"'{key}' is {len(value)} chars, limit {MAX_ID_CHARS}")
    return value


def _tags(data: dict, key: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if (
        not isinstance(value, list)
        or len(value) > MAX_EDIT_TAGS
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_TAG_CHARS and normalize_tag(t) for t in value)
    ):
        raise EditRejected(
            EditError.INVALID_EVENT,
            f"'{key}' must be a list of <= {MAX_EDIT_TAGS} non-blank strings of <= {MAX_TAG_CHARS} chars",
        )
    return tuple(dict.fromkeys(normalize_tag(t) for t in value))


def edit_value(
    photo_id: str,
    owner: str,
    added: list[str] | tuple[str, ...] = (),
    removed: list[str] | tuple[str, ...] = (),
    model_version: int | str | None = None,
    at: str | None = None,
) -> bytes:
    """The ``photo-tag-edits`` value, validated (EditRejected if it would be dead-lettered): the one builder
    that ``darkroom edit``, the search page and the tests share."""
    value = orjson.dumps(
        {
            "photo_id": photo_id,
            "owner": owner,
            "added": list(added),
            "removed": list(removed),
            "model_version": None if model_version is None else str(model_version),
            "at": at or now_rfc3339(),
        }
    )
    parse_tag_edit(value)
    return value
