"""Decode threads that never wait for the event loop, with a deadline per photo.

The worker's CPU goes to decoding; the event loop only routes. So every photo of a micro-batch is queued
to the threads at once (a thread that finishes one starts the next without a round trip through the loop),
and finished photos are handed back in bunches: one loop wake-up for whatever finished since the last,
not one per photo.

A photo whose decode runs longer than ``timeout_s`` (counted from when a thread picked it up) fails with
``decode_timeout``. A thread cannot be stopped, so the pool it is stuck in is abandoned: its queued photos
move to a fresh pool and the stuck thread is left to finish (or not) on its own. Abandoned threads still
running are counted (``darkroom_decode_threads_abandoned``); from ``max_abandoned`` of them on the pool is
``exhausted`` and the worker's liveness check fails, so the pod is restarted (gracefully: SIGTERM, the
batches in flight finish and commit) before stuck threads eat its CPU and memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from contracts.records import ErrorCode, PermanentError
from stream import metrics


def name_os_thread(name: str) -> None:
    """Name the calling thread in the kernel (``/proc/<pid>/task/<tid>/comm``, 15 bytes), so the bench's
    profiler and ``top -H`` tell the decode threads apart; best effort, Linux only."""
    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class _Job:
    __slots__ = ("future", "fn", "args", "started", "submitted", "returned", "abandoned")

    def __init__(self, future: asyncio.Future, fn: Callable[..., Any], args: tuple) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.started = 0.0  # monotonic time a thread picked it up; 0 while queued
        self.submitted: Future | None = None  # the executor's handle, to cancel it while queued
        self.returned = False  # its thread is done with it (under the pool's lock)
        self.abandoned = False  # given up on past the deadline while its thread still ran it


class DecodePool:
    """``submit(fn, *args)`` → an asyncio future of ``fn(*args)`` run on one of ``threads`` threads."""

    def __init__(self, threads: int, timeout_s: float, max_abandoned: int = 8, name: str = "decode") -> None:
        self.threads = threads
        self.timeout_s = timeout_s
        self.max_abandoned = max_abandoned
        self.name = name
        self.abandoned = 0  # threads given up on (stuck past the deadline), in all
        self.stuck = 0  # of those, the ones still running
        self._pool = self._new_pool()
        self._jobs: set[_Job] = set()  # submitted, not yet settled on the loop
        self._finished: list[tuple[_Job, Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(
            self.threads, thread_name_prefix=self.name, initializer=name_os_thread, initargs=(self.name,)
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        loop = self._loop = asyncio.get_running_loop()
        job = _Job(loop.create_future(), fn, args)
        self._jobs.add(job)
        job.submitted = self._pool.submit(self._run, job)
        return job.future

    def _run(self, job: _Job) -> None:  # on a pool thread
        job.started = time.monotonic()
        result: Any = None
        error: BaseException | None = None
        try:
            result = job.fn(*job.args)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the job
            error = exc
        with self._lock:
            job.returned = True
            if job.abandoned:  # its photo is a dead letter already; only the count of stuck threads changes
                self.stuck -= 1
                metrics.DECODES_ABANDONED.dec()
                return
            self._finished.append((job, result, error))
            if self._wake_scheduled:
                return  # the loop is already going to collect this one with the others
            self._wake_scheduled = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:  # on the loop
        with self._lock:
            finished, self._finished = self._finished, []
            self._wake_scheduled = False
        for job, result, error in finished:
            self._jobs.discard(job)
            if job.future.done():  # timed out (or its waiter gave up) before it finished
                continue
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

    def expire(self) -> int:
        """Fail the photos stuck past the deadline and move the queued ones to a fresh pool; how many."""
        now = time.monotonic()
        with self._lock:  # a job whose thread returned meanwhile is not stuck: its result is on the way
            stuck = [
                j for j in self._jobs if j.started and not j.returned and now - j.started > self.timeout_s
            ]
            for job in stuck:
                job.abandoned = True
            self.stuck += len(stuck)
            metrics.DECODES_ABANDONED.inc(len(stuck))
        if not stuck:
            return 0
        for job in stuck:
            self._jobs.discard(job)
            if not job.future.done():
                job.future.set_exception(
                    PermanentError(ErrorCode.DECODE_TIMEOUT, f"decoding took over {self.timeout_s:g}s")
                )
        old, self._pool = self._pool, self._new_pool()
        self.abandoned += len(stuck)
        old.shutdown(wait=False, cancel_futures=True)
        for job in list(self._jobs):  # queued in the old pool: cancelled there, so start them here
            if job.submitted is not None and job.submitted.cancelled():
                job.submitted = self._pool.submit(self._run, job)
        return len(stuck)

    @property
    def exhausted(self) -> bool:
        """Whether ``max_abandoned`` threads or more are stuck: time to restart the process."""
        return self.stuck >= self.max_abandoned

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
