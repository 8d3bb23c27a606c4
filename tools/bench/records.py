"""What the tolerant record reader (stream/tolerant_records.py) costs: records/s through aiokafka's own fetcher
code (``PartitionRecords``, CRC checked), for

* ``stock_c``: aiokafka's C reader, as before the fix;
* ``tolerant``: the installed reader on the same batches (the worker's case: every header name UTF-8);
* ``tolerant_one_bad_per_batch``: the installed reader when every batch holds one bad header name, in its
  middle (the rest of each such batch is read in pure Python);
* ``pure_python``: aiokafka's pure-Python reader throughout, i.e. what forcing it for every batch would cost.

``python -m tools.bench.records [--batches N --per-batch M]`` prints one JSON object (best of all runs per
case; the cases take turns, so load on a shared machine hits each alike)."""

from __future__ import annotations

import argparse
import json
import time

BATCH_HEADER = 61
CRC_AT, ATTRIBUTES_AT = 17, 21


def make_batch(base: int, per_batch: int, bad_at: int | None) -> bytes:
    """A v2 batch like the worker's input: an upload-sized value, a key and a traceparent header; record
    ``bad_at`` (if any) gets a header name whose last byte is 0xff."""
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.util import calc_crc32c

    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 24)
    value = (
        b'{"photo_id":"p","url":"file:///photos/'
        + b"x" * 120
        + b'.jpg","uploaded_at":"2026-12-01T00:00:00Z"}'
    )
    for i in range(per_batch):
        headers = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
        if i == bad_at:
            headers.append(("x-bad-\x7f", b"1"))
        builder.append(i, timestamp=1_700_000_000_000, key=b"photo-%d" % i, value=value, headers=headers)
    data = bytearray(builder.build())
    data[0:8] = base.to_bytes(8, "big")
    if bad_at is not None:
        at = bytes(data).index(b"x-bad-\x7f") + 6
        data[at] = 0xFF
    data[CRC_AT:ATTRIBUTES_AT] = calc_crc32c(bytes(data[ATTRIBUTES_AT:])).to_bytes(4, "big")
    return bytes(data)


def records_per_s(records_class: type, data: bytes, count: int, repeats: int) -> float:
    from aiokafka.consumer import fetcher
    from aiokafka.structs import TopicPartition

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        part = fetcher.PartitionRecords(
            TopicPartition("t", 0), records_class(data), None, 0, None, None, True, fetcher.READ_UNCOMMITTED
        )
        read = sum(1 for _ in part)
        best = min(best, time.perf_counter() - start)
        assert read == count, (read, count)
    return count / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--per-batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="runs per case and round (the best counts)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all cases, interleaved")
    args = parser.parse_args(argv)

    import aiokafka
    from aiokafka.record import default_records, memory_records

    from stream import tolerant_records

    n, per = args.batches, args.per_batch
    good = b"".join(make_batch(i * per, per, None) for i in range(n))
    bad = b"".join(make_batch(i * per, per, per // 2) for i in range(n))
    stock = memory_records.MemoryRecords
    tolerant_records.install()
    tolerant_records.log.disabled = True  # one warning per bad batch: measured here is the reading
    from aiokafka.consumer import fetcher

    tolerant = fetcher.MemoryRecords

    class PurePythonRecords(memory_records._MemoryRecordsPy):
        def next_batch(self, *a: object) -> object:
            data = self._next_slice
            batch = super().next_batch(*a)
            return default_records._DefaultRecordBatchPy(data) if data is not None else batch

    cases = {
        "stock_c": (stock, good),
        "tolerant": (tolerant, good),
        "tolerant_one_bad_per_batch": (tolerant, bad),
        "pure_python": (PurePythonRecords, good),
    }
    best = dict.fromkeys(cases, 0.0)
    for _ in range(args.rounds):  # interleaved, so that a busy moment of the machine hits every case alike
        for name, (records_class, data) in cases.items():
            best[name] = max(best[name], records_per_s(records_class, data, n * per, args.repeats))
    result = {
        "aiokafka": aiokafka.__version__,
        "records": n * per,
        "batches": n,
        "records_per_s": {name: round(value) for name, value in best.items()},
        "tolerant_vs_stock": round(best["tolerant"] / best["stock_c"], 3),
        "pure_python_vs_stock": round(best["pure_python"] / best["stock_c"], 3),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
