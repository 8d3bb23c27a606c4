"""The demo's search waits for the indexer by offsets: however slowly it catches up, never a fixed time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Producer

from search.consumer import consume
from search.store import SearchIndex, TopicNames
from stream.clients import end_offsets
from stream.settings import Settings
from tools.demo import _caught_up_index


@dataclass
class _IndexedStack:
    """What the wait reads of a Stack: the broker, the index file and whether a child died."""

    bootstrap: str
    index_db: Path

    def failed_child(self) -> None:
        return None


def _publish(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in values:
        producer.produce(topic, value, key.encode())
    assert producer.flush(30) == 0


def test_search_waits_until_the_index_has_read_every_tag_event(broker, tag_value, tmp_path):
    ids = [f"demo-wait-{i}" for i in range(40)]
    _publish(broker, Settings().tags_topic, [(pid, tag_value(pid, {"beach": 0.9})) for pid in ids])
    db = tmp_path / "index.sqlite"
    SearchIndex(db).close()  # exists but empty: the wait must not take "exists" for "caught up"
    stop = threading.Event()

    def slow_indexer() -> None:
        time.sleep(3.0)  # an indexer that starts late (a loaded machine), then reads everything
        index = SearchIndex(db)
        for _ in consume(index, broker, TopicNames(), stop=stop):
            pass
        index.close()

    thread = threading.Thread(target=slow_indexer, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        index = _caught_up_index(_IndexedStack(broker, db), stall_s=60.0)
        waited = time.monotonic() - started
        stored = index.offsets()
        ends = end_offsets(broker, [Settings().tags_topic])
        assert all(stored.get(tp, 0) >= end for tp, end in ends.items() if end), (stored, ends)
        found = {hit.photo_id for hit in index.search("beach", limit=1000)}
        assert set(ids) <= found
        assert waited >= 3.0  # it did wait for the late indexer rather than search an empty index
        index.close()
    finally:
        stop.set()
        thread.join(timeout=30)


def test_an_indexer_that_makes_no_progress_ends_the_wait_with_a_warning(broker, tag_value, tmp_path, capsys):
    _publish(broker, Settings().tags_topic, [("demo-stall", tag_value("demo-stall", {"sea": 0.8}))])
    db = tmp_path / "index.sqlite"
    SearchIndex(db).close()
    index = _caught_up_index(_IndexedStack(broker, db), stall_s=1.0)
    assert index.counts()["photos"] == 0
    index.close()
    assert "record(s) behind: no progress for 1s" in capsys.readouterr().out
