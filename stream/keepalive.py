"""Idle ``http(s)`` connections kept for the next fetch from the same origin (HTTP keep-alive).

A connection is keyed by everything that made it safe to open: scheme, host, port and the vetted address it
is pinned to (or the proxy it goes through), so a name that now resolves elsewhere never gets an old
connection. Only a connection whose last response was read to its end comes back here (stream/fetch.py);
one that is taken out is used by one fetch at a time. The pool is bounded (the least recently used
connection is closed first) and closes connections idle past their keep-alive time whenever it is used.
"""

from __future__ import annotations

import http.client
import os
import select
import threading
import time
from collections.abc import Hashable

#: Idle connections kept at most, all origins together: the worker's fetch threads (``batch_size``, 64 by
#: default) can each hand one back after a batch from one origin.
MAX_IDLE = 64


class ConnectionPool:
    """Thread-safe store of idle connections: ``take`` one for a key, ``give`` it back when done."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[tuple[Hashable, http.client.HTTPConnection, float]] = []  # oldest first

    def take(self, key: Hashable) -> http.client.HTTPConnection | None:
        """The most recently used live connection for ``key``, or None; expired and dropped ones are closed."""
        while True:
            now = time.monotonic()
            with self._lock:
                expired = [entry for entry in self._idle if entry[2] <= now]
                self._idle = [entry for entry in self._idle if entry[2] > now]
                found = None
                for i in range(len(self._idle) - 1, -1, -1):
                    if self._idle[i][0] == key:
                        found = self._idle.pop(i)[1]
                        break
            for _, conn, _ in expired:
                conn.close()
            if found is None or not _dropped(found):
                return found
            found.close()

    def give(self, key: Hashable, conn: http.client.HTTPConnection, idle_s: float) -> None:
        """Keep ``conn`` for ``idle_s`` seconds (closed at once if 0 or the pool is full of newer ones)."""
        if idle_s <= 0 or conn.sock is None:
            conn.close()
            return
        with self._lock:
            self._idle.append((key, conn, time.monotonic() + idle_s))
            evicted = self._idle[: max(0, len(self._idle) - self.max_idle)]
            del self._idle[: len(evicted)]
        for _, old, _ in evicted:
            old.close()

    def idle(self) -> int:
        """How many connections are idle now."""
        with self._lock:
            return len(self._idle)

    def clear(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, conn, _ in idle:
            conn.close()

    def forget(self) -> None:
        """Drop the idle connections without a word on them: in a forked child they are the parent's."""
        self._idle = []
        self._lock = threading.Lock()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection has something to read: the server closed it (or sent what it should not),
    so it cannot carry a new request. A check that costs no wait."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        if getattr(sock, "pending", lambda: 0)():  # TLS bytes already decrypted and buffered
            return True
        poller = select.poll()  # not select(): no limit on the descriptor's number
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed underneath
        return True


POOL = ConnectionPool()
os.register_at_fork(after_in_child=POOL.forget)
