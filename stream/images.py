"""Fetch a photo's bytes and decode them into the model's uint8 input.

Both steps are synchronous and CPU- or IO-bound; the agent runs them in a thread pool. Every failure that
retrying cannot fix raises PermanentError with a dead-letter code.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import warnings

import numpy as np
from PIL import Image, ImageOps

from stream.events import ErrorCode, PermanentError

#: Formats accepted, identified by Pillow from the content (never from the file name).
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF"})


def fetch(url: str, allowed_roots: list[str], max_bytes: int, timeout_s: float) -> bytes:
    """Return the bytes behind ``url``: ``file://`` under ``allowed_roots`` or public ``http(s)://``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return _read_file(urllib.parse.unquote(parts.path), allowed_roots, max_bytes)
    if parts.scheme in ("http", "https"):
        return _read_http(url, max_bytes, timeout_s)
    raise PermanentError(ErrorCode.FORBIDDEN_URL, f"scheme {parts.scheme!r} not allowed in {url[:200]!r}")


def _read_file(path: str, allowed_roots: list[str], max_bytes: int) -> bytes:
    real = os.path.realpath(path)  # resolves '..' and symlinks before the root check
    if not any(real == root or real.startswith(root + os.sep) for root in allowed_roots):
        raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{path!r} is outside the allowed file roots")
    try:
        with open(real, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise PermanentError(ErrorCode.NOT_FOUND, f"no such file {path!r}") from None
    except IsADirectoryError:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"{path!r} is a directory") from None
    except OSError as exc:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot read {path!r}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise PermanentError(ErrorCode.TOO_LARGE, f"{path!r} is over {max_bytes} bytes")
    return data


def _check_public_host(host: str) -> None:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot resolve {host!r}: {exc}") from None
    for info in infos:
        addr = ipaddress.ip_address(info[4][0])
        if not addr.is_global:
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"{host!r} resolves to non-public address {addr}")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        parts = urllib.parse.urlsplit(newurl)
        if parts.scheme not in ("http", "https"):
            raise PermanentError(ErrorCode.FORBIDDEN_URL, f"redirect to scheme {parts.scheme!r}")
        _check_public_host(parts.hostname or "")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_http(url: str, max_bytes: int, timeout_s: float) -> bytes:
    _check_public_host(urllib.parse.urlsplit(url).hostname or "")
    opener = urllib.request.build_opener(_CheckedRedirects)
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        code = ErrorCode.NOT_FOUND if exc.code in (404, 410) else ErrorCode.FETCH_FAILED
        raise PermanentError(code, f"HTTP {exc.code} for {url[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PermanentError(ErrorCode.FETCH_FAILED, f"cannot fetch {url[:200]!r}: {exc}") from None
    if len(data) > max_bytes:
        raise PermanentError(ErrorCode.TOO_LARGE, f"{url[:200]!r} is over {max_bytes} bytes")
    return data


def decode(data: bytes, size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """Decode image bytes to an RGB uint8 array of ``size`` = (width, height), as the model expects.

    JPEG is decoded in draft mode (DCT scaling) straight to at least twice the target size, which is
    several times faster than a full decode and loses nothing the model can see.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS))
            if img.width * img.height > max_pixels:
                raise PermanentError(
                    ErrorCode.TOO_MANY_PIXELS, f"{img.width}x{img.height} is over {max_pixels} pixels"
                )
            if img.format == "JPEG":
                img.draft("RGB", (size[0] * 2, size[1] * 2))
            img = ImageOps.exif_transpose(img)  # reads frame 0 for animations
            img = to_rgb(img)
            img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            return np.asarray(img, dtype=np.uint8)
    except PermanentError:
        raise
    except Image.UnidentifiedImageError:
        raise PermanentError(
            ErrorCode.UNSUPPORTED_FORMAT, f"not one of {', '.join(sorted(ALLOWED_FORMATS))}"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PermanentError(ErrorCode.TOO_MANY_PIXELS, str(exc)) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PermanentError(ErrorCode.DECODE_FAILED, f"{type(exc).__name__}: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any mode to RGB one way everywhere: alpha is composited on white, 16-bit is scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        return Image.fromarray((arr * (255.0 / peak)).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
