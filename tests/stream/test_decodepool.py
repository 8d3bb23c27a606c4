"""The worker's decode threads: results and errors come back, and a stuck decode cannot stall the rest."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stream.decodepool import DecodePool
from stream.events import ErrorCode, PermanentError


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


def test_a_decode_stuck_past_its_deadline_fails_alone_and_the_queued_photos_still_decode():
    release = threading.Event()

    async def main():
        pool = DecodePool(threads=1, timeout_s=1.0)  # one thread: everything else queues behind the stuck one
        stuck = pool.submit(release.wait, 30)
        queued = [pool.submit(lambda i=i: i + 1) for i in range(5)]
        await asyncio.sleep(0.1)
        assert pool.expire() == 0  # not past its deadline yet
        await asyncio.sleep(1.2)
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
        pool = DecodePool(threads=1, timeout_s=0.6)
        futures = [pool.submit(time.sleep, 0.2) for _ in range(6)]  # 1.2 s queued in all, each 0.2 s
        while not all(f.done() for f in futures):
            assert pool.expire() == 0
            await asyncio.sleep(0.05)
        await asyncio.gather(*futures)
        pool.shutdown()

    run(main())
