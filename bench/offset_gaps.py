"""Does a reader of the embedded broker see every record? Readers with and without stream/gaps.py's check.

    .venv/bin/python bench/offset_gaps.py [--producers 4 --seconds 90 --pause-ms 20 --readers 2] [--out FILE]

Starts the embedded broker (Tansu, memory storage) alone, then ``--producers`` aiokafka producers (acks=all, as
the workers produce tag events) write small keyed records to one 4-partition topic, each pausing about
``--pause-ms`` between sends, for ``--seconds``. Meanwhile ``--readers`` readers of four kinds follow the topic from its start, as
the tag events' readers do: librdkafka (the indexer, `darkroom tail`, the bench's reader) and aiokafka (the
worker, through the same ``fetch_positions``/``unchanged_positions``/``heal_fetched`` as its consumer thread), each once with the check
off (``DARKROOM_KAFKA_GAP_RETRIES=0``, what every reader did before) and once on (3). Afterwards the topic is
read again from the start by a fresh reader. Reports, per reader, the records it never saw, the gaps it
healed and read past; prints JSON and writes it to ``--out``.

Why: Tansu 0.6 raises a partition's high watermark before it stores the batch, so a fetch that lands in
between can be served a concurrent producer's later batch (stream/gaps.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream.app import fetch_positions, heal_fetched, unchanged_positions  # noqa: E402
from stream.clients import follow_messages  # noqa: E402
from stream.gaps import OffsetGaps  # noqa: E402
from stream.settings import Settings  # noqa: E402
from tools.embedded import BROKER_GRACE_S, _kafka_answers, broker_argv  # noqa: E402

TOPIC = "gaps"
PARTITIONS = 4


class LibrdkafkaReader(threading.Thread):
    """``stream.clients.follow_messages``, as the indexer's and the CLI's readers use it."""

    def __init__(
        self, bootstrap: str, retries: int, stop: threading.Event, idle_s: float | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.stop, self.idle_s = bootstrap, stop, idle_s
        self.gaps = OffsetGaps(retries)
        self.seen: set[bytes] = set()

    def run(self) -> None:
        settings = Settings(kafka_gap_retries=self.gaps.retries)
        for msg in follow_messages(
            self.bootstrap, [TOPIC], True, self.idle_s, self.stop.is_set, settings, self.gaps
        ):
            self.seen.add(msg.value())


class AiokafkaReader(threading.Thread):
    """aiokafka's consumer, its fetched records taken as the worker's consumer thread takes them."""

    def __init__(self, bootstrap: str, retries: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.stop = bootstrap, stop
        self.gaps = OffsetGaps(retries)
        self.seen: set[bytes] = set()

    def run(self) -> None:
        asyncio.run(self._read())

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20
        )
        await consumer.start()
        consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        try:
            while not self.stop.is_set():
                before = fetch_positions(consumer)
                records = await consumer._fetcher.fetched_records(consumer.assignment(), timeout=0.2)
                positions = unchanged_positions(consumer, before)
                for batch in heal_fetched(consumer, self.gaps, positions, records).values():
                    self.seen.update(record.value for record in batch)
        finally:
            await consumer.stop()


async def produce(bootstrap: str, producers: int, seconds: float, pause_s: float) -> list[bytes]:
    from aiokafka import AIOKafkaProducer

    async def one(index: int) -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        rng, sent, end = random.Random(index), [], time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                futures = []
                for _ in range(rng.randint(1, 8)):  # a worker's batch: several tag events at once
                    value = f"p{index}-{len(sent)}".encode()
                    futures.append(await producer.send(TOPIC, value, key=value))
                    sent.append(value)
                await asyncio.gather(*futures)
                await asyncio.sleep(rng.expovariate(1 / pause_s))
        finally:
            await producer.stop()
        return sent

    return [v for sent in await asyncio.gather(*(one(i) for i in range(producers))) for v in sent]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--pause-ms", type=float, default=20.0)
    parser.add_argument("--readers", type=int, default=2, help="readers of each kind")
    parser.add_argument("--out", type=Path, default=Path("bench/results/offset_gaps.json"))
    args = parser.parse_args(argv)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bootstrap = f"127.0.0.1:{port}"
    broker = subprocess.Popen(broker_argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _kafka_answers(bootstrap):
            if time.monotonic() > deadline or broker.poll() is not None:
                print("error: the embedded broker did not start", file=sys.stderr)
                return 2
            time.sleep(0.2)
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        admin.close()

        stop = threading.Event()
        readers = {}  # (library, check, number) -> reader
        for n in range(1, args.readers + 1):  # each reader's fetches race on their own: several show more
            for library, kind in (("librdkafka", LibrdkafkaReader), ("aiokafka", AiokafkaReader)):
                for check, retries in (("off", 0), ("on", 3)):
                    readers[(library, check, n)] = kind(bootstrap, retries, stop)
        for reader in readers.values():
            reader.start()
        time.sleep(2)
        print(f"{args.producers} producers for {args.seconds:.0f} s ...", file=sys.stderr)
        sent = asyncio.run(produce(bootstrap, args.producers, args.seconds, args.pause_ms / 1000))
        deadline = time.monotonic() + 30  # the readers with the check on must catch up with all of it
        while time.monotonic() < deadline and any(
            len(r.seen) < len(sent) for r in readers.values() if r.gaps.retries
        ):
            time.sleep(0.5)
        time.sleep(2)
        stop.set()
        for reader in readers.values():
            reader.join(timeout=10)
        again = LibrdkafkaReader(bootstrap, 0, threading.Event(), idle_s=3.0)
        again.run()  # the whole topic once more, from the start, in this thread
    finally:
        broker.terminate()
        try:
            broker.wait(BROKER_GRACE_S)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()

    result = {
        "what": "records of a 4-partition topic written by concurrent producers that a live reader never saw",
        "broker": "Tansu 0.6.0, memory storage",
        "producers": args.producers,
        "seconds": args.seconds,
        "pause_ms": args.pause_ms,
        "totals": {},
        "records": len(sent),
        "in_topic_read_again": len(again.seen & set(sent)),
        "readers": {},
    }
    for (library, check, n), reader in readers.items():
        row = {
            "missed": len(set(sent) - reader.seen),
            "healed": reader.gaps.healed,
            "read_past": reader.gaps.accepted,
        }
        result["readers"][f"{library} #{n}, check {check}"] = row
        total = result["totals"].setdefault(f"{library}, check {check}", dict.fromkeys(row, 0))
        for key, value in row.items():
            total[key] += value
    text = json.dumps(result, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
