"""The three topics' records: upload events in, tag events and dead letters out (see DESIGN.md, Contracts).

Input values are parsed here by hand rather than by Faust's codec, so that a malformed value becomes a
dead letter carrying the raw bytes instead of an exception inside the consumer.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import faust
import orjson

MAX_EVENT_BYTES = 64 * 1024
MAX_ID_CHARS = 256
MAX_URL_CHARS = 4096
MAX_USER_TAGS = 256
MAX_TAG_CHARS = 128
#: A dead letter keeps at most this much of the original value (the rest stays in the input topic at the
#: offset the letter names); a full 1 MB value, base64-encoded, would not fit a default Kafka record.
MAX_DLQ_ORIGINAL_BYTES = 128 * 1024
#: A dead letter's ``at`` when its input record has no timestamp (pre-0.10 format, or none given): a constant
EPOCH = "1970-01-01T00:00:00.000Z"


class ErrorCode(StrEnum):
    """Why an upload was dead-lettered. A small fixed set, so consumers can switch on it."""

    INVALID_EVENT = "invalid_event"
    EVENT_TOO_LARGE = "event_too_large"
    FORBIDDEN_URL = "forbidden_url"
    NOT_FOUND = "not_found"
    FETCH_FAILED = "fetch_failed"
    #: the source kept timing out / refusing / answering 5xx through every retry: replayable later
    FETCH_UNAVAILABLE = "fetch_unavailable"
    TOO_LARGE = "too_large"
    UNSUPPORTED_FORMAT = "unsupported_format"
    TOO_MANY_PIXELS = "too_many_pixels"
    TOO_MANY_FRAMES = "too_many_frames"
    DECODE_FAILED = "decode_failed"
    DECODE_TIMEOUT = "decode_timeout"
    #: the model kept failing on this one input (or answering it unusably) while it answered others
    MODEL_ERROR = "model_error"


class SourceUnavailable(Exception):
    """The photo's source did not answer usefully this time (timeout, refused, 5xx, 429): worth a retry."""


class PermanentError(Exception):
    """An upload that can never succeed: it is dead-lettered with ``code`` and ``detail``."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Upload(faust.Record, serializer="json"):
    """A new photo: the ``photo-uploads`` value."""

    photo_id: str
    url: str
    owner: str | None = None
    uploaded_at: str = ""
    user_tags: list[str] = []  # noqa: RUF012 - faust.Record copies defaults per instance


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds."""
    return rfc3339(datetime.now(UTC).timestamp())


def rfc3339(timestamp: float) -> str:
    """A POSIX timestamp (seconds) as RFC 3339 UTC with milliseconds."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_time(timestamp: float | None) -> str | None:
    """A Kafka record's timestamp (seconds; None or negative when the record has none) as RFC 3339: the time
    of the input itself, so every redelivery of it derives the same value."""
    return rfc3339(timestamp) if timestamp is not None and timestamp >= 0 else None


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset); raises ValueError otherwise."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return parsed


def parse_upload(raw: bytes | None, record_timestamp: float | None = None) -> Upload:
    """Validate a raw ``photo-uploads`` value; raise PermanentError naming the first problem. A missing
    ``uploaded_at`` is the record's timestamp (seconds), never the clock: a redelivery yields the same event."""
    if raw is None:
        raise PermanentError(ErrorCode.INVALID_EVENT, "empty value (tombstone)")
    if len(raw) > MAX_EVENT_BYTES:
        raise PermanentError(ErrorCode.EVENT_TOO_LARGE, f"event is {len(raw)} bytes, limit {MAX_EVENT_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PermanentError(ErrorCode.INVALID_EVENT, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PermanentError(ErrorCode.INVALID_EVENT, f"expected a JSON object, got {type(data).__name__}")
    photo_id = _required_str(data, "photo_id", MAX_ID_CHARS)
    url = _required_str(data, "url", MAX_URL_CHARS)
    owner = data.get("owner")
    if owner is not None and (not isinstance(owner, str) or len(owner) > MAX_ID_CHARS):
        raise PermanentError(ErrorCode.INVALID_EVENT, f"'owner' must be a string of <= {MAX_ID_CHARS} chars")
    uploaded_at = data.get("uploaded_at")
    if uploaded_at is not None:  # when missing, it is taken from the record once the rest is valid
        if not isinstance(uploaded_at, str):
            raise PermanentError(ErrorCode.INVALID_EVENT, "'uploaded_at' must be an RFC 3339 string")
        try:
            parse_rfc3339(uploaded_at)
        except ValueError:
            raise PermanentError(
                ErrorCode.INVALID_EVENT, f"'uploaded_at' {uploaded_at!r} is not RFC 3339"
            ) from None
    user_tags = data.get("user_tags", [])
    if (
        not isinstance(user_tags, list)
        or len(user_tags) > MAX_USER_TAGS
        or not all(isinstance(t, str) and len(t) <= MAX_TAG_CHARS for t in user_tags)
    ):
        raise PermanentError(
            ErrorCode.INVALID_EVENT,
            f"'user_tags' must be a list of <= {MAX_USER_TAGS} strings of <= {MAX_TAG_CHARS} chars",
        )
    if uploaded_at is None:
        uploaded_at = record_time(record_timestamp)
        if uploaded_at is None:
            raise PermanentError(
                ErrorCode.INVALID_EVENT, "'uploaded_at' is missing and the record carries no timestamp"
            )
    return Upload(photo_id=photo_id, url=url, owner=owner, uploaded_at=uploaded_at, user_tags=user_tags)


def _required_str(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise PermanentError(ErrorCode.INVALID_EVENT, f"'{key}' is required and must be a non-empty string")
    if len(value) > limit:
        raise PermanentError(ErrorCode.INVALID_EVENT, f"'{key}' is {len(value)} chars, limit {limit}")
    return value


def photo_id_hint(raw: bytes | None, key: bytes | None) -> str | None:
    """Best-effort photo_id for a dead letter: the record key, else a string ``photo_id`` in the value."""
    if key:
        return key[: MAX_ID_CHARS * 4].decode("utf-8", "replace")[:MAX_ID_CHARS]
    if raw is None or len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        value = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    pid = value.get("photo_id") if isinstance(value, dict) else None
    return pid if isinstance(pid, str) else None


def upload_value(
    photo_id: str,
    url: str,
    owner: str | None = None,
    user_tags: Sequence[str] = (),
    uploaded_at: str | None = None,
) -> bytes:
    """The ``photo-uploads`` value: the one builder that ``publish``, ``backfill`` and the benchmark share."""
    return orjson.dumps(
        {
            "photo_id": photo_id,
            "url": url,
            "owner": owner,
            "uploaded_at": uploaded_at or now_rfc3339(),
            "user_tags": list(user_tags),
        }
    )


def tag_event(
    upload: Upload, tags: list[tuple], model: str, model_version: str, tagged_at: str, shadow: bool = False
) -> bytes:
    """The ``photo-tags`` value (``shadow``: the ``photo-tags-shadow`` value, the same plus ``"shadow": true``).
    Tags arrive sorted by score and already above the model's thresholds, as ``(tag, score)`` or
    ``(tag, score, id)`` (a stable tag id where the vocabulary has one)."""
    return orjson.dumps(
        {
            "photo_id": upload.photo_id,
            "tags": [{"tag": t, "score": round(s, 4), **({"id": i[0]} if i else {})} for t, s, *i in tags],
            "model": model,
            "model_version": model_version,
            "url": upload.url,  # an index keeps the URL of the very event whose tags it keeps
            "uploaded_at": upload.uploaded_at,
            "tagged_at": tagged_at,
            **({"shadow": True} if shadow else {}),
        }
    )


def dead_letter(
    raw: bytes | None,
    photo_id: str | None,
    error: PermanentError,
    topic: str,
    partition: int,
    offset: int,
    record_timestamp: float | None = None,
) -> bytes:
    """The ``photo-uploads-dlq`` value; the original value is kept as text, or base64 if not UTF-8, up to
    ``MAX_DLQ_ORIGINAL_BYTES`` (``original_size`` says how long it was, ``source`` where the rest is).
    ``at`` is the input record's timestamp, not the clock, so a redelivery yields an identical letter."""
    kept = raw[:MAX_DLQ_ORIGINAL_BYTES] if raw is not None else None
    try:
        original: str | None = kept.decode("utf-8") if kept is not None else None
        encoding = "text"
    except UnicodeDecodeError:
        original = base64.b64encode(kept or b"").decode("ascii")
        encoding = "base64"
    if photo_id is not None and len(photo_id) > MAX_ID_CHARS:
        photo_id = photo_id[:MAX_ID_CHARS]
    return orjson.dumps(
        {
            "photo_id": photo_id,
            "error": str(error.code),
            "detail": error.detail,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "original": original,
            "original_encoding": encoding,
            "original_size": len(raw) if raw is not None else 0,
            "original_truncated": raw is not None and len(raw) > MAX_DLQ_ORIGINAL_BYTES,
            "at": record_time(record_timestamp) or EPOCH,
        }
    )


# -- reading tag events and dead letters back (the search index, and any consumer) --------------------------
class InvalidEvent(ValueError):
    """A record the index cannot use; the message names the field and what was expected."""


@dataclass(frozen=True)
class TagEvent:
    """A validated ``photo-tags`` value (schemas/photo-tags.schema.json)."""

    photo_id: str
    tags: tuple[tuple[str, float], ...]
    model: str
    model_version: int
    uploaded_at: str
    tagged_at: str
    url: str | None = None


def parse_tag_event(raw: bytes | None) -> TagEvent:
    """Validate a raw ``photo-tags`` value; unknown fields are ignored (the contract evolves additively)."""
    data = _json_object(raw)
    photo_id = _string(data, "photo_id")
    model = _string(data, "model")
    version_text = _string(data, "model_version")
    if not version_text.isascii() or not version_text.isdigit() or version_text.startswith("0"):
        raise InvalidEvent(f"'model_version' must be a positive integer as a string, got {version_text!r}")
    tags = data.get("tags")
    if not isinstance(tags, list):
        raise InvalidEvent("'tags' must be a list of {tag, score} objects")
    parsed: list[tuple[str, float]] = []
    for item in tags:
        tag = item.get("tag") if isinstance(item, dict) else None
        score = item.get("score") if isinstance(item, dict) else None
        if (
            not isinstance(tag, str)
            or not tag
            or isinstance(score, bool)
            or not isinstance(score, int | float)
        ):
            raise InvalidEvent(
                f"each tag must be {{'tag': non-empty str, 'score': number}}, got {item!r:.100}"
            )
        if not 0.0 <= score <= 1.0:
            raise InvalidEvent(f"score of tag {tag!r} is {score}, expected 0..1")
        parsed.append((tag, float(score)))
    url = data.get("url")
    if url is not None and (not isinstance(url, str) or not url):
        raise InvalidEvent("'url' must be a non-empty string when present")
    stamps = {key: _string(data, key) for key in ("uploaded_at", "tagged_at")}
    for key, text in stamps.items():
        try:
            parse_rfc3339(text)
        except ValueError:
            raise InvalidEvent(f"'{key}' {text!r} is not an RFC 3339 timestamp") from None
    return TagEvent(
        photo_id, tuple(parsed), model, int(version_text), stamps["uploaded_at"], stamps["tagged_at"], url
    )


@dataclass(frozen=True)
class DeadLetter:
    """The fields of a ``photo-uploads-dlq`` value the index counts (schemas/photo-uploads-dlq.schema.json)."""

    source: tuple[str, int, int]
    photo_id: str | None
    error: str
    at: str


def parse_dead_letter(raw: bytes | None) -> DeadLetter:
    """Validate a raw dead letter; its source (topic, partition, offset) identifies it across redeliveries."""
    data = _json_object(raw)
    source = data.get("source")
    if not isinstance(source, dict):
        raise InvalidEvent("'source' must be an object {topic, partition, offset}")
    topic, partition, offset = source.get("topic"), source.get("partition"), source.get("offset")
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
        raise InvalidEvent(
            f"'source' must be {{topic: str, partition: int, offset: int}}, got {source!r:.100}"
        )
    photo_id = data.get("photo_id")
    if photo_id is not None and not isinstance(photo_id, str):
        raise InvalidEvent("'photo_id' must be a string or null")
    return DeadLetter((topic, partition, offset), photo_id, _string(data, "error"), _string(data, "at"))


def _json_object(raw: bytes | None) -> dict:
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(data).__name__}")
    return data


def _string(data: dict, key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"'{key}' is required and must be a non-empty string")
    return value
