"""Prometheus metrics of the worker, served on its web port at ``/metrics``.

Names follow the Prometheus conventions (tests/stream/test_metric_names.py holds every name to them): a
``darkroom_`` prefix, base units as suffixes (``_duration_seconds`` for times, ``_bytes``), ``_total`` on
counters only, ``_info`` gauges of value 1 for facts that are strings. The panels of
deploy/grafana/darkroom-service.json read these names.
"""

from __future__ import annotations

import platform
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from contracts.records import ErrorCode, parse_rfc3339
from stream.version import package_version

# A ``*_created`` series per counter and histogram doubles what Prometheus stores and no query here uses it.
disable_created_metrics()

EVENTS_IN = Counter(
    "darkroom_uploads_consumed_total", "Upload events taken from Kafka (a redelivery counts again)"
)
EVENTS_OUT = Counter(
    "darkroom_outputs_produced_total",
    "Outputs produced, by kind: tagged (a tag event) or dead_letter",
    ["kind"],
)
DEAD_LETTERS = Counter("darkroom_dead_letters_total", "Dead letters by error code", ["code"])
BATCH_SIZE = Histogram(
    "darkroom_triton_request_images", "Images per Triton inference request", buckets=(1, 2, 4, 8, 16, 32, 64)
)
TRITON_LATENCY = Histogram(
    "darkroom_triton_request_duration_seconds", "Duration of each Triton inference request (each attempt)"
)
RETRIES = Counter("darkroom_retries_total", "Transient failures retried, by what failed", ["target"])
IN_FLIGHT = Gauge("darkroom_uploads_in_flight", "Upload events taken from Kafka and not yet acknowledged")
DECODES_ABANDONED = Gauge(
    "darkroom_decode_threads_abandoned", "Decode threads given up on past their deadline and still running"
)
PHOTO_BYTES_HELD = Gauge(
    "darkroom_fetch_budget_held_bytes",
    "Bytes of the fetch budget held by photos being fetched or waiting to decode",
)
ASSIGNMENTS = Counter("darkroom_partition_assignments_total", "Rebalances that ended with an assignment")
LOAD_SECONDS = Histogram(
    "darkroom_photo_load_duration_seconds",
    "Read or fetch + decode of one photo (a remote one's wait for the byte budget included)",
)
END_TO_END = Histogram(
    "darkroom_upload_to_tag_duration_seconds",
    "From an upload's uploaded_at to its tag event produced",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FETCH_GAPS = Counter(
    "darkroom_fetch_gaps_total",
    "Upload offsets a fetch skipped (stream/gaps.py): healed (fetched again and read) or read_past (still "
    "absent after DARKROOM_KAFKA_GAP_RETRIES fetches: a transaction marker, nothing lost)",
    ["outcome"],
)
BUILD_INFO = Gauge(
    "darkroom_build_info", "The running Darkroom: its version and Python's (always 1)", ["version", "python"]
)
MODEL_VERSION = Gauge(
    "darkroom_model_version_info",
    "The model and version Triton named in its latest answer to this worker (1; one series at a time)",
    ["model", "version"],
)

BUILD_INFO.labels(package_version(), platform.python_version()).set(1)
# Every known label value from the start, so that rate() and increase() see the first event of each.
for _kind in ("tagged", "dead_letter"):
    EVENTS_OUT.labels(_kind)
for _outcome in ("healed", "read_past"):
    FETCH_GAPS.labels(_outcome)
for _code in ErrorCode:
    DEAD_LETTERS.labels(str(_code))
for _target in ("triton", "model", "fetch"):
    RETRIES.labels(_target)

_served: tuple[str, str] | None = None
MAX_VERSION_LABEL = 64  # the version comes from Triton's answer: bound what a label can hold


def observe_model_version(model: str, version: str) -> None:
    """Export ``model``/``version`` as the one served model version (the previous series is removed, so a
    fleet-wide ``count by (version)`` counts workers per version during a rollout)."""
    global _served
    served = (model[:MAX_VERSION_LABEL], version[:MAX_VERSION_LABEL])
    if served == _served:
        return
    MODEL_VERSION.clear()
    MODEL_VERSION.labels(*served).set(1)
    _served = served


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
