"""End-to-end fixtures: an independent kafka-python reader of the output topics."""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition


class OutcomeReader:
    """Reads ``photo-tags`` and ``photo-uploads-dlq`` with kafka-python (not the project's own client),
    by direct partition assignment from the beginning, and groups what it sees by photo_id."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = ("photo-tags", "photo-uploads-dlq")) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
        parts = [
            TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or [])
        ]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.outcomes: dict[str, list[tuple[str, dict]]] = defaultdict(list)
        self.headers: dict[str, list[list[tuple[str, bytes | None]]]] = defaultdict(
            list
        )  # in step with outcomes

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200).values():
                for r in records:
                    event = orjson.loads(r.value)
                    self.outcomes[event.get("photo_id")].append((r.topic, event))
                    self.headers[event.get("photo_id")].append(list(r.headers or []))

    def wait_for(self, photo_ids: set[str], timeout_s: float, grace_s: float = 3.0) -> None:
        """Read until every id has an outcome (or timeout), then ``grace_s`` more to catch duplicates."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not photo_ids <= set(self.outcomes):
            self.poll(0.5)
        self.poll(grace_s)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def outcome_reader():
    readers: list[OutcomeReader] = []

    def make(bootstrap: str, **kw: object) -> OutcomeReader:
        readers.append(OutcomeReader(bootstrap, **kw))
        return readers[-1]

    yield make
    for r in readers:
        r.close()
