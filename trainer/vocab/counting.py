"""Counters whose memory stays flat however long the input: a pruned heavy-hitter table and a distinct-count
sketch. Both are exact on small inputs and degrade only in the long tail, which the vocabulary never keeps."""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Hashable
from functools import lru_cache


class HeavyHitters:
    """``key → count`` held to at most ``capacity`` keys.

    When the table outgrows ``capacity`` the smaller half is evicted (lossy counting): a key can only be lost
    while its count is below the largest evicted count, ``floor``, so every key above it is counted exactly
    from the moment it was (last) admitted. Callers update ``counts`` directly in their hot loop and call
    ``prune`` now and then."""

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self.counts: dict[Hashable, int] = {}
        self.floor = 0
        self.evicted_keys = 0
        self.evicted_total = 0

    def prune(self) -> list[Hashable]:
        """Evict the smaller half if over capacity; returns the evicted keys."""
        if len(self.counts) <= self.capacity:
            return []
        ranked = sorted(self.counts.items(), key=lambda kv: kv[1], reverse=True)
        keep = self.capacity // 2
        evicted = ranked[keep:]
        self.counts = dict(ranked[:keep])
        self.floor = max(self.floor, evicted[0][1])
        self.evicted_keys += len(evicted)
        self.evicted_total += sum(c for _, c in evicted)
        return [k for k, _ in evicted]


@lru_cache(maxsize=1 << 16)
def stable_hash(text: str) -> int:
    """64-bit hash of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big"
    )


class DistinctCount:
    """Number of distinct items seen, exact up to ``k`` items and a K-minimum-values estimate beyond
    (relative error about 1/sqrt(k)); memory is at most ``k`` hashes."""

    __slots__ = ("k", "_kept", "_heap")
    _SPACE = float(1 << 64)

    def __init__(self, k: int = 1024):
        self.k = k
        self._kept: set[int] = set()
        self._heap: list[int] = []  # negated hashes: the root is the largest kept

    def add(self, h: int) -> None:
        """Add one item by its ``stable_hash``."""
        if h in self._kept:
            return
        if len(self._kept) < self.k:
            self._kept.add(h)
            heapq.heappush(self._heap, -h)
        elif h < -self._heap[0]:
            self._kept.discard(-heapq.heapreplace(self._heap, -h))
            self._kept.add(h)

    def __len__(self) -> int:
        if len(self._kept) < self.k:
            return len(self._kept)
        return int((self.k - 1) * self._SPACE / (-self._heap[0] + 1))
