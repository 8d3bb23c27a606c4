"""What became of published uploads: the tag events and dead letters a reader sees, per photo, with when.

The demo and the benchmark both publish uploads and wait for their outcomes; this is the one reader they share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import orjson

from contracts import topics
from stream.clients import follow


class TagCollector(threading.Thread):
    """Reads the tag and dead-letter topics from the start in a thread; records, per photo_id, when its first
    outcome was seen and the outcome itself (topic, value)."""

    def __init__(self, bootstrap: str, tags_topic: str = topics.TAGS, dlq_topic: str = topics.DLQ) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.tags_topic, self.dlq_topic = tags_topic, dlq_topic
        self.seen: dict[str, float] = {}
        self.outcomes: dict[str, tuple[str, dict]] = {}
        self.dead: set[str] = set()
        self._stopping = threading.Event()  # not `_stop`: Thread has an internal method of that name

    def run(self) -> None:
        for topic, _, value in follow(
            self.bootstrap,
            [self.tags_topic, self.dlq_topic],
            idle_timeout_s=None,
            should_stop=self._stopping.is_set,
        ):
            event = orjson.loads(value or b"{}")
            pid = event.get("photo_id")
            if pid in self.seen:
                continue  # a redelivery repeats the first outcome
            self.outcomes[pid] = (topic, event)
            self.seen[pid] = time.time()
            if topic == self.dlq_topic:
                self.dead.add(pid)

    def wait(self, ids: set[str], timeout_s: float, progress: Callable[[int], None] | None = None) -> bool:
        """Whether every one of ``ids`` has an outcome within ``timeout_s``; ``progress`` gets the count."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.seen.keys():
                return True
            if progress is not None:
                progress(len(ids & self.seen.keys()))
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping.set()
