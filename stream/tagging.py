"""The tagging stage: a micro-batch of uploads → fetch + decode → Triton (in chunks) → tag events and dead
letters, every output acknowledged by the broker before the batch counts as done (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np

from contracts.embeddings import embedding_record
from contracts.records import (
    ErrorCode,
    PermanentError,
    SourceUnavailable,
    Upload,
    dead_letter,
    now_rfc3339,
    parse_upload,
    photo_id_hint,
    tag_event,
)
from contracts.tensors import ModelInput
from contracts.tracecontext import TraceContext, dead_letter_headers, record_span
from stream import metrics
from stream.app import AppTopics
from stream.budget import ByteBudget
from stream.decodepool import DecodePool, name_os_thread
from stream.fetch import fetch
from stream.inference import Prediction, TaggerClient
from stream.loading import decode_photo, read_and_decode_upload
from stream.objectstore import S3Options
from stream.origins import Origins
from stream.settings import Settings
from stream.shadow import ShadowTagger
from stream.tagrates import TagRates

log = logging.getLogger(__name__)

#: Outputs of the uploads that are ready are published after at most this long, however slow the rest of
#: their batch: a straggler delays only itself (its offset still commits with its batch). Ready uploads are
#: sent to Triton sooner, as soon as ``infer_batch_size`` of them are decoded.
STRAGGLER_S = 1.0
DEADLINE_CHECK_S = 0.5  # how often a waiting batch looks for photos stuck past their decode deadline


class BatchTagger:
    """Per-process state of the agent: the Triton client, the decode threads and the model's input shape."""

    def __init__(self, settings: Settings, topics: AppTopics) -> None:
        self.settings = settings
        self.topics = topics
        self.client = TaggerClient(
            settings.triton_grpc,
            settings.model_name,
            settings.triton_timeout_s,
            settings.model_error_attempts,
            settings.publish_embeddings,
        )
        self.fetch_pool = ThreadPoolExecutor(
            max(4, settings.batch_size),
            thread_name_prefix="fetch",
            initializer=name_os_thread,
            initargs=("fetch",),
        )
        self.fetch_budget = ByteBudget(settings.fetch_budget_bytes)  # fetched bytes wait here, not in RAM
        self.decoder = DecodePool(
            settings.decode_threads, settings.decode_timeout_s, settings.max_abandoned_decodes
        )
        self.s3 = S3Options.from_settings(settings)
        self.origins = Origins.from_settings(settings)  # allowed internal origins, proxies, keep-alive
        self.shadow = ShadowTagger(settings, self.client)  # the live version and its shadow (docs/rollout.md)
        self.tag_rates = TagRates()
        self.versions_without_embedding: set[str] = set()  # logged once each
        self.model_input: ModelInput | None = None
        self.triton_ready = False
        self.kafka_ready = False

    async def process(self, events: list[faust.EventT]) -> None:
        """Produce one output per event and wait until the broker has acknowledged all of them.

        Every photo of the batch goes to the decode threads at once; decoded photos are sent to Triton in
        chunks of ``infer_batch_size`` as they come back, so decoding overlaps inference and publishing."""
        while self.model_input is None:  # set by the connect_triton task once the model is ready
            await asyncio.sleep(0.1)
        model_input = self.model_input
        metrics.EVENTS_IN.inc(len(events))
        metrics.IN_FLIGHT.inc(len(events))
        loop = asyncio.get_running_loop()
        try:
            arrived: collections.deque[tuple[faust.EventT, asyncio.Future]] = collections.deque()
            wake: asyncio.Future | None = None  # set while the loop below waits for arrivals

            def on_done(event: faust.EventT, future: asyncio.Future) -> None:
                arrived.append((event, future))
                if wake is not None and not wake.done():
                    wake.set_result(None)

            for event in events:
                self._load(event, model_input).add_done_callback(functools.partial(on_done, event))
            remaining = len(events)
            pending: list[asyncio.Future] = []
            ready: list[tuple[faust.EventT, tuple[Upload, np.ndarray] | PermanentError]] = []
            first_ready_at = 0.0
            while remaining:
                if not arrived:
                    # A straggler delays only itself: what is ready goes out after STRAGGLER_S at most.
                    timeout = DEADLINE_CHECK_S
                    if ready:
                        timeout = min(timeout, max(0.0, first_ready_at + STRAGGLER_S - loop.time()))
                    wake = loop.create_future()
                    await asyncio.wait((wake,), timeout=timeout)
                    wake = None
                    self.decoder.expire()  # a photo stuck past its decode deadline becomes a dead letter
                if arrived and not ready:
                    first_ready_at = loop.time()
                while arrived:
                    event, future = arrived.popleft()
                    remaining -= 1
                    error = future.exception()
                    if error is None:
                        ready.append((event, future.result()))
                    elif isinstance(error, PermanentError):
                        ready.append((event, error))
                    else:
                        raise error  # a bug: the pipeline stops the worker without committing
                straggling = ready and loop.time() >= first_ready_at + STRAGGLER_S
                if len(ready) >= self.settings.infer_batch_size or not remaining or straggling:
                    pending += await self._publish(ready, model_input)
                    ready = []
            await asyncio.gather(*pending)  # the broker acknowledged every output: offsets may now move
        finally:
            metrics.IN_FLIGHT.dec(len(events))

    async def _publish(
        self,
        ready: list[tuple[faust.EventT, tuple[Upload, np.ndarray] | PermanentError]],
        model_input: ModelInput,
    ) -> list[asyncio.Future]:
        """Send the dead letters and the tag events of ``ready``; the broker's acknowledgements to await."""
        pending = []
        good = []
        for event, result in ready:
            if isinstance(result, PermanentError):
                pending.append(await self._send_dead_letter(event, result))
            else:
                good.append((event, result))
        # Tag events go straight to the app's producer (acks=all): Faust's Topic.send would wrap each in
        # its own message and future objects first, which cost more per event than the produce itself.
        producer = self.topics.tags.app.producer
        topic = self.settings.tags_topic
        step = max(1, model_input.max_batch_size)
        for start in range(0, len(good), step):
            chunk = good[start : start + step]
            images = np.stack([image for _, (_, image) in chunk])
            predictions = await self.client.predict(images)
            self.shadow.submit([upload for _, (upload, _) in chunk], images)  # never waits
            metrics.BATCH_SIZE.observe(len(chunk))
            tagged_at = now_rfc3339()
            for (event, (upload, _)), prediction in zip(chunk, predictions, strict=True):
                if isinstance(prediction, PermanentError):  # the model fails on this input alone
                    pending.append(await self._send_dead_letter(event, prediction))
                    continue
                tags, version = prediction.tags, prediction.version
                metrics.observe_model_version(self.settings.model_name, version)
                self.tag_rates.observe(version, tags)
                value = tag_event(upload, tags, self.settings.model_name, version, tagged_at)
                headers = upload_span(event).headers()  # the upload's trace, continued by the worker's span
                pending.append(
                    await producer.send(topic, upload.photo_id.encode(), value, None, None, headers)
                )
                if self.settings.publish_embeddings and self.client.embeddings:
                    pending += await self._send_embedding(upload.photo_id, prediction, headers)
                metrics.observe_latency(upload.uploaded_at)
                metrics.EVENTS_OUT.labels("tagged").inc()
        return pending

    async def _send_embedding(
        self, photo_id: str, prediction: Prediction, headers: list
    ) -> list[asyncio.Future]:
        """The photo's embedding record, acknowledged with its tag event (nothing for a version without one)."""
        if prediction.embedding is None:
            if prediction.version not in self.versions_without_embedding:
                self.versions_without_embedding.add(prediction.version)
                log.warning("model version %s answers without an embedding: none published for it",
                            prediction.version)  # fmt: skip
            return []
        value = embedding_record(photo_id, prediction.version, prediction.embedding)
        producer = self.topics.tags.app.producer
        topic = self.settings.embeddings_topic
        return [await producer.send(topic, photo_id.encode(), value, None, None, headers)]

    def _load(self, event: faust.EventT, model_input: ModelInput) -> asyncio.Future:
        """A future of ``(upload, image)``, or of the PermanentError that makes it a dead letter."""
        try:
            upload = parse_upload(event.value, event.message.timestamp)  # no uploaded_at: the record's time
        except PermanentError as exc:
            done = asyncio.get_running_loop().create_future()
            done.set_exception(exc)
            return done
        if upload.url.startswith("file:"):
            # A local read cannot be transiently unavailable: read and decode in one call on a decode
            # thread, with no hop through the event loop in between.
            return self.decoder.submit(read_and_decode_upload, upload, self.settings, model_input)
        return asyncio.ensure_future(self._load_remote(upload, model_input, upload_span(event).trace_id))

    async def _load_remote(
        self, upload: Upload, model_input: ModelInput, trace_id: str | None = None
    ) -> tuple[Upload, np.ndarray]:
        """Fetch within the byte budget (waiting for room first), then decode; the bytes are held until
        the decode is done."""
        started = time.monotonic()
        try:
            async with self.fetch_budget.hold(self.settings.max_image_bytes) as held:
                data = await self._fetch(upload, trace_id)
                held.shrink(len(data))
                return upload, await self.decoder.submit(decode_photo, data, self.settings, model_input)
        finally:
            metrics.LOAD_SECONDS.observe(time.monotonic() - started)

    async def _fetch(self, upload: Upload, trace_id: str | None = None) -> bytes | bytearray:
        """Fetch with the source's transient failures retried (capped backoff), then ``fetch_unavailable``."""
        s = self.settings
        loop = asyncio.get_running_loop()
        delay = 0.5
        for attempt in range(1, s.fetch_attempts + 1):
            call = loop.run_in_executor(
                self.fetch_pool, fetch, upload.url, s.allowed_roots, s.max_image_bytes, s.fetch_timeout_s,
                s.allow_loopback_http, self.s3, self.origins,
            )  # fmt: skip
            try:  # fetch enforces its own deadline; this one only guards against a hung file system
                return await asyncio.wait_for(call, s.fetch_timeout_s + 5.0)
            except (SourceUnavailable, TimeoutError) as exc:
                reason = str(exc) or "no answer within the fetch deadline"
            if attempt < s.fetch_attempts:
                metrics.RETRIES.labels("fetch").inc()
                log.info(
                    "source of %s unavailable (%s); retry %d in %.1fs",
                    upload.photo_id,
                    reason,
                    attempt,
                    delay,
                    extra={"photo_id": upload.photo_id, "trace_id": trace_id},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise PermanentError(ErrorCode.FETCH_UNAVAILABLE, f"{reason} ({s.fetch_attempts} attempts)")

    async def _send_dead_letter(self, event: faust.EventT, error: PermanentError) -> asyncio.Future:
        msg = event.message
        photo_id = photo_id_hint(event.value, msg.key)
        value = dead_letter(event.value, photo_id, error, msg.topic, msg.partition, msg.offset, msg.timestamp)
        span = upload_span(event)
        log.info(
            "dead letter %s@%s: %s %s",
            msg.partition,
            msg.offset,
            error.code,
            error.detail[:300],
            extra={"photo_id": photo_id, "trace_id": span.trace_id},
        )
        metrics.DEAD_LETTERS.labels(str(error.code)).inc()
        metrics.EVENTS_OUT.labels("dead_letter").inc()
        key = msg.key[:1024] if msg.key else msg.key
        headers = dead_letter_headers(msg.headers, span)  # the original's, bounded, and the trace context
        return await self.topics.dlq.send(key=key, value=value, headers=headers, force=True)


def upload_span(event: faust.EventT) -> TraceContext:
    """The worker's span for an upload: a child of the trace its record's headers carry, or a new trace; the
    same for every delivery of the record (docs/reliability.md, "Trace context")."""
    msg = event.message
    return record_span(msg.headers, msg.topic, msg.partition, msg.offset, msg.timestamp, msg.key)
