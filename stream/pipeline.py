"""Batching and ordered acks: micro-batches from the agent's stream, a few in flight, offsets acked strictly in
arrival order and only once a batch's outputs are durable (the at-least-once promise, docs/reliability.md)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from typing import Protocol

import faust

from stream.settings import Settings

log = logging.getLogger(__name__)


class BatchProcessor(Protocol):
    """What the pipeline hands each micro-batch to (the Tagger): done once every output is durable."""

    async def process(self, events: list[faust.EventT]) -> None: ...


EXIT_UNCOMMITTED = 70  # exit status when the worker stops on purpose without committing its batch


class InOrderPipeline:
    """Micro-batches from the agent's stream, up to ``depth`` of them in flight, offsets acked in order.

    While one batch waits for Triton and for the broker's acknowledgements, the next is already being
    fetched and decoded: decode overlaps inference and I/O. A batch is formed when a slot is free, from
    what has queued by then (plus ``batch_window_s``, 0 by default): an upload reaching an idle worker starts
    at once, and under load each batch holds what arrived while the ones ahead were in flight. (Forming
    first and then waiting for a slot left late arrivals out of a batch that was only waiting; measured
    under Poisson load, docs/performance.md.) Acks still follow arrival (= offset) order
    strictly, one whole batch after the other and only once its outputs are durable, so no offset is
    ever acked while an earlier one is in flight: the out-of-order commit of faust-streaming #606 cannot
    happen, and at-least-once holds as with one batch at a time.

    What it holds is bounded (``batch_size x depth`` queued, ``depth`` batches in flight), and on a
    rebalance it can give all of it back unacked (``release``), so a Triton outage never holds a rebalance.
    """

    def __init__(self, tagger: BatchProcessor, stream: faust.StreamT, settings: Settings) -> None:
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
                # A free slot first, then whatever has queued meanwhile: under load a batch grows while
                # the ones ahead of it are in flight, and an upload arriving at an idle worker starts at once.
                await self.slots.acquire()
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
