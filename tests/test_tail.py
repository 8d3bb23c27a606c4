"""``darkroom tail``'s line for one record: what a person reads while the stream runs. Every byte of a record is
hostile (a producer other than our worker can write to these topics): a line is always printed, never raised."""

from __future__ import annotations

import orjson
import pytest

from tools.cli import tail_line

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01".encode()


def test_a_tag_event_names_the_photo_version_tags_and_its_trace():
    event = {"photo_id": "p1", "model_version": "2", "tags": [{"tag": "sky", "score": 0.912}]}
    line = tail_line("photo-tags", orjson.dumps(event), [("traceparent", TRACEPARENT)], "photo-uploads-dlq")
    assert line == f"TAGS p1  v2  sky 0.91  trace {TRACE}"


def test_a_dead_letter_names_its_error_and_trace():
    letter = {"photo_id": "p2", "error": "not_found", "detail": "404 from origin"}
    headers = [("x-request-id", b"1"), ("traceparent", TRACEPARENT)]
    line = tail_line("photo-uploads-dlq", orjson.dumps(letter), headers, "photo-uploads-dlq")
    assert line == f"DLQ  p2  not_found: 404 from origin  trace {TRACE}"


def test_no_trace_or_an_invalid_one_prints_none():
    event = orjson.dumps({"photo_id": "p3", "model_version": "1", "tags": []})
    assert tail_line("photo-tags", event, None, "dlq") == "TAGS p3  v1  "
    bad = [("traceparent", b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01"), ("traceparent", b"\xff")]
    assert "trace" not in tail_line("photo-tags", event, bad, "dlq")


@pytest.mark.parametrize(
    "value, shown",
    [
        (b"\xff\x00 not json", "(not JSON)"),
        (None, "(not an event)"),
        (b"[1, 2]", "(not an event)"),
        (b'"a string"', "(not an event)"),
        (b'{"photo_id": "p", "tags": "sky"}', "TAGS p  vNone  "),
        (
            b'{"photo_id": "p", "tags": [1, {"tag": "sky", "score": "high"}, {"score": 0.5}]}',
            "sky, None 0.50",
        ),
    ],
)
def test_hostile_records_print_a_line_and_never_raise(value, shown):
    assert shown in tail_line("photo-tags", value, [("traceparent", None)], "dlq")
