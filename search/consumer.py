"""Reading the topics into the index, resuming from the offsets the index stores; refused edits' dead
letters are produced before the batch that refused them commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from search.counters import LiveCounters
from search.edits import EditLimits
from search.store import Applied, Record, SearchIndex, TopicNames
from stream.settings import Settings


def consume(
    index: SearchIndex,
    bootstrap: str,
    topics: TopicNames,
    counters: LiveCounters | None = None,
    stop: threading.Event | None = None,
    once: bool = False,
    topic_wait_s: float = 30.0,
    settings: Settings | None = None,
) -> Iterator[Applied]:
    """Read the topics into ``index``, resuming from the offsets it stores; yield each batch's effect.

    Partitions are assigned directly (no consumer-group join, no committed offsets: the index holds them).
    ``once``: stop when every partition is read up to its end as of the start. TLS/SASL come from
    ``settings`` (default: plaintext)."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        TIMESTAMP_NOT_AVAILABLE,
        Consumer,
        KafkaException,
        Producer,
        TopicPartition,
    )

    from stream.clients import GapHealingReader
    from stream.gaps import OffsetGaps
    from stream.kafka_security import librdkafka_config

    stop = stop or threading.Event()
    settings = settings or Settings()
    limits = EditLimits(settings.edit_rate_limit, settings.edit_rate_window_s)
    letters = _LetterProducer(Producer, bootstrap, topics.edits_dlq, settings)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "darkroom-indexer",  # required by librdkafka; never joined, never committed
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 100,  # bounds upload → searchable latency (Tansu holds fetches this long)
            **librdkafka_config(settings),
        }
    )
    try:
        partitions = _wait_for_partitions(consumer, topics.all(), topic_wait_s, stop)
        stored = index.offsets()
        assigned = [TopicPartition(t, p, stored.get((t, p), OFFSET_BEGINNING)) for t, p in partitions]
        consumer.assign(assigned)
        # a tag event the embedded broker served out of order is fetched again, not skipped (stream/gaps.py)
        reader = GapHealingReader(consumer, OffsetGaps(settings.kafka_gap_retries))
        reader.started(assigned)
        ends: dict[tuple[str, int], int] = {}
        if once:
            for t, p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > max(low, stored.get((t, p), 0)):
                    ends[(t, p)] = high
        while not stop.is_set():
            if once and not ends:
                return
            messages = reader.admit(consumer.consume(num_messages=500, timeout=0.5))
            records = []
            for msg in messages:
                if msg.error():
                    if msg.error().fatal():
                        raise KafkaException(msg.error())
                    continue  # transient: librdkafka retries by itself
                kind, millis = msg.timestamp()
                timestamp = millis / 1000 if kind != TIMESTAMP_NOT_AVAILABLE else None
                records.append(Record(msg.topic(), msg.partition(), msg.offset(), msg.value(), timestamp))
            if records:
                yield index.apply(records, topics, counters, limits, letters.deliver)
            if ends:  # positions, not the last record seen: control records are never delivered
                positions = consumer.position([TopicPartition(t, p) for t, p in ends])
                for tp in positions:
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        del ends[(tp.topic, tp.partition)]
    finally:
        consumer.close()


class _LetterProducer:
    """Produces a batch's refused edits' dead letters and waits until the broker has them all (a failure
    raises, inside the batch's transaction, so the batch is read again and nothing is lost)."""

    def __init__(self, producer_class: type, bootstrap: str, topic: str, settings: Settings) -> None:
        from stream.kafka_security import librdkafka_config

        self.topic = topic
        self._config = {"bootstrap.servers": bootstrap, "acks": "all", "log_level": 2,
                        **librdkafka_config(settings)}  # fmt: skip
        self._class = producer_class
        self._producer = None

    def deliver(self, applied: Applied) -> None:
        from confluent_kafka import KafkaException

        if not applied.edit_letters:
            return
        if self._producer is None:
            self._producer = self._class(self._config)
        errors: list[str] = []

        def on_delivery(err: object, msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        for key, value in applied.edit_letters:
            self._producer.produce(self.topic, key=key, value=value, on_delivery=on_delivery)
        remaining = self._producer.flush(30)
        if remaining or errors:
            raise KafkaException(
                f"{remaining or len(errors)} edit dead letter(s) not delivered to {self.topic}"
                + (f": {errors[0]}" if errors else " within 30s")
            )


def _wait_for_partitions(
    consumer: object, topics: list[str], wait_s: float, stop: threading.Event
) -> list[tuple[str, int]]:
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + wait_s
    while True:
        metadata = consumer.list_topics(timeout=10)  # type: ignore[attr-defined]
        missing = [t for t in topics if t not in metadata.topics or not metadata.topics[t].partitions]
        if not missing:
            return [(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]
        if time.monotonic() > deadline or stop.is_set():
            raise KafkaException(
                f"topic(s) {', '.join(missing)} not found on the broker after {wait_s:.0f}s; "
                "start it with `darkroom up`, or set DARKROOM_*_TOPIC to the names your cluster uses"
            )
        time.sleep(1.0)
