"""The worker's health and metrics pages: readiness (Triton serves the model, Kafka answers), liveness (the
loop answers, too few decode threads stuck to need a restart) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

import faust

from stream import metrics
from stream.tagging import BatchTagger

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0


def attach_health(app: faust.App, tagger: BatchTagger) -> None:
    """Register the Triton/Kafka watcher and the health and metrics pages on ``app``."""

    @app.timer(HEALTH_INTERVAL_S)
    async def watch_dependencies() -> None:
        tagger.triton_ready = tagger.model_input is not None and await tagger.client.is_ready()
        tagger.kafka_ready = await kafka_answers(app)

    @app.page("/health/ready")
    async def ready(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Ready while Triton serves the model and the Kafka cluster answers (checked every 2 s)."""
        body = {"model_ready": tagger.model_input is not None, "triton": tagger.triton_ready,
                "kafka": tagger.kafka_ready}  # fmt: skip
        ok = tagger.model_input is not None and tagger.triton_ready and tagger.kafka_ready
        return web.json(body, status=200 if ok else 503)

    @app.page("/health/live")
    async def live(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Alive while the event loop answers and too few decode threads are stuck to need a restart;
        depends on neither Kafka nor Triton (no restart for theirs)."""
        if tagger.decoder.exhausted:
            return web.json({"status": "decode threads stuck", "stuck": tagger.decoder.stuck}, status=503)
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def prometheus(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        body, _ = metrics.exposition()
        return web.bytes(body, content_type="text/plain; version=0.0.4")


async def kafka_answers(app: faust.App, timeout_s: float = 2.0) -> bool:
    """Whether a broker answers a metadata request on the producer's connection right now."""
    producer = getattr(app.producer, "_producer", None)  # the aiokafka producer, once started
    if producer is None:
        return False
    try:
        await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
    except Exception:  # noqa: BLE001 - any failure means "not ready", and is retried next tick
        return False
    return True
