"""A raw TCP server on 127.0.0.1 that answers every request with whatever bytes a test scripts.

``http.server`` cannot send a malformed status line, trickle one byte at a time or write a broken chunk
size; this can. Each connection reads the request head, then plays ``script``: a list of byte strings,
each sent after ``delay_s`` (0 sends at once), then closes.
"""

from __future__ import annotations

import socket
import threading


class ScriptedHTTP:
    """Answers each connection with ``self.script`` (settable between fetches), pausing ``delay_s`` per part."""

    def __init__(self, script: list[bytes] | None = None, delay_s: float = 0.0) -> None:
        self.script = script or []
        self.delay_s = delay_s
        self.requests: list[bytes] = []  # the request heads received, in order
        self._closed = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._answer, args=(conn, list(self.script), self.delay_s), daemon=True
            ).start()

    def _answer(self, conn: socket.socket, script: list[bytes], delay_s: float) -> None:
        with conn:
            conn.settimeout(5)
            try:
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    part = conn.recv(4096)
                    if not part:
                        return
                    head += part
                self.requests.append(head)
                for piece in script:
                    if delay_s and self._closed.wait(delay_s):
                        return
                    conn.sendall(piece)
            except OSError:
                pass  # the fetcher hung up, as it may

    def close(self) -> None:
        self._closed.set()
        self._sock.close()


def trickle(data: bytes) -> list[bytes]:
    """``data`` as a script of single bytes."""
    return [data[i : i + 1] for i in range(len(data))]
