import base64
import time

import orjson
import pytest

from contracts.records import (
    MAX_EVENT_BYTES,
    ErrorCode,
    PermanentError,
    Upload,
    dead_letter,
    parse_upload,
    photo_id_hint,
    tag_event,
)

GOOD = {
    "photo_id": "p1",
    "url": "file:///photos/a.jpg",
    "owner": "ann",
    "uploaded_at": "2026-11-29T10:00:00Z",
    "user_tags": ["sea"],
}


def test_valid_upload_parses_every_field():
    upload = parse_upload(orjson.dumps(GOOD))
    assert (upload.photo_id, upload.url, upload.owner, upload.user_tags) == (
        "p1",
        "file:///photos/a.jpg",
        "ann",
        ["sea"],
    )


#: a Kafka record's timestamp (CreateTime), in seconds as Faust gives it: 2025-12-01T10:00:00.123Z
RECORD_TS = 1764583200.123


def test_optional_fields_default_and_a_missing_uploaded_at_is_the_records_timestamp():
    upload = parse_upload(b'{"photo_id": "p2", "url": "https://x.org/a.jpg"}', RECORD_TS)
    assert upload.owner is None and upload.user_tags == []
    assert upload.uploaded_at == "2025-12-01T10:00:00.123Z"


def test_a_redelivered_upload_without_uploaded_at_gives_an_identical_tag_event():
    raw = b'{"photo_id": "p2", "url": "https://x.org/a.jpg"}'
    first = tag_event(parse_upload(raw, RECORD_TS), [("sea", 0.9)], "tagger", "1", "2026-01-01T00:00:01Z")
    time.sleep(0.01)  # the clock moves on; a redelivery must not notice
    again = tag_event(parse_upload(raw, RECORD_TS), [("sea", 0.9)], "tagger", "1", "2026-01-01T00:00:01Z")
    assert first == again


def test_a_missing_uploaded_at_without_a_record_timestamp_is_invalid_not_now():
    for timestamp in (None, -0.001):  # no timestamp; a pre-0.10 record's -1 ms
        with pytest.raises(PermanentError, match="'uploaded_at' is missing") as err:
            parse_upload(b'{"photo_id": "p2", "url": "https://x.org/a.jpg"}', timestamp)
        assert err.value.code == ErrorCode.INVALID_EVENT


def test_a_redelivered_dead_letter_is_identical_and_dated_by_its_record():
    error = PermanentError(ErrorCode.FETCH_FAILED, "404")
    first = dead_letter(b'{"photo_id": "p"}', "p", error, "photo-uploads", 0, 7, RECORD_TS)
    time.sleep(0.01)
    assert dead_letter(b'{"photo_id": "p"}', "p", error, "photo-uploads", 0, 7, RECORD_TS) == first
    assert orjson.loads(first)["at"] == "2025-12-01T10:00:00.123Z"


@pytest.mark.parametrize(
    ("raw", "code", "fragment"),
    [
        (b"{not json", ErrorCode.INVALID_EVENT, "not JSON"),
        (b"[1, 2]", ErrorCode.INVALID_EVENT, "JSON object"),
        (b'{"url": "file:///a.jpg"}', ErrorCode.INVALID_EVENT, "'photo_id'"),
        (b'{"photo_id": "x"}', ErrorCode.INVALID_EVENT, "'url'"),
        (b'{"photo_id": 5, "url": "file:///a"}', ErrorCode.INVALID_EVENT, "'photo_id'"),
        (
            b'{"photo_id": "x", "url": "file:///a", "user_tags": "sea"}',
            ErrorCode.INVALID_EVENT,
            "'user_tags'",
        ),
        (
            b'{"photo_id": "x", "url": "file:///a", "uploaded_at": "yesterday"}',
            ErrorCode.INVALID_EVENT,
            "RFC 3339",
        ),
        (b'{"photo_id": "x", "url": "file:///a", "owner": 7}', ErrorCode.INVALID_EVENT, "'owner'"),
        (None, ErrorCode.INVALID_EVENT, "tombstone"),
        (b"x" * (MAX_EVENT_BYTES + 1), ErrorCode.EVENT_TOO_LARGE, "limit"),
    ],
)
def test_malformed_events_are_permanent_errors_naming_the_problem(raw, code, fragment):
    with pytest.raises(PermanentError) as err:
        parse_upload(raw)
    assert err.value.code == code and fragment in err.value.detail


def test_dead_letter_keeps_text_and_binary_originals():
    error = PermanentError(ErrorCode.INVALID_EVENT, "not JSON")
    text = orjson.loads(dead_letter(b"{oops", "k", error, "photo-uploads", 3, 42, RECORD_TS))
    assert text["original"] == "{oops" and text["source"] == {
        "topic": "photo-uploads",
        "partition": 3,
        "offset": 42,
    }
    assert text["error"] == "invalid_event" and text["photo_id"] == "k"
    binary = orjson.loads(dead_letter(b"\xff\xfe", None, error, "photo-uploads", 0, 1, RECORD_TS))
    assert binary["original_encoding"] == "base64" and base64.b64decode(binary["original"]) == b"\xff\xfe"


def test_photo_id_hint_prefers_key_then_value():
    assert photo_id_hint(b'{"photo_id": "v"}', b"k") == "k"
    assert photo_id_hint(b'{"photo_id": "v"}', None) == "v"
    assert photo_id_hint(b"garbage", None) is None


def test_tag_event_follows_the_contract():
    upload = Upload(photo_id="p", url="file:///a", uploaded_at="2026-01-01T00:00:00Z")
    event = orjson.loads(
        tag_event(upload, [("sea", 0.91234), ("sky", 0.5)], "tagger", "3", "2026-01-01T00:00:01Z")
    )
    assert event == {
        "photo_id": "p",
        "tags": [{"tag": "sea", "score": 0.9123}, {"tag": "sky", "score": 0.5}],
        "model": "tagger",
        "model_version": "3",
        "url": "file:///a",  # so that an index keeps the URL of the event whose tags it keeps
        "uploaded_at": "2026-01-01T00:00:00Z",
        "tagged_at": "2026-01-01T00:00:01Z",
    }
