"""stream/tolerant_records.py: record batches with a header name that is not UTF-8, read through aiokafka's
own fetcher code (PartitionRecords, CRC checked) once the tolerant reader is installed."""

from __future__ import annotations

import random

import aiokafka
import pytest
from aiokafka.consumer import fetcher
from aiokafka.record import memory_records
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import TopicPartition

from contracts.tracecontext import (
    QUOTED_HEADER_PREFIX,
    TraceContext,
    dead_letter_header_name,
    dead_letter_headers,
    original_header_name,
)
from stream import tolerant_records

MARK = "\x7f"  # written as valid UTF-8, then each marked byte is replaced by the raw bytes wanted
CRC_AT, ATTRIBUTES_AT = 17, 21  # v2 batch header: the CRC-32C covers attributes onwards


def batch(records: list[tuple[bytes | None, bytes | None, list]], base: int = 0, codec: int = 0) -> bytes:
    """A v2 record batch; in header names, ``MARK`` stands for a 0xff byte (CRC recomputed after)."""
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for i, (key, value, headers) in enumerate(records):
        builder.append(i, timestamp=1_700_000_000_000 + i, key=key, value=value, headers=headers)
    data = bytearray(builder.build())
    data[0:8] = base.to_bytes(8, "big")
    if codec == 0:
        data = bytearray(bytes(data).replace(MARK.encode(), b"\xff"))
    data[CRC_AT:ATTRIBUTES_AT] = calc_crc32c(bytes(data[ATTRIBUTES_AT:])).to_bytes(4, "big")
    return bytes(data)


def read(data: bytes, records_class: type) -> list:
    """What aiokafka's fetcher makes of ``data`` (CRC checked), through ``records_class``."""
    part = fetcher.PartitionRecords(
        TopicPartition("t", 0), records_class(data), None, 0, None, None, True, fetcher.READ_UNCOMMITTED
    )
    return [(r.offset, r.key, r.value, list(r.headers)) for r in part]


@pytest.fixture(scope="module")
def tolerant() -> type:
    tolerant_records.install()
    return fetcher.MemoryRecords


def test_stock_aiokafka_cannot_read_a_header_name_that_is_not_utf8() -> None:
    data = batch([(b"k", b"v", [("x-" + MARK, b"1")])])
    with pytest.raises(UnicodeDecodeError):
        read(data, memory_records.MemoryRecords)


def test_the_bad_record_and_everything_around_it_are_read(tolerant: type) -> None:
    first = batch(
        [
            (b"a", b"before", [("ok", b"1")]),
            (b"b", b"bad", [("x-" + MARK + MARK, b"\xff raw"), ("fine", None)]),
            (None, b"after", []),
        ]
    )
    second = batch([(b"c", b"next batch", [("y-" + MARK, b"2")]), (b"d", b"last", [])], base=3)
    got = read(first + second, tolerant)
    assert [(o, k, v) for o, k, v, _ in got] == [
        (0, b"a", b"before"), (1, b"b", b"bad"), (2, None, b"after"), (3, b"c", b"next batch"), (4, b"d", b"last"),
    ]  # fmt: skip
    assert got[0][3] == [("ok", b"1")] and got[2][3] == []
    assert got[1][3] == [("x-\udcff\udcff", b"\xff raw"), ("fine", None)]
    assert got[1][3][0][0].encode("utf-8", "surrogateescape") == b"x-\xff\xff"  # the raw bytes, recoverable
    assert got[3][3][0][0].encode("utf-8", "surrogateescape") == b"y-\xff"


def test_a_compressed_batch_with_a_bad_header_name(tolerant: type) -> None:
    # Compressed, the marked byte can only be replaced inside the records: build them uncompressed, patch,
    # then compress the records section by hand through aiokafka's own gzip.
    from aiokafka.codec import gzip_encode

    plain = batch([(b"k", b"v1", [("z-" + MARK, b"1")]), (b"k", b"v2", [])])
    header_size = 61  # v2 batch header
    data = bytearray(plain[:header_size]) + gzip_encode(plain[header_size:])
    data[8:12] = (len(data) - 12).to_bytes(4, "big")  # batch length: bytes after the length field
    data[ATTRIBUTES_AT:23] = (1).to_bytes(2, "big")  # gzip
    data[CRC_AT:ATTRIBUTES_AT] = calc_crc32c(bytes(data[ATTRIBUTES_AT:])).to_bytes(4, "big")
    got = read(bytes(data), tolerant)
    assert [(v, h) for _, _, v, h in got] == [(b"v1", [("z-\udcff", b"1")]), (b"v2", [])]


def test_good_batches_read_exactly_as_aiokafka_reads_them(tolerant: type) -> None:
    rng = random.Random(7)
    for _ in range(50):
        records = [
            (
                rng.choice([None, rng.randbytes(rng.randrange(8))]),
                rng.choice([None, rng.randbytes(rng.randrange(64))]),
                [("h" + "é" * rng.randrange(3), rng.choice([None, rng.randbytes(4)])) for _ in range(rng.randrange(4))],
            )
            for _ in range(rng.randrange(1, 6))
        ]  # fmt: skip
        data = batch(records, codec=rng.choice([0, 1]))
        assert read(data, tolerant) == read(data, memory_records.MemoryRecords)


def test_a_corrupt_record_after_a_bad_name_is_a_corrupt_record_not_a_crash(tolerant: type) -> None:
    data = bytearray(batch([(b"k", b"v", [("x-" + MARK, b"1")])]))
    data[-2] = 0x7E  # the header value's length now runs past the record
    data[CRC_AT:ATTRIBUTES_AT] = calc_crc32c(bytes(data[ATTRIBUTES_AT:])).to_bytes(4, "big")
    with pytest.raises(aiokafka.errors.CorruptRecordException):
        read(bytes(data), tolerant)


def test_install_is_idempotent_and_refuses_an_aiokafka_it_was_not_written_for(
    tolerant: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    tolerant_records.install()
    assert fetcher.MemoryRecords is tolerant
    monkeypatch.setattr(aiokafka, "__version__", "0.15.0")
    with pytest.raises(RuntimeError, match="aiokafka 0.15.0"):
        tolerant_records.install()


def test_create_app_installs_it() -> None:
    from stream.app import create_app
    from stream.settings import Settings

    create_app(Settings())
    assert fetcher.MemoryRecords.__name__ == "TolerantMemoryRecords"


def test_a_dead_letter_names_the_header_in_utf8_with_its_raw_bytes_recoverable() -> None:
    span = TraceContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", 1)
    original = [
        ("x-\udcff\udcfe", b"v"),
        (b"y-\xff", None),
        ("fine-é", b"1"),
        (QUOTED_HEADER_PREFIX + "a", b""),
    ]
    headers = dead_letter_headers(original, span)
    names = [name for name, _ in headers]
    assert names[:4] == [
        QUOTED_HEADER_PREFIX + "x-%FF%FE", QUOTED_HEADER_PREFIX + "y-%FF", "fine-é", QUOTED_HEADER_PREFIX + QUOTED_HEADER_PREFIX + "a",
    ]  # fmt: skip
    assert [v for _, v in headers[:4]] == [b"v", None, b"1", b""]
    for name in names:
        name.encode("utf-8")  # every client can read it
    assert [original_header_name(n) for n in names[:4]] == [
        b"x-\xff\xfe", b"y-\xff", "fine-é".encode(), (QUOTED_HEADER_PREFIX + "a").encode(),
    ]  # fmt: skip
    assert dead_letter_header_name("%41") == "%41"  # only names that need it are quoted
