"""Prometheus metrics of the worker, served on its web port at ``/metrics``."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from contracts.records import parse_rfc3339

EVENTS_IN = Counter("darkroom_events_in_total", "Upload events consumed")
EVENTS_OUT = Counter("darkroom_events_out_total", "Outputs produced", ["kind"])
DEAD_LETTERS = Counter("darkroom_dead_letters_total", "Dead letters by error code", ["code"])
BATCH_SIZE = Histogram("darkroom_batch_size", "Images per Triton request", buckets=(1, 2, 4, 8, 16, 32, 64))
TRITON_LATENCY = Histogram("darkroom_triton_seconds", "Triton request latency (each attempt)")
RETRIES = Counter("darkroom_retries_total", "Transient failures retried, by what failed", ["target"])
IN_FLIGHT = Gauge("darkroom_in_flight_events", "Upload events taken from Kafka and not yet acknowledged")
DECODES_ABANDONED = Gauge(
    "darkroom_decode_threads_abandoned", "Decode threads given up on past their deadline and still running"
)
PHOTO_BYTES_HELD = Gauge(
    "darkroom_photo_bytes_held", "Bytes of the fetch budget held by photos being fetched or waiting to decode"
)
ASSIGNMENTS = Counter("darkroom_partition_assignments_total", "Rebalances that ended with an assignment")
LOAD_SECONDS = Histogram("darkroom_load_seconds", "Fetch + decode time per upload")
END_TO_END = Histogram(
    "darkroom_end_to_end_seconds",
    "Upload time to tag event produced",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def observe_latency(uploaded_at: str) -> None:
    """Record upload → tag latency; clocks of other machines may be skewed, so negatives are dropped."""
    try:
        latency = time.time() - parse_rfc3339(uploaded_at).timestamp()
    except ValueError:
        return
    if latency >= 0:
        END_TO_END.observe(latency)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text format of every metric above."""
    return generate_latest(), CONTENT_TYPE_LATEST
