"""Live counters of the index: photos, versions and dead letters over a trailing window."""

from __future__ import annotations

import threading
import time
from collections import deque

from contracts.records import TagEvent, parse_rfc3339


class LiveCounters:
    """Throughput and upload → tag latency over the tag events of the last ``window_s`` seconds (by their
    ``tagged_at``), shared between the consuming thread and the page's threads."""

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, float | None]] = deque()
        self.applied = 0

    def record(self, event: TagEvent, first_version: bool) -> None:
        """Count one applied tag event; its latency only if it tagged a new photo (a re-tag by a backfill
        keeps the photo's original upload time, which says nothing about the pipeline's latency)."""
        tagged = parse_rfc3339(event.tagged_at).timestamp()
        latency = tagged - parse_rfc3339(event.uploaded_at).timestamp() if first_version else None
        with self._lock:
            self.applied += 1
            self._recent.append((tagged, latency if latency is None or latency >= 0 else None))

    def snapshot(self, now: float | None = None) -> dict:
        """``{"tag_events", "throughput_per_s", "latency_ms": {"p50", "p95"} | None}`` for the window."""
        now = time.time() if now is None else now
        with self._lock:
            while self._recent and self._recent[0][0] < now - self.window_s:
                self._recent.popleft()
            recent = list(self._recent)
            applied = self.applied
        throughput = 0.0
        if recent:
            span = max(1.0, now - min(t for t, _ in recent))
            throughput = len(recent) / span
        latencies = sorted(lat for _, lat in recent if lat is not None)
        latency = None
        if latencies:
            latency = {
                "p50": round(1000 * latencies[len(latencies) // 2]),
                "p95": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]),
            }
        return {
            "tag_events": applied,
            "throughput_per_s": round(throughput, 2),
            "latency_ms": latency,
            "window_s": self.window_s,
        }
