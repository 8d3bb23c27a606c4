"""W3C Trace Context in record headers: the strict ``traceparent`` parser, ``tracestate`` pass-through, the
worker's span (a child, or a new trace, the same for every delivery) and a dead letter's bounded headers."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.tracecontext import (
    DROPPED_HEADERS,
    MAX_DLQ_HEADER_BYTES,
    MAX_DLQ_HEADERS,
    TraceContext,
    dead_letter_headers,
    extract,
    parse_traceparent,
    parse_tracestate,
    record_span,
)

SPEC_EXAMPLE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
VALID = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[0-3]")
WHERE = ("photo-uploads", 3, 1234, 1764583200.123, b"photo-1")  # topic, partition, offset, timestamp, key


def test_the_spec_s_example_parses_from_bytes_and_from_text() -> None:
    for value in (SPEC_EXAMPLE, SPEC_EXAMPLE.encode()):
        assert parse_traceparent(value) == TraceContext(TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(SPEC_EXAMPLE).traceparent == SPEC_EXAMPLE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        42,
        SPEC_EXAMPLE.upper(),  # hex must be lowercase
        SPEC_EXAMPLE.replace(TRACE_ID, TRACE_ID[:8].upper() + TRACE_ID[8:]),
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",  # all-zero trace-id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",  # all-zero parent-id
        "ff" + SPEC_EXAMPLE[2:],  # version ff is forbidden
        SPEC_EXAMPLE + "-extra",  # version 00 is exactly 55 characters
        SPEC_EXAMPLE + "\n",
        " " + SPEC_EXAMPLE,
        SPEC_EXAMPLE[:-1],
        SPEC_EXAMPLE.replace("-", "_"),
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",  # dashes in the wrong places
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01",  # not hex
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        SPEC_EXAMPLE.replace("4bf9", "４bf9"),  # a full-width digit: not ASCII
        b"\xff" * 55,
        SPEC_EXAMPLE.encode() + b"\x00",
    ],
)
def test_anything_but_a_well_formed_traceparent_is_absent(value: object) -> None:
    assert parse_traceparent(value) is None


def test_a_later_version_is_read_as_far_as_version_00_defines_it() -> None:
    later = "cc" + SPEC_EXAMPLE[2:]
    assert parse_traceparent(later) == TraceContext(TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(later + "-what-comes-next") == TraceContext(TRACE_ID, PARENT_ID, 1)
    assert parse_traceparent(later + "what-comes-next") is None  # the next field must start with "-"


def test_sampled_and_random_flags_are_carried_and_unknown_bits_cleared() -> None:
    assert parse_traceparent(SPEC_EXAMPLE[:-2] + "03").flags == 3  # type: ignore[union-attr]
    assert parse_traceparent(SPEC_EXAMPLE[:-2] + "fe").flags == 2  # type: ignore[union-attr]
    assert parse_traceparent(SPEC_EXAMPLE[:-2] + "00").flags == 0  # type: ignore[union-attr]


def test_tracestate_is_kept_normalized_and_dropped_whole_when_any_member_is_invalid() -> None:
    assert (
        parse_tracestate([b"congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"])
        == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    )
    assert parse_tracestate([b"a=1", b"tenant@sys=x y"]) == "a=1,tenant@sys=x y"  # several headers: one list
    for bad in ([b"UPPER=1"], [b"a=1,a=2"], [b"a=\xff"], [b"novalue"], [b"a= "], [b""], []):
        assert parse_tracestate(bad) is None, bad
    assert parse_tracestate([",".join(f"k{i}=v" for i in range(33)).encode()]) is None  # over 32 members
    long = [f"l{i}=" + "x" * 200 for i in range(4)]
    kept = parse_tracestate([",".join(["short=1", *long]).encode()])
    assert kept is not None and len(kept) <= 512 and kept.startswith("short=1,l0=")  # the last long ones go


def test_the_upload_s_context_comes_from_its_headers_whatever_their_case() -> None:
    context = extract([("Content-Type", b"application/json"), ("TraceParent", SPEC_EXAMPLE.encode()),
                       ("tracestate", b"congo=t61rcWkgMzE")])  # fmt: skip
    assert context == TraceContext(TRACE_ID, PARENT_ID, 1, "congo=t61rcWkgMzE")
    assert extract({"traceparent": SPEC_EXAMPLE}) == TraceContext(TRACE_ID, PARENT_ID, 1)  # Faust's dict form
    twice = [("traceparent", SPEC_EXAMPLE.encode()), ("traceparent", SPEC_EXAMPLE.encode())]
    assert extract(twice) is None  # ambiguous
    assert (
        extract([("traceparent", b"garbage"), ("tracestate", b"congo=1")]) is None
    )  # no state without parent
    assert extract([("traceparent", None)]) is None and extract(None) is None and extract([]) is None


def test_the_worker_s_span_continues_the_upload_s_trace_with_its_own_span_id() -> None:
    headers = [("traceparent", SPEC_EXAMPLE.encode()), ("tracestate", b"congo=t61rcWkgMzE")]
    span = record_span(headers, *WHERE)
    assert span.trace_id == TRACE_ID and span.span_id != PARENT_ID and span.flags == 1
    assert VALID.fullmatch(span.traceparent)
    assert span.headers() == [
        ("traceparent", span.traceparent.encode()),
        ("tracestate", b"congo=t61rcWkgMzE"),
    ]
    assert record_span(headers, *WHERE) == span  # a redelivery of the record: the very same span
    elsewhere = record_span(headers, "photo-uploads", 3, 1235, *WHERE[3:])  # another record, same parent
    assert elsewhere.trace_id == TRACE_ID and elsewhere.span_id != span.span_id


def test_an_upload_without_a_valid_context_starts_a_trace_that_a_redelivery_repeats() -> None:
    for headers in (None, [], [("traceparent", b"00-nope")], [("traceparent", "00-" + "0" * 52)]):
        span = record_span(headers, *WHERE)
        assert VALID.fullmatch(span.traceparent) and span.flags == 0 and span.state is None
        assert span.headers() == [("traceparent", span.traceparent.encode())]
        assert record_span(headers, *WHERE) == span
    assert record_span(None, "photo-uploads", 3, 1235, *WHERE[3:]).trace_id != span.trace_id
    assert record_span(None, *WHERE[:3], 1764583200.124, WHERE[4]).trace_id != span.trace_id
    assert record_span(None, *WHERE[:4], None).trace_id != span.trace_id  # no key; no timestamp either:
    assert VALID.fullmatch(record_span(None, "t", 0, 0, None, None).traceparent)


def test_a_dead_letter_keeps_the_original_headers_in_order_and_replaces_the_trace_context() -> None:
    span = record_span([("traceparent", SPEC_EXAMPLE.encode())], *WHERE)
    original = [("source", b"mobile"), ("traceparent", SPEC_EXAMPLE.encode()), ("empty", None),
                ("source", b"again"), ("Tracestate", b"x=1")]  # fmt: skip
    assert dead_letter_headers(original, span) == [
        ("source", b"mobile"),
        ("empty", None),
        ("source", b"again"),
        ("traceparent", span.traceparent.encode()),
    ]


def test_a_hostile_record_s_headers_are_bounded_on_its_dead_letter() -> None:
    span = record_span(None, *WHERE)
    many = [(f"h{i}", b"v") for i in range(5000)]
    out = dead_letter_headers(many, span)
    assert out[:MAX_DLQ_HEADERS] == many[:MAX_DLQ_HEADERS]
    assert out[MAX_DLQ_HEADERS:] == [(DROPPED_HEADERS, b"4936"), ("traceparent", span.traceparent.encode())]
    huge = [("small", b"1"), ("huge", b"x" * 1_000_000), ("after", b"2")]
    assert dead_letter_headers(huge, span) == [("small", b"1"), ("after", b"2"), (DROPPED_HEADERS, b"1"),
                                               ("traceparent", span.traceparent.encode())]  # fmt: skip
    big = [(f"b{i}", b"y" * 4000) for i in range(20)]
    out = dead_letter_headers(big, span)
    assert sum(len(n) + len(v or b"") for n, v in out) <= MAX_DLQ_HEADER_BYTES
    assert out[-2:] == [(DROPPED_HEADERS, b"12"), ("traceparent", span.traceparent.encode())]


# -- fuzz: hostile bytes are absent, never an exception ---------------------------------------------------
near_valid = st.builds(
    lambda text, i, c: text[:i] + c + text[i + 1 :],
    st.sampled_from([SPEC_EXAMPLE, "cc" + SPEC_EXAMPLE[2:]]),
    st.integers(0, 56),
    st.sampled_from(["", "0", "f", "F", "-", "g", " ", "\x00", "\u00e9", "--", "00"]),
)
header_values = st.one_of(st.none(), st.binary(max_size=120), st.text(max_size=80), near_valid,
                          near_valid.map(str.encode), st.integers())  # fmt: skip
header_names = st.one_of(st.sampled_from(["traceparent", "tracestate", "TRACEPARENT", "x"]), st.text(max_size=8),
                         st.binary(max_size=8), st.none())  # fmt: skip


@given(st.one_of(header_values, st.binary(min_size=50, max_size=60)))
def test_fuzz_a_traceparent_parses_to_a_context_that_round_trips_or_to_nothing(value: object) -> None:
    context = parse_traceparent(value)
    if context is not None:
        assert VALID.fullmatch(context.traceparent)
        assert parse_traceparent(context.traceparent) == context
        assert context.trace_id != "0" * 32 and context.span_id != "0" * 16


@given(st.lists(st.one_of(st.tuples(header_names, header_values), header_values), max_size=12),
       st.text(max_size=20), st.integers(-1, 2**31), st.integers(-1, 2**62),
       st.one_of(st.none(), st.floats(allow_nan=True)), st.one_of(st.none(), st.binary(max_size=20)))  # fmt: skip
def test_fuzz_any_headers_give_a_valid_span_and_bounded_dead_letter_headers(
    headers: list, topic: str, partition: int, offset: int, timestamp: float | None, key: bytes | None
) -> None:
    span = record_span(headers, topic, partition, offset, timestamp, key)
    assert VALID.fullmatch(span.traceparent)
    assert record_span(headers, topic, partition, offset, timestamp, key) == span
    out = dead_letter_headers(headers, span)
    assert out[-len(span.headers()) :] == span.headers()
    assert len(out) <= MAX_DLQ_HEADERS + 3
    assert all(isinstance(n, str) and (v is None or isinstance(v, bytes)) for n, v in out)
