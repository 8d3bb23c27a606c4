"""Fetch a photo's bytes: ``file://`` under allowed roots, public ``http(s)://``, ``s3://`` in allowed buckets.

Fetching is synchronous and IO-bound; the agent runs it in a thread pool (decoding is contracts/photos.py). Every failure that
retrying cannot fix raises PermanentError with a dead-letter code; a source that may answer later (timeout,
refused connection, HTTP 5xx/429) raises SourceUnavailable, which the agent retries a bounded number of times.

``http(s)`` is fetched the way an SSRF guard must: the host is resolved once, every address it resolves to
must be public, and the connection goes to that vetted address (Host header and TLS SNI/certificate checks
still use the name), so a DNS answer that changes between check and connect (rebinding) cannot reach an
internal service. Each redirect is vetted the same way; bytes are capped while streaming; one deadline
covers resolution, connection, redirects and body.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import stat
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from contracts.records import ErrorCode, PermanentError, SourceUnavailable

if TYPE_CHECKING:
    from stream.objectstore import S3Options

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # kept as they are in a request path: reserved characters and escapes


def fetch(
    url: str,
    allowed_roots: Sequence[str],
    max_bytes: int,
    timeout_s: float,
    allow_loopback: bool = False,
    s3: S3Options | None = None,
) -> bytes | bytearray:
    """Return the bytes behind ``url``: ``file://`` under ``allowed_roots``, public ``http(s)://``, or
    ``s3://`` in a bucket ``s3`` allows (none by default).

    ``allow_loopback`` (a development setting) lets ``http`` reach 127.0.0.0/8 and ::1, nothing else private.
    """
    parts = _split(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"file URL with a host {parts.netloc[:100]!r}")
        return _read_file(urllib.parse.unquote(parts.path), allowed_roots, max_bytes)
    if parts.scheme in ("http", "https"):
        return _read_http(url, max_bytes, time.monotonic() + timeout_s, allow_loopback)
    if parts.scheme == "s3":
        from stream.objectstore import S3Options, read_s3  # botocore only once an s3:// upload comes

        return read_s3(url, s3 or S3Options(), max_bytes, timeout_s)
    raise PermanentError(ErrorCode.FORBIDDEN_URL, f"scheme {parts.scheme!r} not allowed in {url[:200]!r}")


def _split(url: str) -> urllib.parse.SplitResult:
    """``urlsplit``, with a malformed URL (``http://[x``) a dead letter rather than a ValueError."""
    try:
        return urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"malformed URL {url[:200]!r}: {exc}") from None


def _read_file(path: str, allowed_roots: Sequence[str], max_bytes: int) -> bytes:
    if "\x00" in path:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, "NUL byte in file path")
    try:
        real = os.path.realpath(path)  # resolves '..' and symlinks before the root check
    except (OSError, ValueError) as exc:  # a path the file system cannot even name (encoding, length)
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"unusable file path {path[:200]!r}: {exc}") from None
    if not any(real == root or real.startswith(root + os.sep) for root in allowed_roots):
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{path[:200]!r} is outside the allowed file roots")
    try:
        # O_NOFOLLOW: a symlink swapped in after realpath() is refused rather than followed out of the root
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PermanentError(ErrorCode.NOT_FOUND, f"no such file {path[:200]!r}") from None
    except (OSError, ValueError) as exc:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot open {path[:200]!r}: {exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # directories, FIFOs, devices (/dev/zero) are not photos
            raise PermanentError(ErrorCode.FETCH_FAILED, f"{path[:200]!r} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:  # EIO and the like: the file is there but unreadable
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot read {path[:200]!r}: {exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise PermanentError(ErrorCode.TOO_LARGE, f"{path[:200]!r} is over {max_bytes} bytes")
    return data


def refused_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_loopback: bool) -> bool:
    """True for anything but a public unicast address (loopback allowed only in development)."""
    if addr.version == 6:
        embedded = (
            addr.ipv4_mapped
            or addr.sixtofour
            or (ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF) if addr in _NAT64 else None)
        )
        if embedded is not None:
            return refused_address(embedded, allow_loopback)
    if addr.is_loopback:
        return not allow_loopback
    return not addr.is_global or addr.is_multicast


def _vetted_address(host: str, port: int, allow_loopback: bool, deadline: float) -> str:
    """Resolve ``host`` once; refuse if ANY address is not public; return the address to connect to."""
    if not host:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, "URL without a host")
    if time.monotonic() >= deadline:
        raise SourceUnavailable(f"deadline passed before resolving {host!r}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno == socket.EAI_AGAIN:
            raise SourceUnavailable(f"cannot resolve {host!r} now: {exc}") from None
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot resolve {host!r}: {exc}") from None
    except ValueError as exc:  # IDNA refuses the name (empty or over-long label), or a NUL in it
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host[:200]!r} is not a host name: {exc}") from None
    addrs = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for addr in addrs:
        if refused_address(addr, allow_loopback):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host!r} resolves to non-public address {addr}")
    if not addrs:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"{host!r} has no address")
    return str(addrs[0])


class _Deadline:
    """Every receive waits at most until ``deadline``: a per-read timeout alone lets a server that sends a
    byte a second hold a fetch forever (status line, headers and chunk-size lines are read line by line)."""

    deadline = 0.0

    def recv_into(self, buffer: memoryview, nbytes: int = 0, flags: int = 0) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the fetch deadline passed")
        self.settimeout(left)  # type: ignore[attr-defined]  # mixed into socket classes only
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[misc]


class _DeadlineSocket(_Deadline, socket.socket):
    """A plain TCP socket under one fetch deadline."""


class _DeadlineSSLSocket(_Deadline, ssl.SSLSocket):
    """A TLS socket under one fetch deadline (reads after the handshake; the handshake has the connect
    timeout, itself bounded by the deadline)."""


def _connect(address: str, port: int, deadline: float) -> _DeadlineSocket:
    raw = socket.create_connection((address, port), max(0.001, deadline - time.monotonic()))
    sock = _DeadlineSocket(raw.family, raw.type, raw.proto, raw.detach())
    sock.deadline = deadline
    sock.settimeout(max(0.001, deadline - time.monotonic()))  # sends and the TLS handshake: the time left
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted address; the Host header still names the host."""

    def __init__(self, host: str, address: str, port: int, deadline: float) -> None:
        super().__init__(host, port)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _connect(self._address, self.port, self._deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted address; SNI and the certificate check use the host name."""

    def __init__(self, host: str, address: str, port: int, deadline: float) -> None:
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, context=context)
        self._address = address
        self._deadline = deadline

    def connect(self) -> None:
        sock = _connect(self._address, self.port, self._deadline)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.sock.deadline = self._deadline


def _read_http(url: str, max_bytes: int, deadline: float, allow_loopback: bool) -> bytes | bytearray:
    for _ in range(MAX_REDIRECTS + 1):
        parts = _split(url)
        if parts.scheme not in ("http", "https"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"redirect to scheme {parts.scheme!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"bad port in {url[:200]!r}") from None
        host = parts.hostname or ""
        address = _vetted_address(host, port, allow_loopback, deadline)
        kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        try:
            conn = kind(host, address, port, deadline)
        except http.client.InvalidURL as exc:  # a host http.client will not put in a request (spaces, ...)
            raise PermanentError(
                ErrorCode.FORBIDDEN_URL, f"{host[:200]!r} is not a host name: {exc}"
            ) from None
        try:
            # non-ASCII, spaces and control characters percent-encoded (UTF-8), as a browser sends them
            path = urllib.parse.quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _SAFE)
            conn.request("GET", path, headers={"Accept": "image/*", "Accept-Encoding": "identity",
                                                "User-Agent": "darkroom-tagger"})  # fmt: skip
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise PermanentError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} without Location")
                try:
                    url = urllib.parse.urljoin(url, location)
                except ValueError:
                    raise PermanentError(
                        ErrorCode.FETCH_FAILED,
                        f"HTTP {resp.status} to a malformed Location {location[:200]!r}",
                    ) from None
                continue
            if resp.status in (404, 410):
                raise PermanentError(ErrorCode.NOT_FOUND, f"HTTP {resp.status} for {url[:200]!r}")
            if resp.status in (408, 425, 429) or resp.status >= 500:
                raise SourceUnavailable(f"HTTP {resp.status} for {url[:200]!r}")
            if resp.status != 200:
                raise PermanentError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} for {url[:200]!r}")
            # http.client's parse of Content-Length (None when absent, chunked or not a number such as "²")
            if resp.length is not None and resp.length > max_bytes:
                raise PermanentError(
                    ErrorCode.TOO_LARGE, f"{url[:200]!r} declares {resp.length} bytes, limit {max_bytes}"
                )
            return _read_capped(resp, url, max_bytes)
        except (TimeoutError, ConnectionError, http.client.RemoteDisconnected) as exc:
            raise SourceUnavailable(f"cannot fetch {url[:200]!r}: {type(exc).__name__}: {exc}") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"TLS error for {url[:200]!r}: {exc}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot fetch {url[:200]!r}: {exc}") from None
        finally:
            conn.close()
    raise PermanentError(ErrorCode.FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects")


def _read_capped(resp: http.client.HTTPResponse, url: str, max_bytes: int) -> bytes | bytearray:
    """The body, refused past ``max_bytes``; the socket's deadline ends it however slowly it trickles.

    A declared length (checked against the cap already) is read into one buffer of that size; a body of
    unknown length grows one bytearray. Either way the bytes are held once, never as chunks plus a copy.
    """
    if resp.length is not None:
        return resp.read()
    body = bytearray()
    while chunk := resp.read1(_CHUNK):
        if len(body) + len(chunk) > max_bytes:
            raise PermanentError(ErrorCode.TOO_LARGE, f"{url[:200]!r} is over {max_bytes} bytes")
        body += chunk
    return body
