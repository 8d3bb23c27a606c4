"""End-to-end fixtures: an independent kafka-python reader of the output topics."""

from __future__ import annotations

import os
import time
from collections import defaultdict

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

#: The consumer group's session timeout for the workers these tests start (the worker's default is 10 s).
#: Tansu answers a group's JoinGroup only after half the session timeout, so each worker start, restart or
#: join waited 5 s on that timer; with 4 s it waits 2 s, and a member still misses three heartbeats (every
#: 1.3 s) before it is evicted. A module that sets its own in ``worker_env`` (test_reliability: 6 s) keeps
#: it; the quick benchmark keeps the default, as do stacks started with this variable already set.
SESSION_TIMEOUT_S = "4"
KEEP_DEFAULT_SESSION = {"test_bench_quick"}


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
        self.next_offset: dict[TopicPartition, int] = {}  # topics are new: every partition starts at 0
        self.refetched: dict[tuple[TopicPartition, int], int] = defaultdict(int)

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=200).items():
                for r in records:
                    # The embedded broker can serve a later record before an earlier one (docs/reliability.md,
                    # "Offsets the embedded broker skips"): go back for the earlier one, as our readers do,
                    # with this library's own seek; a gap that stays 3 fetches is read past.
                    expected = self.next_offset.get(tp, 0)
                    if r.offset > expected and self.refetched[(tp, expected)] < 3:
                        self.refetched[(tp, expected)] += 1
                        self.consumer.seek(tp, expected)
                        break
                    self.next_offset[tp] = r.offset + 1
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


@pytest.fixture(scope="module", autouse=True)
def short_group_session(request: pytest.FixtureRequest):
    """``SESSION_TIMEOUT_S`` in this process's environment (which the stacks' workers inherit) for the module."""
    if (
        request.module.__name__.rpartition(".")[2] in KEEP_DEFAULT_SESSION
        or "DARKROOM_SESSION_TIMEOUT_S" in os.environ
    ):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DARKROOM_SESSION_TIMEOUT_S", SESSION_TIMEOUT_S)
        yield


@pytest.fixture
def outcome_reader():
    readers: list[OutcomeReader] = []

    def make(bootstrap: str, **kw: object) -> OutcomeReader:
        readers.append(OutcomeReader(bootstrap, **kw))
        return readers[-1]

    yield make
    for r in readers:
        r.close()
