"""The three topics' JSON Schemas: producers write what they promise, consumers accept what is promised,
and the schemas stay open for additive evolution."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from contracts.records import (
    ErrorCode,
    InvalidEvent,
    PermanentError,
    Upload,
    dead_letter,
    parse_dead_letter,
    parse_rfc3339,
    parse_tag_event,
    parse_upload,
    tag_event,
)
from search.backfill import manifest_photos
from stream.clients import upload_event

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TOPICS = ("photo-uploads", "photo-tags", "photo-uploads-dlq")

formats = FormatChecker()


@formats.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    return not isinstance(value, str) or bool(parse_rfc3339(value))


def validator(topic: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=formats)


def assert_valid(topic: str, value: bytes) -> None:
    errors = [
        f"{'/'.join(map(str, e.path))}: {e.message}"
        for e in validator(topic).iter_errors(orjson.loads(value))
    ]
    assert not errors, errors


def is_valid(topic: str, value: object) -> bool:
    return validator(topic).is_valid(value)


UPLOAD = Upload(photo_id="p1", url="file:///photos/p1.jpg", owner=None, uploaded_at="2026-01-01T00:00:00Z")
TAGS = {
    "photo_id": "p1",
    "tags": [{"tag": "beach", "score": 0.91}],
    "model": "tagger",
    "model_version": "2",
    "uploaded_at": "2026-01-01T00:00:00Z",
    "tagged_at": "2026-01-01T00:00:01.250Z",
}
LETTER = {
    "photo_id": None,
    "error": "invalid_event",
    "detail": "not JSON",
    "source": {"topic": "photo-uploads", "partition": 0, "offset": 3},
    "original": "{oops",
    "original_encoding": "text",
    "at": "2026-01-01T00:00:00Z",
}


@pytest.mark.parametrize("topic", TOPICS)
def test_each_schema_is_valid_json_schema_2020_12(topic):
    Draft202012Validator.check_schema(json.loads((SCHEMAS / f"{topic}.schema.json").read_text()))


@pytest.mark.parametrize("topic", TOPICS)
def test_schemas_stay_open_so_fields_can_be_added(topic):
    """Additive evolution: a consumer built on today's schema must accept tomorrow's extra field."""
    schema = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    assert "additionalProperties" not in json.dumps(schema)
    example = {
        "photo-uploads": {"photo_id": "p", "url": "file:///p.jpg"},
        "photo-tags": TAGS,
        "photo-uploads-dlq": LETTER,
    }[topic]
    assert is_valid(topic, {**example, "added_in_a_later_version": {"any": 1}})


def test_worker_tag_events_match_the_schema():
    assert_valid(
        "photo-tags",
        tag_event(UPLOAD, [("beach", 0.912345), ("sea", 0.5)], "tagger", "3", "2026-01-01T00:00:01Z"),
    )
    assert_valid(
        "photo-tags", tag_event(UPLOAD, [], "tagger", "1", "2026-01-01T00:00:01Z")
    )  # nothing over threshold


@pytest.mark.parametrize("raw", [b'{"photo_id": "a", "url": "file:///a.jpg"}', b"\xff\xfe not utf-8", None])
def test_worker_dead_letters_match_the_schema(raw):
    error = PermanentError(ErrorCode.INVALID_EVENT, "bad")
    assert_valid("photo-uploads-dlq", dead_letter(raw, None, error, "photo-uploads", 2, 17, 1764583200.0))


def test_every_dead_letter_code_is_named_in_the_schema():
    description = json.loads((SCHEMAS / "photo-uploads-dlq.schema.json").read_text())["properties"]["error"][
        "description"
    ]
    assert all(code.value in description for code in ErrorCode)


def test_publish_and_backfill_upload_events_match_the_schema(tmp_path):
    photo = tmp_path / "a b.jpg"
    photo.write_bytes(b"")
    assert_valid("photo-uploads", upload_event(photo, owner="me", user_tags=["beach"])[1])
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text(
        '{"path": "a b.jpg", "owner": "u1", "user_tags": ["x"], "labels": ["sea"]}\n'
        '{"url": "https://example.com/p.jpg", "photo_id": "remote-1", "uploaded_at": "2020-05-01T10:00:00+02:00"}\n'
    )
    for photo in manifest_photos(manifest):
        assert_valid("photo-uploads", photo.value)


# Consumers agree with the schema: what it accepts they accept, what it rejects they reject.
UPLOAD_CASES = [
    {"photo_id": "p", "url": "file:///p.jpg"},
    {
        "photo_id": "p",
        "url": "https://x.org/p.jpg",
        "owner": None,
        "uploaded_at": "2026-01-01T00:00:00+01:00",
        "user_tags": [],
    },
    {"photo_id": "", "url": "file:///p.jpg"},
    {"photo_id": "p"},
    {"photo_id": "p", "url": "file:///p.jpg", "owner": 7},
    {"photo_id": "p", "url": "file:///p.jpg", "uploaded_at": "yesterday"},
    {"photo_id": "p", "url": "file:///p.jpg", "user_tags": "beach"},
    {"photo_id": "p", "url": "file:///p.jpg", "user_tags": ["x" * 129]},
]
TAG_CASES = [
    TAGS,
    {**TAGS, "tags": []},
    {**TAGS, "url": "https://x.org/p.jpg"},
    {**TAGS, "url": 7},
    {**TAGS, "model_version": "v2"},
    {**TAGS, "model_version": 2},
    {**TAGS, "model_version": "02"},
    {**TAGS, "tags": [{"tag": "beach"}]},
    {**TAGS, "tags": [{"tag": "beach", "score": 1.5}]},
    {**TAGS, "tagged_at": "2026-01-01 00:00"},
    {k: v for k, v in TAGS.items() if k != "model"},
]
LETTER_CASES = [
    LETTER,
    {**LETTER, "photo_id": "p", "original": "AAEC", "original_encoding": "base64"},
    {**LETTER, "source": {"topic": "photo-uploads", "partition": "0", "offset": 3}},
    {**LETTER, "source": None},
    {**LETTER, "photo_id": 5},
    {k: v for k, v in LETTER.items() if k != "error"},
]


@pytest.mark.parametrize("case", UPLOAD_CASES)
def test_the_upload_parser_accepts_exactly_what_the_schema_accepts(case):
    # One difference is allowed by design: the worker requires an http(s) or file URL only when fetching,
    # so the pattern is checked by the schema alone.
    try:
        parse_upload(orjson.dumps(case), 1764583200.0)  # a consumed record always has a timestamp
        parsed = True
    except PermanentError:
        parsed = False
    assert parsed == is_valid("photo-uploads", case)


@pytest.mark.parametrize("case", TAG_CASES)
def test_the_indexer_accepts_exactly_the_tag_events_the_schema_accepts(case):
    try:
        parse_tag_event(orjson.dumps(case))
        parsed = True
    except InvalidEvent:
        parsed = False
    assert parsed == is_valid("photo-tags", case)


@pytest.mark.parametrize("case", LETTER_CASES)
def test_the_indexer_accepts_the_dead_letters_the_schema_accepts(case):
    try:
        parse_dead_letter(orjson.dumps(case))
        parsed = True
    except InvalidEvent:
        parsed = False
    assert parsed == is_valid("photo-uploads-dlq", case)
