"""A budget of bytes shared by the photos a worker fetches: fetching waits for room instead of piling up.

An OOM kill is never dead-lettered (the pod dies on the same batch again), so what photos may hold is
bounded in bytes, not in counts: a fetch holds ``max_image_bytes`` while it runs (its size is unknown
until its headers arrive), shrinks to the bytes it got, and gives them back once the photo is decoded.
Waiters are served first come, first served, so a large hold is not starved by small ones. No hold waits
for another while holding bytes, so the budget cannot deadlock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from stream import metrics


class Hold:
    """Bytes held from a ``ByteBudget``; ``shrink`` gives back what turned out not to be needed."""

    def __init__(self, budget: ByteBudget, n: int) -> None:
        self.budget = budget
        self.n = n

    def shrink(self, n: int) -> None:
        """Keep only ``n`` bytes (no more than held); the rest goes to waiters at once."""
        n = min(n, self.n)
        self.budget._release(self.n - n)
        self.n = n


class ByteBudget:
    """At most ``limit`` bytes held at once, on one event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[Hold]:
        """Wait until ``n`` bytes fit (after every earlier waiter), hold them for the block, then return them."""
        if n > self.limit:
            raise ValueError(f"{n} bytes would never fit a budget of {self.limit}")  # settings prevent it
        if self._waiters or self.held + n > self.limit:
            granted = asyncio.get_running_loop().create_future()
            self._waiters.append((n, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():  # granted as it was cancelled: give it back
                    self._release(n)
                else:
                    with contextlib.suppress(ValueError):  # already skipped by _wake
                        self._waiters.remove((n, granted))
                    self._wake()  # the waiters behind this one may fit now
                raise
        else:
            self._take(n)
        held = Hold(self, n)
        try:
            yield held
        finally:
            self._release(held.n)

    def _take(self, n: int) -> None:
        self.held += n
        metrics.PHOTO_BYTES_HELD.set(self.held)

    def _release(self, n: int) -> None:
        self.held -= n
        metrics.PHOTO_BYTES_HELD.set(self.held)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held + self._waiters[0][0] <= self.limit:
            n, granted = self._waiters.popleft()
            if granted.cancelled():  # its holder gave up waiting
                continue
            self._take(n)
            granted.set_result(None)
