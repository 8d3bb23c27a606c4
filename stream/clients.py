"""Clients of the three topics: publish upload events for local photos, and follow tags and dead letters."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from contracts import topics
from contracts.records import upload_value
from stream.gaps import OffsetGaps
from stream.kafka_security import librdkafka_config
from stream.settings import Settings

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})


def photo_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Image files among ``paths``; folders are walked (sorted), other files are passed through as given."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def photo_id_for(path: Path) -> str:
    """A stable id for a local photo: its stem and a hash of its absolute path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    return f"{path.stem}-{digest}"


def upload_event(
    path: Path, owner: str | None = None, user_tags: list[str] | None = None
) -> tuple[str, bytes]:
    """(key, value) of the ``photo-uploads`` event for a local file."""
    photo_id = photo_id_for(path)
    return photo_id, upload_value(photo_id, path.resolve().as_uri(), owner, user_tags or [])


def url_upload_event(url: str, owner: str | None = None) -> tuple[str, bytes]:
    """(key, value) of the ``photo-uploads`` event for a photo given by URL (``s3://``, ``http(s)://``)."""
    photo_id = url_photo_id(url)
    return photo_id, upload_value(photo_id, url, owner)


def url_photo_id(url: str) -> str:
    """A stable id for a photo given by URL (``s3://``, ``http(s)://``): its file stem and a hash of the URL."""
    stem = Path(url.rstrip("/").rsplit("/", 1)[-1]).stem or "photo"
    return f"{stem[:100]}-{hashlib.sha1(url.encode()).hexdigest()[:10]}"


#: librdkafka errors after which waiting longer cannot help: every bootstrap broker refused, failed to
#: resolve or failed the handshake (it reconnects, but a command should say so at once), or they rejected us.
_DECISIVE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION})


def check_broker(
    bootstrap: str, topics: Iterable[str] = (), settings: Settings | None = None, timeout_s: float = 10.0
) -> None:
    """Return once a broker at ``bootstrap`` answers a metadata request and holds ``topics``; otherwise raise
    KafkaException with one line naming the bootstrap servers and why (the first client error). A refused
    or unresolvable address fails at once, a silent one after ``timeout_s``; librdkafka's own per-attempt
    log lines are kept off stderr. TLS/SASL from ``settings`` (default: plaintext)."""
    errors: list[KafkaError] = []
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 2, "error_cb": errors.append,
         **librdkafka_config(settings or Settings())}
    )  # fmt: skip

    def reason() -> str:
        first = next((e for e in errors if e.code() not in _DECISIVE), errors[0] if errors else None)
        return first.str() if first is not None else "no answer"

    deadline = time.monotonic() + timeout_s
    while True:
        admin.poll(0.05)  # delivers error_cb
        if any(e.code() in _DECISIVE or e.fatal() for e in errors):
            raise KafkaException(f"cannot reach Kafka at {bootstrap}: {reason()}")
        left = deadline - time.monotonic()
        if left <= 0:
            raise KafkaException(f"cannot reach Kafka at {bootstrap} within {timeout_s:g}s: {reason()}")
        try:
            metadata = admin.list_topics(timeout=min(0.5, left))
        except KafkaException:
            continue
        missing = [t for t in topics if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            raise KafkaException(f"topic(s) {', '.join(missing)} not found on {bootstrap}")
        return


class UploadPublisher:
    """A librdkafka producer for upload events (acks=all, idempotent); TLS/SASL from ``settings``
    (default: plaintext)."""

    def __init__(self, bootstrap: str, topic: str = topics.UPLOADS, settings: Settings | None = None) -> None:
        self.topic = topic
        self.bootstrap = bootstrap
        self.settings = settings or Settings()
        self._errors: list[str] = []
        # log_level 2: an unreachable broker is reported once by reachable()/flush(), not by librdkafka's
        # per-connection-attempt lines on stderr
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5, "acks": "all",
             "log_level": 2, **librdkafka_config(self.settings)}
        )  # fmt: skip

    def reachable(self, timeout_s: float = 10.0) -> None:
        """Raise KafkaException naming the bootstrap servers unless a broker answers with the topic."""
        check_broker(self.bootstrap, [self.topic], self.settings, timeout_s)

    def send(self, key: str | bytes | None, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged everything sent; raise if anything was not delivered."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} upload event(s) not delivered within {timeout_s:.0f}s")
        if self._errors:
            raise KafkaException(f"{len(self._errors)} upload event(s) failed: {self._errors[0]}")

    def _on_delivery(self, err: object, msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))


def follow(
    bootstrap: str,
    topics: list[str],
    from_beginning: bool = True,
    idle_timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    settings: Settings | None = None,
) -> Iterator[tuple[str, bytes | None, bytes | None]]:
    """Yield (topic, key, value) from every partition of ``topics``; stop after ``idle_timeout_s`` without a
    message (None: follow forever) or once ``should_stop()`` is true. Partitions are assigned directly, not through a consumer group: a
    reader needs no group membership, starts at once and leaves no committed offsets behind. TLS/SASL come
    from ``settings`` (default: plaintext)."""
    for msg in follow_messages(bootstrap, topics, from_beginning, idle_timeout_s, should_stop, settings):
        yield msg.topic(), msg.key(), msg.value()


def follow_messages(
    bootstrap: str,
    topics: list[str],
    from_beginning: bool = True,
    idle_timeout_s: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    settings: Settings | None = None,
    gaps: OffsetGaps | None = None,
) -> Iterator[Message]:
    """:func:`follow`, yielding librdkafka's messages themselves (their headers, partition and offset too).
    An offset the broker skipped is fetched again before what follows it is yielded (stream/gaps.py; ``gaps``:
    the decisions' state and counts, default a new one with ``settings.kafka_gap_retries``)."""
    settings = settings or Settings()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "darkroom-tail",
            "enable.auto.commit": False,
            # Tansu can hold a fetch for the whole wait even when records arrive: keep it short, so that
            # what a reader reports as "seen" is when the record was there, not up to 500 ms later.
            "fetch.wait.max.ms": 20,
            # an offset no longer there (retention) restarts at the oldest kept, never at the end
            "auto.offset.reset": "earliest",
            **librdkafka_config(settings),
        }
    )
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    metadata = consumer.list_topics(timeout=10)
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        consumer.close()
        raise KafkaException(f"topic(s) not found on {bootstrap}: {', '.join(missing)}")
    assigned = [TopicPartition(t, p, start) for t in topics for p in sorted(metadata.topics[t].partitions)]
    consumer.assign(assigned)
    reader = GapHealingReader(consumer, gaps if gaps is not None else OffsetGaps(settings.kafka_gap_retries))
    reader.started(assigned)
    last = time.monotonic()
    try:
        while (idle_timeout_s is None or time.monotonic() - last < idle_timeout_s) and not should_stop():
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                continue  # partition EOF and transient errors: librdkafka recovers by itself
            last = time.monotonic()
            yield from reader.admit([msg])
    finally:
        consumer.close()


class GapHealingReader:
    """A librdkafka consumer's records with every partition's offsets checked (stream/gaps.py): the records
    of a partition past an offset the broker skipped are dropped and the partition is sought back to it,
    so they come again, after it. librdkafka discards what it had fetched before a seek."""

    def __init__(self, consumer: Consumer, gaps: OffsetGaps) -> None:
        self.consumer = consumer
        self.gaps = gaps
        self.positions: dict[tuple[str, int], int] = {}  # the offset each partition's next record should have

    def started(self, assigned: list[TopicPartition]) -> None:
        """The partitions were just assigned at these offsets: an explicit offset is where they start, the
        beginning is the low watermark; the end is learnt from the first record."""
        if self.gaps.retries <= 0:
            return
        for tp in assigned:
            if tp.offset >= 0:
                self.positions[(tp.topic, tp.partition)] = tp.offset
            elif tp.offset == OFFSET_BEGINNING:
                try:
                    low, _ = self.consumer.get_watermark_offsets(
                        TopicPartition(tp.topic, tp.partition), timeout=10
                    )
                except KafkaException as exc:  # learnt from the first record instead
                    log.warning("no watermarks for %s[%d] (%s)", tp.topic, tp.partition, exc)
                    continue
                self.positions[(tp.topic, tp.partition)] = low

    def admit(self, messages: list[Message]) -> list[Message]:
        """``messages`` (one poll's or consume's, errors included) without any record past a skipped offset."""
        by_partition: dict[tuple[str, int], list[Message]] = {}
        for msg in messages:
            if not msg.error():
                by_partition.setdefault((msg.topic(), msg.partition()), []).append(msg)
        dropped: set[int] = set()
        for key, batch in by_partition.items():
            kept = self.gaps.check(key, self.positions.get(key), [m.offset() for m in batch])
            if kept < len(batch):
                resume = self.gaps.pending(key)
                try:
                    self.consumer.seek(TopicPartition(key[0], key[1], resume))
                except KafkaException as exc:  # not fetching this partition (any more): read on, as before
                    log.warning("cannot fetch %s[%d] again from %d (%s): reading on", *key, resume, exc)
                    self.gaps.forget(key)
                    kept = len(batch)
                else:  # the partition's position stays where the gap is
                    dropped.update(id(m) for m in batch[kept:])
            if kept:
                self.positions[key] = batch[kept - 1].offset() + 1
        return [m for m in messages if id(m) not in dropped]


def end_offsets(bootstrap: str, topics: list[str], timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
    """The next offset to be written (high watermark) of every partition of ``topics``: a reader that has
    reached these has read everything written so far."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "darkroom-tail", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(timeout=timeout_s)
        ends = {}
        for topic in topics:
            if topic not in metadata.topics:
                raise KafkaException(f"topic {topic!r} not found on {bootstrap}")
            for partition in sorted(metadata.topics[topic].partitions):
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()
