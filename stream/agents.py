"""The tagging agent: micro-batches of uploads → fetch + decode → Triton → tag events or dead letters.

Delivery (docs/reliability.md). The agent reads its stream with manual acks and hands events to an
``InOrderPipeline``: micro-batches of up to ``batch_size`` events (or what arrived within
``batch_window_s``), two in flight so that decoding the next overlaps inference and I/O of the current.
For each batch the tagger:

* awaits the broker's acknowledgement (acks=all) of every output it produced: an input offset is acked
  (and later committed) only after its tag event or dead letter is durable, and batches are acked strictly
  in arrival order, never one before an earlier one (so faust-streaming #606, which commits past an
  in-flight event when acks arrive out of order, cannot happen; agent concurrency stays 1 for the same
  reason);
* turns what retrying cannot fix into a dead letter, retries what it can (Triton without end, a photo's
  source and an input the model fails on a bounded number of times), and stops the process (``os._exit``, no commit) on anything else;
* on cancellation (SIGTERM, worker stop) the pipeline finishes what it holds before letting the
  cancellation through, within ``drain_timeout_s``; past that it exits without committing (redelivered);
* on a rebalance it finishes what it can within ``rebalance_grace_s`` and gives the rest back unacked
  (read again by the partition's next owner), so a Triton outage never holds the group's rebalance.

Outputs are idempotent: the same (photo_id, model_version) always gives the same tags, so a redelivered
batch repeats identical events.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import faust
import numpy as np

from contracts.photos import decode
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
from stream import metrics
from stream.app import Topics
from stream.budget import ByteBudget
from stream.decodepool import DecodePool
from stream.fetch import fetch
from stream.inference import TaggerClient
from stream.objectstore import S3Options
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Outputs of the uploads that are ready are published after at most this long, however slow the rest of
#: their batch: a straggler delays only itself (its offset still commits with its batch). Ready uploads are
#: sent to Triton sooner, as soon as ``infer_batch_size`` of them are decoded.
STRAGGLER_S = 1.0
HEALTH_INTERVAL_S = 2.0
DEADLINE_CHECK_S = 0.5  # how often a waiting batch looks for photos stuck past their decode deadline
EXIT_UNCOMMITTED = 70  # exit status when the worker stops on purpose without committing its batch


def decode_photo(data: bytes | bytearray, settings: Settings, model_input: ModelInput) -> np.ndarray:
    """Decode into the model's input; PermanentError for anything, a decoder bug on hostile input included."""
    try:
        return decode(
            data, (model_input.width, model_input.height), settings.max_image_pixels, settings.max_frames
        )
    except PermanentError:
        raise
    except Exception as exc:  # a decoder bug on hostile input must not take the worker down
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


def read_and_decode_upload(
    upload: Upload, settings: Settings, model_input: ModelInput
) -> tuple[Upload, np.ndarray]:
    """A ``file://`` photo read (under the allowed roots) and decoded in one go."""
    started = time.monotonic()
    s = settings
    try:
        data = fetch(upload.url, s.allowed_roots, s.max_image_bytes, s.fetch_timeout_s, s.allow_loopback_http)
        return upload, decode_photo(data, settings, model_input)
    finally:
        metrics.LOAD_SECONDS.observe(time.monotonic() - started)


class Tagger:
    """Per-process state of the agent: the Triton client, the decode threads and the model's input shape."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.settings = settings
        self.topics = topics
        self.client = TaggerClient(
            settings.triton_grpc,
            settings.model_name,
            settings.triton_timeout_s,
            settings.model_error_attempts,
        )
        self.fetch_pool = ThreadPoolExecutor(max(4, settings.batch_size), thread_name_prefix="fetch")
        self.fetch_budget = ByteBudget(settings.fetch_budget_bytes)  # fetched bytes wait here, not in RAM
        self.decoder = DecodePool(
            settings.decode_threads, settings.decode_timeout_s, settings.max_abandoned_decodes
        )
        self.s3 = S3Options.from_settings(settings)
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
            predictions = await self.client.predict(np.stack([image for _, (_, image) in chunk]))
            metrics.BATCH_SIZE.observe(len(chunk))
            tagged_at = now_rfc3339()
            for (event, (upload, _)), prediction in zip(chunk, predictions, strict=True):
                if isinstance(prediction, PermanentError):  # the model fails on this input alone
                    pending.append(await self._send_dead_letter(event, prediction))
                    continue
                tags, version = prediction.tags, prediction.version
                value = tag_event(upload, tags, self.settings.model_name, version, tagged_at)
                pending.append(await producer.send(topic, upload.photo_id.encode(), value, None, None, None))
                metrics.observe_latency(upload.uploaded_at)
                metrics.EVENTS_OUT.labels("tagged").inc()
        return pending

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
        return asyncio.ensure_future(self._load_remote(upload, model_input))

    async def _load_remote(self, upload: Upload, model_input: ModelInput) -> tuple[Upload, np.ndarray]:
        """Fetch within the byte budget (waiting for room first), then decode; the bytes are held until
        the decode is done."""
        started = time.monotonic()
        try:
            async with self.fetch_budget.hold(self.settings.max_image_bytes) as held:
                data = await self._fetch(upload)
                held.shrink(len(data))
                return upload, await self.decoder.submit(decode_photo, data, self.settings, model_input)
        finally:
            metrics.LOAD_SECONDS.observe(time.monotonic() - started)

    async def _fetch(self, upload: Upload) -> bytes | bytearray:
        """Fetch with the source's transient failures retried (capped backoff), then ``fetch_unavailable``."""
        s = self.settings
        loop = asyncio.get_running_loop()
        delay = 0.5
        for attempt in range(1, s.fetch_attempts + 1):
            call = loop.run_in_executor(
                self.fetch_pool, fetch, upload.url, s.allowed_roots, s.max_image_bytes, s.fetch_timeout_s,
                s.allow_loopback_http, self.s3,
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
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise PermanentError(ErrorCode.FETCH_UNAVAILABLE, f"{reason} ({s.fetch_attempts} attempts)")

    async def _send_dead_letter(self, event: faust.EventT, error: PermanentError) -> asyncio.Future:
        msg = event.message
        photo_id = photo_id_hint(event.value, msg.key)
        value = dead_letter(event.value, photo_id, error, msg.topic, msg.partition, msg.offset, msg.timestamp)
        log.info("dead letter %s@%s: %s %s", msg.partition, msg.offset, error.code, error.detail[:300])
        metrics.DEAD_LETTERS.labels(str(error.code)).inc()
        metrics.EVENTS_OUT.labels("dead_letter").inc()
        key = msg.key[:1024] if msg.key else msg.key
        return await self.topics.dlq.send(key=key, value=value, force=True)


class InOrderPipeline:
    """Micro-batches from the agent's stream, up to ``depth`` of them in flight, offsets acked in order.

    While one batch waits for Triton and for the broker's acknowledgements, the next is already being
    fetched and decoded: decode overlaps inference and I/O. Acks still follow arrival (= offset) order
    strictly, one whole batch after the other and only once its outputs are durable, so no offset is
    ever acked while an earlier one is in flight: the out-of-order commit of faust-streaming #606 cannot
    happen, and at-least-once holds as with one batch at a time.

    What it holds is bounded (``batch_size x depth`` queued, ``depth`` batches in flight), and on a
    rebalance it can give all of it back unacked (``release``), so a Triton outage never holds a rebalance.
    """

    def __init__(self, tagger: Tagger, stream: faust.StreamT, settings: Settings) -> None:
        self.tagger = tagger
        self.stream = stream
        self.settings = settings
        self.queue: asyncio.Queue[faust.EventT] = asyncio.Queue(
            maxsize=settings.batch_size * settings.pipeline_depth
        )
        self.forming: list[faust.EventT] = []  # the batch the batcher is collecting
        self.inflight: collections.deque[tuple[list[faust.EventT], asyncio.Future]] = collections.deque()
        self.changed = asyncio.Event()
        self._start()

    def _start(self) -> None:
        self.slots = asyncio.Semaphore(self.settings.pipeline_depth)
        self.tasks = [asyncio.ensure_future(self._batcher()), asyncio.ensure_future(self._acker())]

    @property
    def idle(self) -> bool:
        return self.queue.empty() and not self.forming and not self.inflight

    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        getter: asyncio.Future | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(self.queue.get())
                self.forming = [await getter]
                getter = None
                deadline = loop.time() + self.settings.batch_window_s
                while len(self.forming) < self.settings.batch_size:
                    # What is already queued is taken at once (no get is pending here, so order holds)
                    while len(self.forming) < self.settings.batch_size and not self.queue.empty():
                        self.forming.append(self.queue.get_nowait())
                    if len(self.forming) >= self.settings.batch_size:
                        break
                    getter = asyncio.ensure_future(self.queue.get())
                    # wait() never cancels the get: an event taken as the window closes is kept
                    done, _ = await asyncio.wait({getter}, timeout=max(0.0, deadline - loop.time()))
                    if not done:
                        break
                    self.forming.append(getter.result())
                    getter = None
                await self.slots.acquire()
                batch, self.forming = self.forming, []
                self.inflight.append((batch, asyncio.ensure_future(self.tagger.process(batch))))
                self.changed.set()
        except asyncio.CancelledError:
            if getter is not None and not getter.cancel():  # the get had just taken an event: held too
                self.forming.append(getter.result())
            raise
        except BaseException:
            _stop_uncommitted("the batcher failed")

    async def _acker(self) -> None:
        try:
            while True:
                while not self.inflight:
                    self.changed.clear()
                    await self.changed.wait()
                batch, work = self.inflight[0]
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    raise
                except BaseException:
                    # A bug must not turn into committed offsets: stop hard, the batch is redelivered.
                    _stop_uncommitted(f"unexpected error in a batch of {len(batch)}")
                for event in batch:
                    await self.stream.ack(event)
                self.inflight.popleft()
                self.slots.release()
                self.changed.set()
        except asyncio.CancelledError:
            raise
        except BaseException:
            _stop_uncommitted("the acker failed")

    async def _wait_idle(self, timeout_s: float) -> bool:
        """Wait until everything taken is acked; whether that happened within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.idle:
            if time.monotonic() > deadline:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), 0.2)
            except TimeoutError:
                pass
        return True

    async def drain(self, timeout_s: float) -> None:
        """Finish and ack everything queued or in flight (shutdown); past ``timeout_s`` exit uncommitted."""
        if not self.idle:
            log.info("stopping: finishing %d queued and %d in-flight batch(es) first (up to %.0fs)",
                     self.queue.qsize(), len(self.inflight), timeout_s)  # fmt: skip
        if not await self._wait_idle(timeout_s):
            _stop_uncommitted("in-flight batches not finished in time")
        for task in self.tasks:
            task.cancel()

    async def release(self, grace_s: float) -> list[faust.EventT]:
        """On a rebalance: let what is in flight finish for up to ``grace_s``, then give the rest back.

        Given-back events are never acked, so their offsets are not committed and whichever worker owns
        their partition after the rebalance reads them again (outputs already sent repeat identically).
        Without this, Faust would wait for them to be acked before rejoining the group, i.e. for Triton
        during an outage, and the group would evict the worker. Returns the events given back."""
        if await self._wait_idle(grace_s):
            return []
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        work = [future for _, future in self.inflight]
        for future in work:
            future.cancel()
        await asyncio.gather(*work, return_exceptions=True)
        held = [event for batch, _ in self.inflight for event in batch] + self.forming
        self.inflight.clear()
        self.forming = []
        while not self.queue.empty():
            held.append(self.queue.get_nowait())
            if self.queue.empty():
                await asyncio.sleep(0)  # a put that waited for room (the agent's event in hand) lands now
        self._start()
        self.changed.set()
        log.warning("rebalance: gave back %d unacked events still in flight after %.0fs", len(held), grace_s)
        return held


def _stop_uncommitted(why: str) -> None:
    log.critical("%s; exiting without committing the batches in flight", why, exc_info=True)
    os._exit(EXIT_UNCOMMITTED)


def attach_agents(app: faust.App, topics: Topics, settings: Settings) -> None:
    """Register the tagging agent, the Triton/Kafka watchers and the health and metrics pages on ``app``."""
    tagger = Tagger(settings, topics)

    @app.agent(topics.uploads, name="tag-uploads", concurrency=1)
    async def tag_uploads(stream: faust.StreamT) -> None:
        manual = stream.noack()  # acked by the pipeline, in order, once outputs are durable
        pipeline = InOrderPipeline(tagger, manual, settings)
        app.release_held = functools.partial(pipeline.release, settings.rebalance_grace_s)  # type: ignore[attr-defined]
        try:
            async for event in manual.events():
                await pipeline.queue.put(event)
        finally:
            await asyncio.shield(pipeline.drain(settings.drain_timeout_s))

    @app.on_partitions_assigned.connect
    async def count_assignment(sender: faust.App, assigned: set, **kwargs: object) -> None:
        """Count completed rebalances: a worker evicted again and again shows as a rising count."""
        metrics.ASSIGNMENTS.inc()

    @app.task
    async def connect_triton() -> None:
        tagger.model_input = await tagger.client.wait_ready()
        log.info("model %s ready, input %s", settings.model_name, tagger.model_input)

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
