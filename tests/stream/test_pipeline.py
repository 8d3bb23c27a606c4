"""InOrderPipeline against a fake stream and a fake tagger: what it acks, when, and in which order.

The at-least-once promise rests here: an event is acked only after its batch's outputs are durable (the
tagger's ``process`` returned), batches are acked strictly in arrival order however they complete, and a
failing batch stops the worker before anything from it or after it is acked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from stream import pipeline
from stream.pipeline import InOrderPipeline
from stream.settings import Settings


class Stopped(BaseException):
    """Stands in for ``os._exit``: ends the pipeline's task the way the process would end."""


class FakeStream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: int) -> bool:
        self.acked.append(event)
        return True


class FakeTagger:
    """Each batch waits on a gate the test opens (result) or breaks (exception), in any order."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gates: list[asyncio.Future] = []
        self.cancelled: list[int] = []

    async def process(self, events: list[int]) -> None:
        gate = asyncio.get_running_loop().create_future()
        index = len(self.batches)
        self.batches.append(list(events))
        self.gates.append(gate)
        try:
            await gate
        except asyncio.CancelledError:
            self.cancelled.append(index)
            raise


@pytest.fixture
def stops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The reasons the pipeline gave for stopping the worker uncommitted (instead of exiting the test)."""
    reasons: list[str] = []

    def stop(why: str) -> None:
        reasons.append(why)
        raise Stopped(why)

    monkeypatch.setattr(pipeline, "_stop_uncommitted", stop)
    return reasons


async def until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    """Yield to the loop until ``check`` holds; fail naming ``what``."""
    async with asyncio.timeout(timeout_s):
        while not check():
            await asyncio.sleep(0.001)


def run(scenario: Callable[[InOrderPipeline, FakeTagger, FakeStream], Awaitable[None]], **settings: object):
    async def main() -> None:
        tagger, stream = FakeTagger(), FakeStream()
        values = {"batch_size": 4, "pipeline_depth": 2, "batch_window_s": 0.05, **settings}
        pipeline = InOrderPipeline(tagger, stream, Settings(**values))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(scenario(pipeline, tagger, stream), 20)
        finally:
            for task in pipeline.tasks:
                task.cancel()
            await asyncio.gather(*pipeline.tasks, return_exceptions=True)

    asyncio.run(main())


async def put(pipeline: InOrderPipeline, events: range) -> None:
    for event in events:
        await pipeline.queue.put(event)


def test_batches_keep_arrival_order_and_size():
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(8))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        assert tagger.batches == [[0, 1, 2, 3], [4, 5, 6, 7]]
        for gate in tagger.gates:
            gate.set_result(None)
        await until(lambda: len(stream.acked) == 8, "all acked")
        assert stream.acked == list(range(8))

    run(scenario)


def test_a_batch_finishing_first_waits_for_the_earlier_one_before_any_ack():
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(8))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        tagger.gates[1].set_result(None)  # the second batch's outputs are durable first
        await asyncio.sleep(0.1)
        assert stream.acked == [], "acked a later batch while an earlier one was in flight"
        tagger.gates[0].set_result(None)
        await until(lambda: len(stream.acked) == 8, "both acked")
        assert stream.acked == list(range(8))

    run(scenario)


def test_no_more_than_depth_batches_are_in_flight():
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(12))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        await asyncio.sleep(0.1)
        assert len(tagger.batches) == 2, "a third batch started with two unacked"
        tagger.gates[0].set_result(None)
        await until(lambda: len(tagger.batches) == 3, "the third batch after the first is acked")
        assert stream.acked == [0, 1, 2, 3]

    run(scenario)


def test_a_failing_batch_stops_the_worker_before_acking_it_or_anything_after(stops):
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(8))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        tagger.gates[1].set_result(None)
        tagger.gates[0].set_exception(RuntimeError("a bug"))
        await until(lambda: bool(stops), "the worker stopped")
        await asyncio.sleep(0.05)
        assert stream.acked == []
        assert stops[0] == "unexpected error in a batch of 4"

    run(scenario)


def test_a_failure_after_earlier_batches_keeps_their_acks_only(stops):
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(8))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        tagger.gates[0].set_result(None)
        await until(lambda: len(stream.acked) == 4, "first batch acked")
        tagger.gates[1].set_exception(ValueError("row count"))
        await until(lambda: bool(stops), "the worker stopped")
        assert stream.acked == [0, 1, 2, 3]

    run(scenario)


def test_cancelling_the_agent_mid_batch_finishes_and_acks_what_it_holds():
    """The agent's loop is cancelled (worker stop) with one batch in flight and events still queued: the
    batch is not cancelled, and everything taken from the stream is processed and acked before the
    cancellation goes through."""

    async def scenario(pipeline, tagger, stream):
        async def agent() -> (
            None
        ):  # the shape of tag_uploads: feed the queue, drain (shielded) on the way out
            try:
                await put(pipeline, range(6))
                await asyncio.Event().wait()
            finally:
                await asyncio.shield(pipeline.drain(5.0))

        task = asyncio.ensure_future(agent())
        await until(lambda: len(tagger.batches) == 2, "a full and a partial batch in flight")
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done() and tagger.cancelled == [], "the batch in flight was cancelled"
        for gate in tagger.gates:
            gate.set_result(None)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert stream.acked == list(range(6)) and tagger.cancelled == []
        assert all(t.done() for t in pipeline.tasks)

    run(scenario)


def test_a_drain_past_its_deadline_stops_without_acking_the_unfinished(stops):
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(6))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        tagger.gates[0].set_result(None)
        with pytest.raises(Stopped):
            await pipeline.drain(0.3)
        assert stops == ["in-flight batches not finished in time"]
        assert stream.acked == [0, 1, 2, 3]

    run(scenario)


def test_release_gives_back_what_is_unfinished_unacked_and_serves_on():
    """A rebalance during a Triton outage: the batch that finished is acked, everything else (in flight,
    queued, and the event the agent was waiting to queue) is given back unacked, and the pipeline then
    serves new events with fresh tasks."""

    async def scenario(pipeline, tagger, stream):
        # 8 in flight, 8 queued (both slots busy, so nothing forms) and 1 waiting for room
        agent = asyncio.ensure_future(put(pipeline, range(21)))
        await until(lambda: len(tagger.batches) == 2 and pipeline.queue.full(), "pipeline full")
        assert not pipeline.forming
        tagger.gates[0].set_result(None)
        full_again = lambda: len(tagger.batches) == 3 and pipeline.queue.full()  # noqa: E731
        await until(lambda: len(stream.acked) == 4 and full_again(), "full again")
        assert tagger.batches[2] == [8, 9, 10, 11]
        assert not agent.done()
        held = await pipeline.release(0.2)
        await agent
        assert sorted(held) == list(range(4, 21)) and pipeline.idle
        assert tagger.cancelled == [1, 2], "the unfinished batches were not stopped"
        await put(pipeline, range(100, 104))
        await until(lambda: len(tagger.batches) == 4, "a new batch after the release")
        assert tagger.batches[3] == [100, 101, 102, 103]
        tagger.gates[3].set_result(None)
        await until(lambda: len(stream.acked) == 8, "the new batch acked")
        assert stream.acked == [0, 1, 2, 3, 100, 101, 102, 103]

    run(scenario)


def test_release_waits_for_batches_that_finish_within_the_grace_period():
    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(6))
        await until(lambda: len(tagger.batches) == 2, "two batches in flight")
        asyncio.get_running_loop().call_later(0.1, lambda: [g.set_result(None) for g in tagger.gates])
        assert await pipeline.release(5.0) == []
        assert stream.acked == list(range(6)) and tagger.cancelled == []

    run(scenario)


def test_an_event_at_an_idle_pipeline_starts_at_once_and_batches_grow_while_others_are_in_flight():
    """Batches form when a slot is free: under load each holds what queued while the ones ahead worked."""

    async def scenario(pipeline, tagger, stream):
        await put(pipeline, range(1))
        await until(lambda: len(tagger.batches) == 1, "the first event's batch")
        assert tagger.batches == [[0]]  # nothing waited for company
        await put(pipeline, range(1, 2))
        await until(lambda: len(tagger.batches) == 2, "a second batch in the free slot")
        for event in range(2, 6):  # both slots busy: these arrive one by one, and wait together
            await pipeline.queue.put(event)
            await asyncio.sleep(0.02)
        assert len(tagger.batches) == 2, "a third batch started with two in flight"
        tagger.gates[0].set_result(None)
        await until(lambda: len(tagger.batches) == 3, "the third batch once a slot is free")
        assert tagger.batches[2] == [2, 3, 4, 5]  # one batch of everything that queued, not one event
        for gate in tagger.gates[1:]:
            gate.set_result(None)
        await until(lambda: len(stream.acked) == 6, "all acked")
        assert stream.acked == list(range(6))

    run(scenario, batch_window_s=0.0)
