"""The worker's decode threads: results and errors come back, and a stuck decode cannot stall the rest."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY

from contracts.records import ErrorCode, PermanentError
from stream.decodepool import DecodePool


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_every_result_and_every_error_reaches_its_own_future():
    async def main():
        pool = DecodePool(threads=2, timeout_s=5)

        def work(i: int) -> int:
            if i % 7 == 3:
                raise PermanentError(ErrorCode.DECODE_FAILED, f"photo {i}")
            time.sleep(0.001 * (i % 3))
            return i * i

        futures = [pool.submit(work, i) for i in range(200)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        pool.shutdown()
        return results

    results = run(main())
    for i, result in enumerate(results):
        if i % 7 == 3:
            assert isinstance(result, PermanentError) and result.detail == f"photo {i}"
        else:
            assert result == i * i


def stuck_on(release: threading.Event) -> tuple[threading.Event, Callable[[], bool]]:
    """A decode that blocks until ``release``, and the event it sets once a thread has started it."""
    started = threading.Event()

    def decode() -> bool:
        started.set()
        return release.wait(30)

    return started, decode


def test_a_decode_stuck_past_its_deadline_fails_alone_and_the_queued_photos_still_decode():
    release = threading.Event()

    async def main():
        pool = DecodePool(threads=1, timeout_s=1.0)  # one thread: everything else queues behind the stuck one
        started, decode = stuck_on(release)
        stuck = pool.submit(decode)
        queued = [pool.submit(lambda i=i: i + 1) for i in range(5)]
        assert await asyncio.to_thread(started.wait, 10)
        assert pool.expire() == 0  # running, not yet past its deadline
        await asyncio.sleep(1.2)  # a sleep only ever lasts longer: the deadline has surely passed
        assert pool.expire() == 1
        with pytest.raises(PermanentError) as err:
            await stuck
        assert err.value.code == ErrorCode.DECODE_TIMEOUT
        assert await asyncio.gather(*queued) == [1, 2, 3, 4, 5]  # moved to a fresh thread
        assert pool.abandoned == 1
        release.set()  # the abandoned thread finishes later; its result is dropped, not delivered twice
        await asyncio.sleep(0.1)
        pool.shutdown()

    run(main())


def test_the_deadline_counts_from_when_a_thread_starts_the_photo_not_from_when_it_was_queued():
    async def main():
        # 2 s queued in all, each photo 0.25 s: 1.25 s of margin each for a slow thread on a loaded machine
        pool = DecodePool(threads=1, timeout_s=1.5)
        futures = [pool.submit(time.sleep, 0.25) for _ in range(8)]
        while not all(f.done() for f in futures):
            assert pool.expire() == 0
            await asyncio.sleep(0.05)
        await asyncio.gather(*futures)
        pool.shutdown()

    run(main())


def stuck_threads() -> float:
    return REGISTRY.get_sample_value("darkroom_decode_threads_abandoned")


def test_abandoned_threads_still_running_are_counted_and_past_the_cap_the_pool_is_exhausted():
    release = threading.Event()

    async def main():
        pool = DecodePool(threads=1, timeout_s=0.2, max_abandoned=2)
        before = stuck_threads()
        for n in (1, 2):
            assert not pool.exhausted
            started, decode = stuck_on(release)
            future = pool.submit(decode)
            assert await asyncio.to_thread(started.wait, 10)
            await asyncio.sleep(0.3)
            assert pool.expire() == 1
            with pytest.raises(PermanentError):
                await future
            assert pool.stuck == n and stuck_threads() == before + n
        assert pool.exhausted  # the worker's liveness check now fails: the pod is restarted
        release.set()  # the stuck threads return: nothing is stuck any more
        for _ in range(200):
            if pool.stuck == 0:
                break
            await asyncio.sleep(0.05)
        assert pool.stuck == 0 and stuck_threads() == before and not pool.exhausted
        pool.shutdown()

    run(main())
