"""W3C Trace Context (https://www.w3.org/TR/trace-context/) carried in Kafka record headers.

An upload's ``traceparent`` (and ``tracestate``) header travels to its tag event or dead letter, so a site's
tracing follows a photo across services. The worker's output is a child of the upload's span: the same
trace-id, a new parent-id naming the worker's span. Where the upload has no valid ``traceparent``, the worker
starts a trace. Both new ids are derived from the input record itself (its topic, partition, offset and, for
a new trace, its timestamp and key) rather than drawn at random, so a redelivered upload yields byte-for-byte
the same output headers, as it yields the same tags (docs/reliability.md, "Trace context").

Every header byte is hostile: anything that is not exactly what the spec allows is treated as absent, never
raised. This module imports nothing of Darkroom.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: A dead letter keeps at most this many of the upload's headers, and this many bytes of their names and
#: values: a hostile record with thousands of large headers cannot make its dead letter unbounded.
MAX_DLQ_HEADERS = 64
MAX_DLQ_HEADER_BYTES = 32 * 1024
#: Set on a dead letter when some of the original headers were over those bounds: how many were left out.
DROPPED_HEADERS = "darkroom-dropped-headers"
#: A dead letter names an original header whose name is not UTF-8 (a Kafka client reads that as a broken
#: record) by this prefix and the raw name percent-encoded: ``original_header_name`` gives the bytes back.
QUOTED_HEADER_PREFIX = "darkroom-quoted-header-name:"
_QUOTE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
#: The spec's bounds on ``tracestate``: at most 32 list members; a propagator should keep at least 512
#: characters and, over that, may drop members longer than 128 characters (we drop those, last first).
MAX_TRACESTATE_MEMBERS = 32
TRACESTATE_KEEP_CHARS = 512
TRACESTATE_LONG_MEMBER = 128
#: Of the trace-flags, the ones defined so far (sampled, and Level 2's random trace-id) are carried on;
#: unknown bits are cleared, as the spec asks of a propagating vendor.
KNOWN_FLAGS = 0x03

_HEX = "[0-9a-f]"
_TRACEPARENT_00 = re.compile(rf"({_HEX}{{2}})-({_HEX}{{32}})-({_HEX}{{16}})-({_HEX}{{2}})")
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"{_KEY}={_VALUE}")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One span's context: ``trace_id`` (32 lowercase hex), ``span_id`` (16 lowercase hex, the parent-id
    field of the ``traceparent`` it is written as), the trace-flags and the vendors' ``tracestate``."""

    trace_id: str
    span_id: str
    flags: int = 0
    state: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that carry this context: ``traceparent``, and ``tracestate`` when there is one."""
        out = [(TRACEPARENT, self.traceparent.encode("ascii"))]
        if self.state:
            out.append((TRACESTATE, self.state.encode("ascii")))
        return out


def parse_traceparent(value: object) -> TraceContext | None:
    """A ``traceparent`` value (bytes or str) as a context, or None when it is not valid.

    Version ``00`` must be exactly ``00-<32 hex>-<16 hex>-<2 hex>`` in lowercase; a later version (any but
    ``ff``) is read as far as version 00 defines it, provided what follows starts with ``-``, as the spec
    asks of a version-00 parser. An all-zero trace-id or parent-id is invalid."""
    text = _ascii(value, 4096)
    if text is None or len(text) < 55:
        return None
    match = _TRACEPARENT_00.fullmatch(text, 0, 55)
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or (version == "00" and len(text) != 55) or (len(text) > 55 and text[55] != "-"):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, int(flags, 16) & KNOWN_FLAGS)


def parse_tracestate(values: Sequence[object]) -> str | None:
    """The ``tracestate`` header values (several are one list, in order) as one normalized list, or None
    when there is none or any member breaks the spec's grammar (then the whole list is discarded)."""
    members: list[str] = []
    for value in values:
        text = _ascii(value, 64 * 1024)
        if text is None:
            return None
        for member in text.split(","):
            member = member.strip(" \t")
            if not member:
                continue
            if not _MEMBER.fullmatch(member):
                return None
            members.append(member)
    keys = [m.split("=", 1)[0] for m in members]
    if not members or len(members) > MAX_TRACESTATE_MEMBERS or len(set(keys)) != len(keys):
        return None
    while len(",".join(members)) > TRACESTATE_KEEP_CHARS:
        long = [i for i, m in enumerate(members) if len(m) > TRACESTATE_LONG_MEMBER]
        if not long:
            break
        del members[long[-1]]
    return ",".join(members)


def extract(headers: Iterable[tuple[Any, Any]] | None) -> TraceContext | None:
    """The upload's trace context from its record headers (names matched case-insensitively), or None when
    there is no valid one. Two or more ``traceparent`` headers are ambiguous, so treated as absent; without
    a valid ``traceparent`` any ``tracestate`` is ignored, as the spec requires."""
    parents: list[object] = []
    states: list[object] = []
    for name, value in _pairs(headers):
        if name == TRACEPARENT:
            parents.append(value)
        elif name == TRACESTATE:
            states.append(value)
    if len(parents) != 1:
        return None
    context = parse_traceparent(parents[0])
    if context is None:
        return None
    return TraceContext(context.trace_id, context.span_id, context.flags, parse_tracestate(states))


def record_span(
    headers: Iterable[tuple[Any, Any]] | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp: float | None,
    key: bytes | None,
) -> TraceContext:
    """The worker's span for the input record at ``topic``/``partition``/``offset``: a child of the context
    its headers carry, or the root of a new trace when they carry none.

    The new span id hashes the parent context and the record's coordinates; a new trace id hashes the
    coordinates, the record's timestamp and its key (so a topic recreated from offset 0 does not repeat old
    trace ids). Every delivery of one record therefore gets the same span, while two records, even of one
    photo with one ``traceparent``, get different ones."""
    parent = extract(headers)
    where = f"{topic}\x00{partition}\x00{offset}".encode("utf-8", "replace")
    if parent is None:
        seed = b"\x00".join((where, repr(timestamp).encode(), key or b""))
        trace_id = _hex_id(seed, 16, b"darkroom-trace")
        flags, state = 0, None
    else:
        trace_id, flags, state = parent.trace_id, parent.flags, parent.state
        seed = b"\x00".join((where, parent.trace_id.encode(), parent.span_id.encode()))
    return TraceContext(trace_id, _hex_id(seed, 8, b"darkroom-span"), flags, state)


def dead_letter_headers(
    original: Iterable[tuple[Any, Any]] | None, span: TraceContext
) -> list[tuple[str, bytes | None]]:
    """A dead letter's headers: the original record's, in order and within ``MAX_DLQ_HEADERS`` headers and
    ``MAX_DLQ_HEADER_BYTES`` bytes (a header over what is left is dropped whole, never cut, and
    ``darkroom-dropped-headers`` counts them), then the worker's ``traceparent`` / ``tracestate`` in place of
    the original's, so that a replayed dead letter continues the upload's trace."""
    own = span.headers()
    kept: list[tuple[str, bytes | None]] = []
    dropped = 0
    room = MAX_DLQ_HEADER_BYTES - sum(len(n) + len(v) for n, v in own) - len(DROPPED_HEADERS) - 8
    for name, value in _pairs(original, lower=False):
        if name.lower() in (TRACEPARENT, TRACESTATE):
            continue  # replaced by the worker's span below
        name = dead_letter_header_name(name)  # valid UTF-8 (a name that was not is quoted)
        size = len(name.encode("utf-8")) + (len(value) if value is not None else 0)
        if len(kept) >= MAX_DLQ_HEADERS or size > room:
            dropped += 1
            continue
        kept.append((name, value))
        room -= size
    if dropped:
        kept.append((DROPPED_HEADERS, str(dropped).encode()))
    return kept + own


def dead_letter_header_name(name: str) -> str:
    """``name`` as a dead letter carries it: itself when it is valid UTF-8 and does not start with the prefix, else
    ``QUOTED_HEADER_PREFIX`` and its raw bytes (a name read with ``surrogateescape`` carries them as lone
    surrogates) percent-encoded. Always valid UTF-8, so every Kafka client can read the dead letter."""
    if not name.startswith(QUOTED_HEADER_PREFIX):
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte: its own (invalid) UTF-8 bytes
        raw = name.encode("utf-8", "surrogatepass")
    return QUOTED_HEADER_PREFIX + urllib.parse.quote_from_bytes(raw, safe=_QUOTE_SAFE)


def original_header_name(name: str) -> bytes:
    """The raw bytes of the original header name a dead letter's header ``name`` stands for."""
    if name.startswith(QUOTED_HEADER_PREFIX):
        return urllib.parse.unquote_to_bytes(name[len(QUOTED_HEADER_PREFIX) :])
    return name.encode("utf-8")


def _pairs(headers: Iterable[tuple[Any, Any]] | None, lower: bool = True) -> list[tuple[str, bytes | None]]:
    """Header (name, value) pairs as str and bytes-or-None; anything shaped otherwise is skipped."""
    out: list[tuple[str, bytes | None]] = []
    if not headers:
        return out
    items = headers.items() if hasattr(headers, "items") else headers
    try:
        for item in items:
            if not isinstance(item, tuple | list) or len(item) != 2:
                continue
            name, value = item
            if isinstance(name, bytes | bytearray):
                name = bytes(name).decode("utf-8", "surrogateescape")  # the raw bytes stay recoverable
            if not isinstance(name, str):
                continue
            if isinstance(value, str):
                value = value.encode("utf-8", "replace")
            elif isinstance(value, bytearray | memoryview):
                value = bytes(value)
            elif value is not None and not isinstance(value, bytes):
                continue
            out.append((name.lower() if lower else name, value))
    except TypeError:  # not iterable as pairs at all
        return []
    return out


def _ascii(value: object, limit: int) -> str | None:
    """``value`` as ASCII text, or None when it is not bytes/str of printable ASCII within ``limit``."""
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) > limit:
            return None
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    elif isinstance(value, str):
        text = value
    else:
        return None
    if len(text) > limit or not text.isascii() or not text.isprintable():
        return None
    return text


def _hex_id(seed: bytes, size: int, person: bytes) -> str:
    """``size`` bytes of BLAKE2b over ``seed`` as lowercase hex; never all zero (invalid in a traceparent)."""
    digest = hashlib.blake2b(seed, digest_size=size, person=person).digest()
    if not any(digest):
        digest = digest[:-1] + b"\x01"
    return digest.hex()
