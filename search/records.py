"""The records the index reads: tag events and dead letters, validated field by field."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from contracts.records import parse_rfc3339


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
