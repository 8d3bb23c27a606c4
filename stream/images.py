"""Fetch a photo's bytes and decode them into the model's uint8 input.

Both steps are synchronous and CPU- or IO-bound; the agent runs them in a thread pool. Every failure that
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
import io
import ipaddress
import os
import socket
import ssl
import stat
import struct
import time
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from stream.events import ErrorCode, PermanentError

if TYPE_CHECKING:
    from stream.objectstore import S3Options

#: Formats accepted, identified by Pillow from the content (never from the file name).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})
MAX_REDIRECTS = 5
_CHUNK = 64 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SourceUnavailable(Exception):
    """The photo's source did not answer usefully this time (timeout, refused, 5xx, 429): worth a retry."""


def fetch(
    url: str,
    allowed_roots: Sequence[str],
    max_bytes: int,
    timeout_s: float,
    allow_loopback: bool = False,
    s3: S3Options | None = None,
) -> bytes:
    """Return the bytes behind ``url``: ``file://`` under ``allowed_roots``, public ``http(s)://``, or
    ``s3://`` in a bucket ``s3`` allows (none by default).

    ``allow_loopback`` (a development setting) lets ``http`` reach 127.0.0.0/8 and ::1, nothing else private.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[': an exception here would stop the worker, not the upload
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"malformed URL {url[:200]!r}: {exc}") from None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"file URL with a host {parts.netloc[:100]!r}")
        return _read_file(urllib.parse.unquote(parts.path), allowed_roots, max_bytes)
    if parts.scheme in ("http", "https"):
        return _read_http(url, max_bytes, time.monotonic() + timeout_s, allow_loopback)
    if parts.scheme == "s3":
        from stream.objectstore import S3Options, read_s3  # it imports this module (SourceUnavailable)

        return read_s3(url, s3 or S3Options(), max_bytes, timeout_s)
    raise PermanentError(ErrorCode.FORBIDDEN_URL, f"scheme {parts.scheme!r} not allowed in {url[:200]!r}")


def _read_file(path: str, allowed_roots: Sequence[str], max_bytes: int) -> bytes:
    if "\x00" in path:
        raise PermanentError(ErrorCode.FORBIDDEN_URL, "NUL byte in file path")
    real = os.path.realpath(path)  # resolves '..' and symlinks before the root check
    if not any(real == root or real.startswith(root + os.sep) for root in allowed_roots):
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{path[:200]!r} is outside the allowed file roots")
    try:
        # O_NOFOLLOW: a symlink swapped in after realpath() is refused rather than followed out of the root
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PermanentError(ErrorCode.NOT_FOUND, f"no such file {path[:200]!r}") from None
    except OSError as exc:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot open {path[:200]!r}: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # directories, FIFOs, devices (/dev/zero) are not photos
        os.close(fd)
        raise PermanentError(ErrorCode.FETCH_FAILED, f"{path[:200]!r} is not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(max_bytes + 1)
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
    addrs = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for addr in addrs:
        if refused_address(addr, allow_loopback):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host!r} resolves to non-public address {addr}")
    if not addrs:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"{host!r} has no address")
    return str(addrs[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted address; the Host header still names the host."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted address; SNI and the certificate check use the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SourceUnavailable(f"fetching {url[:200]!r} took longer than its deadline")
    return left


def _read_http(url: str, max_bytes: int, deadline: float, allow_loopback: bool) -> bytes:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"redirect to scheme {parts.scheme!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"bad port in {url[:200]!r}") from None
        host = parts.hostname or ""
        address = _vetted_address(host, port, allow_loopback, deadline)
        kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = kind(host, address, port, timeout=_remaining(deadline, url))
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"Accept": "image/*", "Accept-Encoding": "identity",
                                                "User-Agent": "darkroom-tagger"})  # fmt: skip
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise PermanentError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} without Location")
                url = urllib.parse.urljoin(url, location)
                continue
            if resp.status in (404, 410):
                raise PermanentError(ErrorCode.NOT_FOUND, f"HTTP {resp.status} for {url[:200]!r}")
            if resp.status in (408, 425, 429) or resp.status >= 500:
                raise SourceUnavailable(f"HTTP {resp.status} for {url[:200]!r}")
            if resp.status != 200:
                raise PermanentError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} for {url[:200]!r}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise PermanentError(
                    ErrorCode.TOO_LARGE, f"{url[:200]!r} declares {length} bytes, limit {max_bytes}"
                )
            return _read_capped(resp, conn, url, max_bytes, deadline)
        except (TimeoutError, ConnectionError, http.client.RemoteDisconnected) as exc:
            raise SourceUnavailable(f"cannot fetch {url[:200]!r}: {type(exc).__name__}: {exc}") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"TLS error for {url[:200]!r}: {exc}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot fetch {url[:200]!r}: {exc}") from None
        finally:
            conn.close()
    raise PermanentError(ErrorCode.FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects")


def _read_capped(
    resp: http.client.HTTPResponse,
    conn: http.client.HTTPConnection,
    url: str,
    max_bytes: int,
    deadline: float,
) -> bytes:
    """Read the body in chunks: stop past ``max_bytes`` and at the deadline, however slowly it trickles."""
    chunks: list[bytes] = []
    total = 0
    while True:
        if conn.sock is not None:
            conn.sock.settimeout(_remaining(deadline, url))
        chunk = resp.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise PermanentError(ErrorCode.TOO_LARGE, f"{url[:200]!r} is over {max_bytes} bytes")
        chunks.append(chunk)
        _remaining(deadline, url)


def decode(data: bytes, size: tuple[int, int], max_pixels: int, max_frames: int = 100) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of ``size`` = (width, height), as the model expects.

    The pixel and frame caps are checked from the header before any pixel is decoded; animations give
    their first frame. JPEG is decoded in draft mode (DCT scaling) straight to at least twice the target
    size, which is several times faster than a full decode and loses nothing the model can see.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
        if img.width * img.height > max_pixels:
            raise PermanentError(
                ErrorCode.TOO_MANY_PIXELS, f"{img.width}x{img.height} is over {max_pixels} pixels"
            )
        _check_frames(img, max_frames)
        if img.format == "JPEG":
            img.draft("RGB", (size[0] * 2, size[1] * 2))
        ImageOps.exif_transpose(img, in_place=True)  # transposed, tag removed: applied exactly once
        img = to_rgb(img)
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(img, dtype=np.uint8)
    except PermanentError:
        raise
    except Image.UnidentifiedImageError:
        raise PermanentError(
            ErrorCode.UNSUPPORTED_FORMAT, f"not one of {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise PermanentError(ErrorCode.TOO_MANY_PIXELS, str(exc)) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


def _check_frames(img: Image.Image, max_frames: int) -> None:
    """Refuse more than ``max_frames`` frames. GIF is walked only up to the cap (its count is not stored)."""
    if not getattr(img, "is_animated", False):
        return
    if img.format == "GIF":
        try:
            img.seek(max_frames)
        except EOFError:
            img.seek(0)
            return
        raise PermanentError(ErrorCode.TOO_MANY_FRAMES, f"animation has more than {max_frames} frames")
    frames = int(getattr(img, "n_frames", 1))
    if frames > max_frames:
        raise PermanentError(ErrorCode.TOO_MANY_FRAMES, f"animation has {frames} frames, limit {max_frames}")
    img.seek(0)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB one way everywhere: alpha (also a palette's transparency) is composited on
    white, 16- and 32-bit integer gray is scaled from the 16-bit range, CMYK/L/1/YCbCr use Pillow's matrix."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return Image.fromarray((arr * (255.0 / 65535.0)).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
