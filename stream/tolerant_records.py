"""A Kafka record whose header *name* is not UTF-8 reaches the worker instead of stopping its fetcher.

The protocol says a header name is a string, but a client writing raw bytes can break that, and aiokafka 0.14
decodes names strictly, in its C reader and in its pure-Python one: ``UnicodeDecodeError`` inside the fetch,
before Faust or the agent sees the record, so it could never become a dead letter. Here a record batch is read
by aiokafka's C reader as before; only when that raises ``UnicodeDecodeError`` is the rest of that one batch
read again by ``LenientRecordBatch`` (aiokafka's pure-Python reader, whose record step decodes header names
with ``surrogateescape``: each bad byte becomes one lone surrogate, so ``name.encode("utf-8",
"surrogateescape")`` gives the raw bytes back). Records of other batches never leave the C reader.

``install()`` puts this in aiokafka's fetcher (the one name it reads record batches through), once, when the
worker's app is created. It checks the aiokafka version and the internals it relies on, and reads a probe
batch with a bad header name through the installed path; if any of that has changed it raises, so the worker
fails at start rather than running without the fix. Cost: docs/reliability.md ("Header names that are not
UTF-8"); ``python -m tools.bench.records`` measures it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

#: The aiokafka versions whose record-reading internals this was written against.
SUPPORTED_AIOKAFKA = ("0.14.",)

_PROBE_NAME = "darkroom-probe-\x7f"  # built as valid UTF-8, then its last byte is made 0xff


def _nullable_bytes(buf: bytearray, pos: int, end: int, varint: Callable) -> tuple[bytes | None, int]:
    """A varint length and that many bytes (length -1: None), bounded by the record's ``end``."""
    size, pos = varint(buf, pos)
    if size < 0:
        return None, pos
    if pos + size > end:
        raise ValueError(f"field of {size} bytes runs past its record")
    return bytes(buf[pos : pos + size]), pos + size


def _lenient_batch_class() -> type:
    from aiokafka.errors import CorruptRecordException
    from aiokafka.record import default_records

    class LenientRecordBatch(default_records._DefaultRecordBatchPy):
        """aiokafka's pure-Python record batch; a record whose header names are not UTF-8 is read here with
        those names decoded by ``surrogateescape`` (raw bytes recoverable), everything else as aiokafka does."""

        def _read_msg(self, decode_varint: Callable = default_records.decode_varint) -> Any:
            try:
                return super()._read_msg(decode_varint)
            except UnicodeDecodeError:  # aiokafka leaves self._pos at the record's start when it raises
                return self._read_lenient(decode_varint)

        def _read_lenient(self, varint: Callable) -> Any:
            # Record (KIP-82 / protocol v2): length, attributes, timestamp delta, offset delta, key, value,
            # then a count of headers, each a name (varint-sized string) and a nullable value.
            buf, pos = self._buffer, self._pos
            length, pos = varint(buf, pos)
            end = pos + length
            _attributes, pos = varint(buf, pos)
            ts_delta, pos = varint(buf, pos)
            offset_delta, pos = varint(buf, pos)
            key, pos = _nullable_bytes(buf, pos, end, varint)
            value, pos = _nullable_bytes(buf, pos, end, varint)
            count, pos = varint(buf, pos)
            if count < 0:
                raise CorruptRecordException(f"Found invalid number of record headers {count}")
            headers: list[tuple[str, bytes | None]] = []
            for _ in range(count):
                name, pos = _nullable_bytes(buf, pos, end, varint)
                if name is None:
                    raise CorruptRecordException("a header name is null")
                header_value, pos = _nullable_bytes(buf, pos, end, varint)
                headers.append((name.decode("utf-8", "surrogateescape"), header_value))
            if pos != end:
                raise CorruptRecordException(f"record of {length} bytes, {pos - end:+d} bytes read past it")
            self._pos = pos
            if self.timestamp_type == self.LOG_APPEND_TIME:
                timestamp = self.max_timestamp
            else:
                timestamp = self.first_timestamp + ts_delta
            return default_records._DefaultRecordPy(
                self.base_offset + offset_delta, timestamp, self.timestamp_type, key, value, headers
            )

    return LenientRecordBatch


def _records_class(lenient: type) -> type:
    from aiokafka.record import default_records, memory_records

    fast_batch = default_records.DefaultRecordBatch  # the C reader (aiokafka's pure-Python one without it)
    c_reader = fast_batch is not default_records._DefaultRecordBatchPy

    class FastThenLenientBatch:
        """A v2 record batch read by aiokafka's C reader; from a record whose header name is not UTF-8 on,
        the batch is read by ``LenientRecordBatch`` over the same bytes (the records before it are not
        given twice). Everything the fetcher asks of a batch besides its records is the C batch's."""

        __slots__ = ("_data", "_fast", "_records")

        def __init__(self, data: memoryview) -> None:
            self._data = data
            self._fast = fast_batch(data)
            self._records: Iterator[Any] | None = None

        def __getattr__(self, name: str) -> Any:
            return getattr(self._fast, name)

        def __iter__(self) -> Iterator[Any]:
            if self._records is None:
                self._records = self._read()
            return self._records  # the generator itself: one resume per record, no method call

        def __next__(self) -> Any:  # the fetcher takes a control batch's first record with next()
            return next(iter(self))

        def _read(self) -> Iterator[Any]:
            given = 0
            try:
                for record in self._fast:
                    yield record
                    given += 1
                return
            except UnicodeDecodeError:
                log.warning(
                    "record batch at offset %d: a header name is not UTF-8 (after %d records); the rest of "
                    "the batch is read with surrogateescape",
                    self._fast.base_offset,
                    given,
                )
            for index, record in enumerate(lenient(self._data)):
                if index >= given:
                    yield record

    class TolerantMemoryRecords(memory_records._MemoryRecordsPy):
        """aiokafka's record-set splitter (pure Python: it runs once per batch, not per record) handing out
        ``FastThenLenientBatch`` for v2 batches (the only ones with headers)."""

        def next_batch(self, *args: Any) -> Any:
            data = self._next_slice
            batch = super().next_batch(*args)
            if data is not None and isinstance(batch, fast_batch):
                return FastThenLenientBatch(data) if c_reader else lenient(data)
            return batch

    return TolerantMemoryRecords


def _probe(records_class: type) -> list[tuple[str, bytes | None]]:
    """The headers read back, through ``records_class``, from a batch whose header name is not UTF-8."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 16)
    builder.append(0, timestamp=None, key=b"k", value=b"v", headers=[(_PROBE_NAME, b"1")])
    builder.append(1, timestamp=None, key=b"k", value=b"v", headers=[("after", b"2")])
    data = bytes(builder.build())
    raw = _PROBE_NAME.encode()
    at = data.index(raw) + len(raw) - 1
    data = data[:at] + b"\xff" + data[at + 1 :]
    records = records_class(data)
    out = []
    log.disabled = True  # the probe's own bad name is no news
    try:
        while records.has_next():
            for record in records.next_batch():
                out.extend(record.headers)
    finally:
        log.disabled = False
    return out


_installed: type | None = None


def install() -> None:
    """Make aiokafka's fetcher read records through ``TolerantMemoryRecords`` (idempotent). Raises
    RuntimeError, naming what differs, when aiokafka is not a version whose internals this relies on."""
    global _installed
    import aiokafka
    from aiokafka.consumer import fetcher
    from aiokafka.record import default_records, memory_records

    version = getattr(aiokafka, "__version__", "?")
    missing = [
        name
        for owner, name in (
            (fetcher, "MemoryRecords"),
            (memory_records, "_MemoryRecordsPy"),
            (default_records, "_DefaultRecordBatchPy"),
            (default_records, "_DefaultRecordPy"),
            (default_records, "decode_varint"),
            (getattr(default_records, "_DefaultRecordBatchPy", None), "_read_msg"),
        )
        if not hasattr(owner, name)
    ]
    if not version.startswith(SUPPORTED_AIOKAFKA) or missing:
        raise RuntimeError(
            f"aiokafka {version}: stream/tolerant_records.py is written for {SUPPORTED_AIOKAFKA} "
            f"(missing: {', '.join(missing) or 'nothing'}); check how it reads header names and update it"
        )
    if _installed is not None and fetcher.MemoryRecords is _installed:
        return
    records_class = _records_class(_lenient_batch_class())
    try:
        headers = _probe(records_class)
    except Exception as exc:  # noqa: BLE001 - any failure means the internals changed
        raise RuntimeError(
            f"aiokafka {version}: the tolerant record reader fails its probe: {exc!r}"
        ) from exc
    want = [(_PROBE_NAME[:-1] + "\udcff", b"1"), ("after", b"2")]
    if headers != want:
        raise RuntimeError(f"aiokafka {version}: the tolerant record reader read {headers!r}, not {want!r}")
    fetcher.MemoryRecords = records_class
    _installed = records_class
