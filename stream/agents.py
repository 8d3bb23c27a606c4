"""The tagging agent: micro-batches of uploads → fetch + decode → Triton → tag events or dead letters.

Delivery: ``take_events`` acks a batch's input offsets after the loop body returns (and also if it
raises). So the body awaits the broker's acknowledgement of every output it produced before it returns,
and never lets an exception escape with outputs missing: a failure that retrying cannot fix becomes a dead
letter, a transient one is retried inside the body, and a bug stops the process before the acks
(at-least-once; outputs are idempotent, so a redelivered batch yields identical events).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np

from stream import metrics
from stream.app import Topics
from stream.events import (
    ErrorCode,
    PermanentError,
    Upload,
    dead_letter,
    now_rfc3339,
    parse_upload,
    photo_id_hint,
    tag_event,
)
from stream.images import decode, fetch
from stream.inference import ModelInput, TaggerClient
from stream.settings import Settings

log = logging.getLogger(__name__)


def load_photo(upload: Upload, settings: Settings, model_input: ModelInput) -> np.ndarray:
    """Fetch and decode one upload into the model's input; PermanentError for anything retry can't fix."""
    data = fetch(upload.url, settings.allowed_roots, settings.max_image_bytes, settings.fetch_timeout_s)
    try:
        return decode(data, (model_input.width, model_input.height), settings.max_image_pixels)
    except PermanentError:
        raise
    except Exception as exc:  # a decoder bug on hostile input must not take the worker down
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


class Tagger:
    """Per-process state of the agent: the Triton client, the decode pool and the model's input shape."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.client = TaggerClient(settings.triton_grpc, settings.model_name, settings.triton_timeout_s)
        self.pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
        self.model_input: ModelInput | None = None

    async def process(self, events: list[faust.EventT]) -> None:
        """Produce exactly one output per event and wait until the broker has acknowledged all of them."""
        while self.model_input is None:  # set by the connect_triton task once the model is ready
            await asyncio.sleep(0.1)
        model_input = self.model_input
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future] = []
        metrics.EVENTS_IN.inc(len(events))

        async def load(event: faust.EventT) -> tuple[Upload, np.ndarray] | PermanentError:
            try:
                upload = parse_upload(event.value)
                image = await loop.run_in_executor(self.pool, load_photo, upload, self.settings, model_input)
            except PermanentError as exc:
                return exc
            return upload, image

        loaded = await asyncio.gather(*(load(e) for e in events))
        good = [(e, r) for e, r in zip(events, loaded, strict=True) if not isinstance(r, PermanentError)]
        for event, result in zip(events, loaded, strict=True):
            if isinstance(result, PermanentError):
                pending.append(await self._send_dead_letter(event, result))

        step = max(1, model_input.max_batch_size)
        for start in range(0, len(good), step):
            chunk = good[start : start + step]
            batch = np.stack([image for _, (_, image) in chunk])
            with metrics.TRITON_LATENCY.time():
                predictions, version = await self.client.predict(batch)
            metrics.BATCH_SIZE.observe(len(chunk))
            tagged_at = now_rfc3339()
            for (_, (upload, _)), prediction in zip(chunk, predictions, strict=True):
                value = tag_event(upload, prediction.tags, self.settings.model_name, version, tagged_at)
                fut = await self.topics.tags.send(key=upload.photo_id.encode(), value=value, force=True)
                pending.append(fut)
                metrics.observe_latency(upload.uploaded_at)
        await asyncio.gather(*pending)  # the broker acknowledged every output: offsets may now move
        metrics.EVENTS_OUT.labels("tagged").inc(len(good))

    async def _send_dead_letter(self, event: faust.EventT, error: PermanentError) -> asyncio.Future:
        msg = event.message
        photo_id = photo_id_hint(event.value, msg.key)
        value = dead_letter(event.value, photo_id, error, msg.topic, msg.partition, msg.offset)
        log.info("dead letter %s@%s: %s %s", msg.partition, msg.offset, error.code, error.detail)
        metrics.DEAD_LETTERS.labels(str(error.code)).inc()
        return await self.topics.dlq.send(key=msg.key, value=value, force=True)


def attach_agents(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Register the tagging agent on ``app``."""
    tagger = Tagger(settings, topics)

    @app.agent(topics.uploads, name="tag-uploads")
    async def tag_uploads(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_window_s):
            try:
                await tagger.process(list(events))
            except Exception:
                # take_events acks the batch even when its body raises; a bug must not turn into
                # silently committed offsets. Stop hard; the redelivered batch is retried on restart.
                log.critical("unexpected error; exiting without committing this batch", exc_info=True)
                os._exit(70)

    @app.task
    async def connect_triton() -> None:
        tagger.model_input = await tagger.client.wait_ready()
        log.info("model %s ready, input %s", settings.model_name, tagger.model_input)

    @app.page("/health/ready")
    async def ready(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        """Ready once the model is loaded in Triton (liveness, below, depends on neither Kafka nor Triton)."""
        status = 200 if tagger.model_input is not None else 503
        return web.json({"model_ready": tagger.model_input is not None}, status=status)

    @app.page("/health/live")
    async def live(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def prometheus(web: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        body, _ = metrics.exposition()
        return web.bytes(body, content_type="text/plain; version=0.0.4")
