"""Fetch a photo's bytes: ``file://`` under allowed roots, public ``http(s)://``, ``s3://`` in allowed buckets.

Fetching is synchronous and IO-bound; the agent runs it in a thread pool (decoding is contracts/photos.py). Every failure that
retrying cannot fix raises PermanentError with a dead-letter code; a source that may answer later (timeout,
refused connection, HTTP 5xx/429) raises SourceUnavailable, which the agent retries a bounded number of times.

``http(s)`` is fetched the way an SSRF guard must: the host is resolved once, every address it resolves to
must be public, and the connection goes to that vetted address (Host header and TLS SNI/certificate checks
still use the name), so a DNS answer that changes between check and connect (rebinding) cannot reach an
internal service. Each redirect is vetted the same way; bytes are capped while streaming; one deadline
covers resolution, connection (a proxy's CONNECT included), redirects and body.

A site's own internal origins are admitted only by an explicit allow-list, and ``HTTP(S)_PROXY``/``NO_PROXY``
are honoured; what the guard checks through a proxy is in stream/origins.py. Connections are kept alive per
origin (stream/keepalive.py); only one whose response was read to its end is reused.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import re
import socket
import ssl
import stat
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.records import ErrorCode, PermanentError, SourceUnavailable
from stream import keepalive
from stream.origins import Origins, Proxy, ip_literal, refused_address

__all__ = ["MAX_REDIRECTS", "fetch", "refused_address"]

if TYPE_CHECKING:
    from stream.objectstore import S3Options

MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_MAX_LINE = 65536  # the longest line of a proxy's CONNECT answer, and
_MAX_PROXY_HEADERS = 100  # its most header lines (http.client's own limits)
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # kept as they are in a request path: reserved characters and escapes


def fetch(
    url: str,
    allowed_roots: Sequence[str],
    max_bytes: int,
    timeout_s: float,
    allow_loopback: bool = False,
    s3: S3Options | None = None,
    origins: Origins | None = None,
) -> bytes | bytearray:
    """Return the bytes behind ``url``: ``file://`` under ``allowed_roots``, public ``http(s)://``, or
    ``s3://`` in a bucket ``s3`` allows (none by default).

    ``allow_loopback`` (a development setting) lets ``http`` reach 127.0.0.0/8 and ::1, nothing else private.
    ``origins`` adds the site's allowed internal origins, its proxies and connection reuse (stream/origins.py);
    without it: public origins only, no proxy, a new connection per fetch.
    """
    parts = _split(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"file URL with a host {parts.netloc[:100]!r}")
        return _read_file(urllib.parse.unquote(parts.path), allowed_roots, max_bytes)
    if parts.scheme in ("http", "https"):
        return _read_http(url, max_bytes, time.monotonic() + timeout_s, allow_loopback, origins or Origins())
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


def _vetted_address(host: str, port: int, origins: Origins, allow_loopback: bool, deadline: float) -> str:
    """Resolve ``host`` once; refuse if ANY address is not one ``origins`` admits; return the one to connect to."""
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
    allowed = origins.host_allowed(host)
    for addr in addrs:
        reason = origins.address_refusal(addr, allowed, allow_loopback)
        if reason:
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host!r} resolves to {reason}")
    if not addrs:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"{host!r} has no address")
    return str(addrs[0])


@dataclass(frozen=True)
class _Route:
    """Where one request goes: straight to a vetted ``address``, or through ``proxy`` (which resolves)."""

    scheme: str
    host: str
    port: int
    address: str | None = None
    proxy: Proxy | None = None

    @property
    def key(self) -> tuple[str, str, int, str | None, Proxy | None]:
        """What a kept-alive connection must match to be reused for this route."""
        return (self.scheme, self.host, self.port, self.address, self.proxy)

    @property
    def host_ascii(self) -> str:
        """The host as a request line writes it (IDNA for a non-ASCII name); UnicodeError if it has none."""
        return self.host if self.host.isascii() else self.host.encode("idna").decode("ascii")

    @property
    def authority(self) -> str:
        """``host:port`` for a CONNECT line or an absolute-form URL (brackets around IPv6)."""
        host = self.host_ascii
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def _route(parts: urllib.parse.SplitResult, url: str, origins: Origins, allow_loopback: bool,
           deadline: float) -> _Route:  # fmt: skip
    """Vet the URL's host for a direct connection or for the proxy that serves it (module docstring)."""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"bad port in {url[:200]!r}") from None
    host = parts.hostname or ""
    if not host:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, "URL without a host")
    proxy = origins.proxy_for(parts.scheme, host, port)
    if proxy is None:
        return _Route(
            parts.scheme, host, port, _vetted_address(host, port, origins, allow_loopback, deadline)
        )
    route = _Route(parts.scheme, host, port, proxy=proxy)
    try:  # the proxy gets the name in its request line: only what a host name or address is made of
        usable = re.fullmatch(r"[a-z0-9._-]+|[0-9a-f:.]+", route.host_ascii) is not None
        route.host_ascii.encode("idna")  # what TLS does with the name: an empty or over-long label fails
    except UnicodeError:
        usable = False
    if not usable:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host[:200]!r} is not a host name")
    literal = ip_literal(host)
    if literal is not None:
        reason = origins.address_refusal(literal, False, allow_loopback)
        reason = reason and f"{host!r} is a {reason}"
    else:
        reason = origins.name_refusal_through_proxy(host)
    if reason:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, reason)
    return route


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
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client's own connect does
    sock = _DeadlineSocket(raw.family, raw.type, raw.proto, raw.detach())
    _arm(sock, deadline)
    return sock


def _arm(sock: socket.socket, deadline: float) -> None:
    """Put ``sock`` (new or kept alive) under this fetch's deadline: sends, the TLS handshake and reads."""
    sock.deadline = deadline  # type: ignore[attr-defined]
    sock.settimeout(max(0.001, deadline - time.monotonic()))


def _connect_proxy(proxy: Proxy, deadline: float) -> _DeadlineSocket:
    """A connection to the proxy (trusted configuration: not vetted); not reaching it is transient."""
    try:
        return _connect(proxy.host, proxy.port, deadline)
    except OSError as exc:  # refused, timed out, no route, name not found: the proxy, not the photo
        raise SourceUnavailable(f"proxy {proxy.netloc} unreachable: {type(exc).__name__}: {exc}") from None


def _tunnel(sock: _DeadlineSocket, route: _Route, proxy: Proxy) -> None:
    """``CONNECT`` to the origin through ``proxy``; the answer is read under the fetch's deadline.

    403 is the proxy's policy refusing this destination (``forbidden_url``); 407 is the worker's proxy
    credentials, 5xx and anything unreadable the proxy's trouble: transient, retried, then
    ``fetch_unavailable`` (replayable once the proxy is fixed)."""
    head = [f"CONNECT {route.authority} HTTP/1.1", f"Host: {route.authority}"]
    if proxy.authorization:
        head.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("ascii"))
    with sock.makefile("rb", buffering=0) as answer:  # unbuffered: not a byte of the tunnel is read ahead
        status_line = _proxy_line(answer, proxy)
        for _ in range(_MAX_PROXY_HEADERS):
            if _proxy_line(answer, proxy) in (b"\r\n", b"\n"):
                break
        else:
            raise SourceUnavailable(f"proxy {proxy.netloc} sent over {_MAX_PROXY_HEADERS} header lines")
    words = status_line.split(None, 2)
    if len(words) < 2 or not words[0].startswith(b"HTTP/1.") or not words[1].isdigit():
        raise SourceUnavailable(f"proxy {proxy.netloc} answered CONNECT with {status_line[:100]!r}")
    status = int(words[1])
    what = f"proxy {proxy.netloc} answered HTTP {status} to CONNECT {route.authority}"
    if 200 <= status < 300:
        return
    if status == 403:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{what}: its policy refuses this destination")
    if status == 407:
        raise SourceUnavailable(f"{what}: check the user and password in the proxy URL")
    if 400 <= status < 500 and status not in (408, 425, 429):
        raise PermanentError(ErrorCode.FETCH_FAILED, what)
    raise SourceUnavailable(what)


def _proxy_line(answer: socket.SocketIO, proxy: Proxy) -> bytes:
    line = answer.readline(_MAX_LINE + 1)
    if not line:
        raise SourceUnavailable(f"proxy {proxy.netloc} closed the connection during CONNECT")
    if len(line) > _MAX_LINE:
        raise SourceUnavailable(f"proxy {proxy.netloc} sent a line over {_MAX_LINE} bytes")
    return line


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted address, or to the proxy; the Host header still names the host."""

    def __init__(self, route: _Route, deadline: float) -> None:
        proxy = route.proxy
        super().__init__(proxy.host if proxy else route.host, proxy.port if proxy else route.port)
        self._route = route
        self._deadline = deadline

    def connect(self) -> None:
        if self._route.proxy:
            self.sock = _connect_proxy(self._route.proxy, self._deadline)
        else:
            self.sock = _connect(self._route.address or "", self.port, self._deadline)


@functools.lru_cache(maxsize=4)
def _tls_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """The client TLS context: the system's CAs, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` (a site's internal
    CA), which OpenSSL reads when the context is made; made once per value (loading CAs costs milliseconds)."""
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted address, or tunnelled through the proxy; SNI and the certificate check use the
    host name either way."""

    def __init__(self, route: _Route, deadline: float) -> None:
        context = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        super().__init__(route.host, route.port, context=context)
        self._route = route
        self._deadline = deadline

    def connect(self) -> None:
        proxy = self._route.proxy
        if proxy:
            sock = _connect_proxy(proxy, self._deadline)
            try:
                _tunnel(sock, self._route, proxy)
            except BaseException:
                sock.close()
                raise
            _arm(sock, self._deadline)  # the handshake gets what the CONNECT left of the deadline
        else:
            sock = _connect(self._route.address or "", self.port, self._deadline)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.sock.deadline = self._deadline


def _open(route: _Route, deadline: float) -> http.client.HTTPConnection:
    kind = _PinnedHTTPSConnection if route.scheme == "https" else _PinnedHTTPConnection
    try:
        return kind(route, deadline)
    except http.client.InvalidURL as exc:  # a host http.client will not put in a request (spaces, ...)
        raise PermanentError(
            ErrorCode.FORBIDDEN_URL, f"{route.host[:200]!r} is not a host name: {exc}"
        ) from None


def _exchange(
    route: _Route, target: str, headers: dict[str, str], deadline: float, reuse: bool
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send the request on a kept-alive connection if there is one (and ``reuse``), else on a new one; a
    kept-alive connection the server closed meanwhile is retried once on a new one (GET is idempotent)."""
    conn = keepalive.POOL.take(route.key) if reuse else None
    if conn is not None:
        conn._deadline = deadline  # type: ignore[attr-defined]  # for a reconnect http.client may make
        _arm(conn.sock, deadline)  # type: ignore[arg-type]  # take() returns only connections with a socket
        try:
            conn.request("GET", target, headers=headers)
            return conn, conn.getresponse()
        except ConnectionError:  # reset, broken pipe, or closed before the status line (RemoteDisconnected)
            conn.close()
    conn = _open(route, deadline)
    try:
        conn.request("GET", target, headers=headers)
        return conn, conn.getresponse()
    except BaseException:
        conn.close()
        raise


def _read_http(
    url: str, max_bytes: int, deadline: float, allow_loopback: bool, origins: Origins
) -> bytes | bytearray:
    for _ in range(MAX_REDIRECTS + 1):
        parts = _split(url)
        if parts.scheme not in ("http", "https"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"redirect to scheme {parts.scheme!r}")
        route = _route(parts, url, origins, allow_loopback, deadline)
        # non-ASCII, spaces and control characters percent-encoded (UTF-8), as a browser sends them
        target = urllib.parse.quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _SAFE)
        headers = {"Accept": "image/*", "Accept-Encoding": "identity", "User-Agent": "darkroom-tagger"}
        if route.proxy and route.scheme == "http":  # the proxy's request: absolute form, its credentials
            target = f"http://{route.authority}{target}"
            if route.proxy.authorization:
                headers["Proxy-Authorization"] = route.proxy.authorization
        conn = None
        try:
            conn, resp = _exchange(route, target, headers, deadline, origins.keepalive_s > 0)
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
            if resp.status == 407 and route.proxy:
                raise SourceUnavailable(f"proxy {route.proxy.netloc} wants authentication (HTTP 407)")
            if resp.status != 200:
                raise PermanentError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} for {url[:200]!r}")
            # http.client's parse of Content-Length (None when absent, chunked or not a number such as "²")
            if resp.length is not None and resp.length > max_bytes:
                raise PermanentError(
                    ErrorCode.TOO_LARGE, f"{url[:200]!r} declares {resp.length} bytes, limit {max_bytes}"
                )
            body = _read_capped(resp, url, max_bytes)
            if resp.isclosed() and conn.sock is not None:  # read to its end, and the server keeps it open
                keepalive.POOL.give(route.key, conn, origins.keepalive_s)
                conn = None
            return body
        except (TimeoutError, ConnectionError, http.client.RemoteDisconnected) as exc:
            raise SourceUnavailable(f"cannot fetch {url[:200]!r}: {type(exc).__name__}: {exc}") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"TLS error for {url[:200]!r}: {exc}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot fetch {url[:200]!r}: {exc}") from None
        finally:
            if conn is not None:  # a redirect, an error, a body not read to its end: never reused
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
