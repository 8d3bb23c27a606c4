"""A corpus of hostile and awkward uploads, each with the outcome the worker must give it.

``build_corpus`` writes the image files under a file root and returns one ``Case`` per upload event: the raw
Kafka value (or None for a tombstone) and either a dead-letter code or ``TAGGED`` (awkward but valid photos:
every EXIF orientation, CMYK, 16-bit, palette, alpha, animations, a PNG named .jpg). ``HostileHTTP`` is the
local web server (127.0.0.1 only) that the http cases talk to: redirects to internal targets, endless and
trickling bodies, 404 and 503.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
from PIL import Image

TAGGED = "tagged"
UPLOADED_AT = "2026-11-29T00:00:00Z"
#: EXIF orientation → the transpose that stores an upright picture so that orientation brings it back
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Case:
    photo_id: str
    value: bytes | None
    expect: str  # a dead-letter code, or TAGGED
    what: str


def event(photo_id: str, url: str, **extra: object) -> bytes:
    return orjson.dumps(
        {"photo_id": photo_id, "url": url, "uploaded_at": UPLOADED_AT, "user_tags": [], **extra}
    )


# -- image files -----------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A grayscale PNG of ``width`` x ``height`` whose IDAT holds ``rows`` rows of zeros (all by default):
    tiny on disk, ``width * height`` bytes once decoded."""
    rows = height if rows is None else rows
    comp = zlib.compressobj(6)
    per_block = max(1, (1 << 22) // (width + 1))
    block = b"\x00" * ((width + 1) * per_block)
    full, rest = divmod(rows, per_block)
    idat = b"".join(comp.compress(block) for _ in range(full)) + comp.compress(block[: rest * (width + 1)])
    idat += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """A real JPEG whose frame header claims another size (what a hostile encoder can write)."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def animated_gif(frames: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A GIF of ``frames`` palette frames, each a different color (so none is merged into another)."""
    palette = [v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)]
    images = []
    for i in range(frames):
        img = Image.new("P", size, i % 256)
        img.putpalette(palette)
        img.putpixel((i % size[0], (i // size[0]) % size[1]), (i + 128) % 256)
        images.append(img)
    return encode(
        images[0], "GIF", save_all=True, append_images=images[1:], duration=20, loop=0, optimize=False
    )


def oriented_png(upright: Image.Image, orientation: int) -> bytes:
    """PNG storing ``upright`` so that applying EXIF ``orientation`` gives it back."""
    method = STORE_FOR_ORIENTATION[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, "PNG", exif=exif.tobytes())


def image_files(good: Image.Image) -> dict[str, tuple[bytes, str, str]]:
    """name → (file bytes, expected outcome, what it is). ``good`` is a real photo the model can tag."""
    small = good.resize((320, 240))
    jpeg = encode(small, "JPEG", quality=90)
    png = encode(small, "PNG")
    gray16 = np.asarray(small.convert("L"), dtype=np.uint16) * 257
    files = {
        # decompression bombs and huge dimensions: refused from the header, before any pixel is decoded
        "bomb-64mpx.png": (png_bomb(8_000, 8_000), "too_many_pixels", "64 Mpx PNG of zeros, 64 kB on disk"),
        "bomb-10gpx.png": (png_bomb(100_000, 100_000, rows=8), "too_many_pixels", "10 Gpx PNG header"),
        "huge-65000.jpg": (
            jpeg_with_size(jpeg, 65_000, 65_000),
            "too_many_pixels",
            "JPEG claiming 65000x65000",
        ),
        "huge-8000.jpg": (jpeg_with_size(jpeg, 8_000, 8_000), "too_many_pixels", "JPEG claiming 8000x8000"),
        "wide-strip.png": (png_bomb(1_000_000, 40, rows=1), "too_many_pixels", "1,000,000 x 40 PNG"),
        # formats: by content, never by name
        "bitmap.jpg": (encode(small, "BMP"), "unsupported_format", "BMP named .jpg"),
        "postscript.jpg": (
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
            "unsupported_format",
            "EPS named .jpg (Ghostscript must never run)",
        ),  # fmt: skip
        "scan.tif": (encode(small, "TIFF"), "unsupported_format", "TIFF"),
        "icon.ico": (encode(small.resize((32, 32)), "ICO"), "unsupported_format", "ICO"),
        "vector.svg": (
            b'<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>',
            "unsupported_format",
            "SVG",
        ),  # fmt: skip
        "page.html": (b"<html><body>not a photo</body></html>", "unsupported_format", "HTML"),
        "empty.jpg": (b"", "unsupported_format", "empty file"),
        "random.jpg": (os.urandom(4096), "unsupported_format", "random bytes"),
        # truncated and corrupt
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "decode_failed", "JPEG cut at a third"),
        "truncated.png": (png[: len(png) // 2], "decode_failed", "PNG cut in half"),
        "header-only.jpg": (jpeg[:200] + b"\x00" * 50, "decode_failed", "JPEG header, then zeros"),
        "bad-crc.png": (
            png[:-100] + bytes([png[-100] ^ 0xFF]) + png[-99:],
            "decode_failed",
            "PNG, a flipped byte",
        ),
        # animations
        "frames-500.gif": (animated_gif(500), "too_many_frames", "500-frame GIF"),
        "frames-3.gif": (animated_gif(3, small.size), TAGGED, "3-frame GIF: first frame"),
        # awkward but valid: converted to RGB the same way everywhere
        "cmyk.jpg": (encode(small.convert("CMYK"), "JPEG"), TAGGED, "CMYK JPEG"),
        "gray16.png": (encode(Image.fromarray(gray16), "PNG"), TAGGED, "16-bit grayscale PNG"),
        "palette.png": (
            encode(small.convert("P"), "PNG", transparency=0),
            TAGGED,
            "palette PNG with transparency",
        ),
        "gray-alpha.png": (encode(small.convert("LA"), "PNG"), TAGGED, "LA PNG"),
        "rgba.png": (encode(small.convert("RGBA"), "PNG"), TAGGED, "RGBA PNG"),
        "photo.webp": (encode(small, "WEBP"), TAGGED, "WebP"),
        "disguised-png.jpg": (png, TAGGED, "a PNG named .jpg"),
        "too-big.jpg": (
            b"\xff\xd8\xff" + os.urandom(3 * 1024 * 1024),
            "too_large",
            "3 MB, over the 2 MB cap",
        ),
    }
    for o in range(1, 9):
        files[f"orientation-{o}.png"] = (oriented_png(small, o), TAGGED, f"EXIF orientation {o}")
    return files


# -- the corpus ------------------------------------------------------------------------------------------
def build_corpus(root: Path, outside: Path, good: Image.Image, http_base: str) -> list[Case]:
    """Write files under ``root`` (the worker's file root) and ``outside`` (not a root); return the cases."""
    cases: list[Case] = []
    for name, (data, expect, what) in image_files(good).items():
        (root / name).write_bytes(data)
        cases.append(Case(f"img-{name}", event(f"img-{name}", (root / name).as_uri()), expect, what))

    (outside / "secret.jpg").write_bytes(encode(good, "JPEG"))
    (root / "escape-link.jpg").symlink_to(outside / "secret.jpg")
    (root / "album").mkdir()
    os.mkfifo(root / "pipe.jpg")
    paths = {
        "path-etc-passwd": ("file:///etc/passwd", "forbidden_url"),
        "path-dotdot": (f"file://{root}/../{outside.name}/secret.jpg", "forbidden_url"),
        "path-dotdot-encoded": (f"file://{root}/%2e%2e/{outside.name}/secret.jpg", "forbidden_url"),
        "path-symlink-escape": ((root / "escape-link.jpg").as_uri(), "forbidden_url"),
        "path-remote-host": (f"file://evil.example{root}/cmyk.jpg", "forbidden_url"),
        "path-nul": (f"file://{root}/cmyk.jpg%00.png", "forbidden_url"),
        "path-proc": ("file:///proc/self/environ", "forbidden_url"),
        "path-missing": ((root / "nope.jpg").as_uri(), "not_found"),
        "path-directory": ((root / "album").as_uri(), "fetch_failed"),
        "path-fifo": ((root / "pipe.jpg").as_uri(), "fetch_failed"),
        "scheme-ftp": ("ftp://example.com/a.jpg", "forbidden_url"),
        "scheme-gopher": ("gopher://127.0.0.1:70/_GET", "forbidden_url"),
        "scheme-data": ("data:image/png;base64,iVBORw0KGgo=", "forbidden_url"),
        "scheme-dict": ("dict://127.0.0.1:11211/stat", "forbidden_url"),
        "scheme-none": ("photo.jpg", "forbidden_url"),
        # SSRF: every one of these is refused before a connection is made
        "ssrf-metadata": ("http://169.254.169.254/latest/meta-data/", "forbidden_url"),
        "ssrf-metadata-v6": ("http://[fd00:ec2::254]/latest/meta-data/", "forbidden_url"),
        "ssrf-metadata-mapped": ("http://[::ffff:169.254.169.254]/", "forbidden_url"),
        "ssrf-private-10": ("http://10.0.0.1/a.jpg", "forbidden_url"),
        "ssrf-private-192": ("https://192.168.1.1/a.jpg", "forbidden_url"),
        "ssrf-cgnat": ("http://100.64.0.1/a.jpg", "forbidden_url"),
        "ssrf-zero": ("http://0.0.0.0/a.jpg", "forbidden_url"),
        "ssrf-6to4-private": ("http://[2002:a00:1::]/a.jpg", "forbidden_url"),
        "ssrf-decimal-private": ("http://167772161/a.jpg", "forbidden_url"),  # 10.0.0.1
        "ssrf-redirect-metadata": (
            f"{http_base}/redirect?to=http://169.254.169.254/latest/",
            "forbidden_url",
        ),
        "ssrf-redirect-private": (f"{http_base}/redirect?to=http://10.1.2.3/a.jpg", "forbidden_url"),
        "ssrf-redirect-file": (f"{http_base}/redirect?to=file:///etc/passwd", "forbidden_url"),
        "http-redirect-loop": (f"{http_base}/loop", "fetch_failed"),
        "http-404": (f"{http_base}/missing.jpg", "not_found"),
        "http-403": (f"{http_base}/forbidden.jpg", "fetch_failed"),
        "http-503": (f"{http_base}/unavailable.jpg", "fetch_unavailable"),
        "http-endless": (f"{http_base}/endless", "too_large"),
        "http-declared-huge": (f"{http_base}/declared-huge", "too_large"),
        "http-trickle": (f"{http_base}/trickle", "fetch_unavailable"),
        "http-refused": ("http://127.0.0.1:9/a.jpg", "fetch_unavailable"),
        "http-not-image": (f"{http_base}/page.html", "unsupported_format"),
        "http-good": (f"{http_base}/good.jpg", TAGGED),
        "http-good-via-redirect": (f"{http_base}/redirect?to=/good.jpg", TAGGED),
    }
    cases += [Case(pid, event(pid, url), expect, url[:80]) for pid, (url, expect) in paths.items()]

    raw_events = {
        "ev-not-json": (b"{photo_id: nope", "invalid_event"),
        "ev-array": (b'["not", "an", "object"]', "invalid_event"),
        "ev-string": (b'"just a string"', "invalid_event"),
        "ev-number": (b"42", "invalid_event"),
        "ev-not-utf8": (b"\xff\xfe\x00garbage\x80", "invalid_event"),
        "ev-deep-nesting": (b"[" * 5000 + b"]" * 5000, "invalid_event"),
        "ev-tombstone": (None, "invalid_event"),
        "ev-missing-url": (orjson.dumps({"photo_id": "ev-missing-url"}), "invalid_event"),
        "ev-missing-id": (orjson.dumps({"url": (root / "cmyk.jpg").as_uri()}), "invalid_event"),
        "ev-id-not-string": (orjson.dumps({"photo_id": 12345, "url": "file:///x.jpg"}), "invalid_event"),
        "ev-url-empty": (event("ev-url-empty", ""), "invalid_event"),
        "ev-url-list": (orjson.dumps({"photo_id": "ev-url-list", "url": ["a", "b"]}), "invalid_event"),
        "ev-owner-object": (event("ev-owner-object", "file:///x.jpg", owner={"$ne": 1}), "invalid_event"),
        "ev-bad-time": (
            orjson.dumps({"photo_id": "ev-bad-time", "url": "file:///x.jpg", "uploaded_at": "yesterday"}),
            "invalid_event",
        ),  # fmt: skip
        "ev-tags-not-list": (event("ev-tags-not-list", "file:///x.jpg", user_tags="sunset"), "invalid_event"),
        "ev-too-many-tags": (
            event("ev-too-many-tags", "file:///x.jpg", user_tags=["t"] * 300),
            "invalid_event",
        ),
        "ev-long-url": (event("ev-long-url", "http://example.com/" + "a" * 5000), "invalid_event"),
        "ev-long-id": (orjson.dumps({"photo_id": "x" * 300, "url": "file:///x.jpg"}), "invalid_event"),
        "ev-oversized-70k": (
            event("ev-oversized-70k", "file:///x.jpg", owner="o" * 70_000),
            "event_too_large",
        ),
        "ev-oversized-900k": (
            event("ev-oversized-900k", "file:///x.jpg", padding="p" * 900_000),
            "event_too_large",
        ),
    }
    cases += [Case(pid, value, expect, pid) for pid, (value, expect) in raw_events.items()]
    return cases


# -- a hostile web server on 127.0.0.1 -----------------------------------------------------------------------
class HostileHTTP:
    """A local HTTP server whose paths misbehave the ways a fetcher must survive."""

    def __init__(self, good_jpeg: bytes) -> None:
        outer = self
        self.good_jpeg = good_jpeg

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path, _, query = self.path.partition("?")
                try:
                    outer.route(self, path, query)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the fetcher hung up, as it should

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, h: BaseHTTPRequestHandler, path: str, query: str) -> None:
        if path == "/good.jpg":
            self._send(h, 200, self.good_jpeg, "image/jpeg")
        elif path == "/page.html":
            self._send(h, 200, b"<html>hello</html>", "text/html")
        elif path == "/redirect":
            h.send_response(302)
            h.send_header("Location", query.removeprefix("to="))
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif path == "/loop":
            h.send_response(302)
            h.send_header("Location", "/loop")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif path == "/forbidden.jpg":
            self._send(h, 403, b"no", "text/plain")
        elif path == "/unavailable.jpg":
            self._send(h, 503, b"try later", "text/plain")
        elif path == "/endless":  # no Content-Length, never ends
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.end_headers()
            chunk = b"\xff" * 65536
            while True:
                h.wfile.write(chunk)
        elif path == "/declared-huge":
            h.send_response(200)
            h.send_header("Content-Length", str(10**12))
            h.end_headers()
            h.wfile.write(b"\xff\xd8")
        elif path == "/trickle":  # a byte every 0.2 s: each read succeeds, the whole never arrives in time
            h.send_response(200)
            h.send_header("Content-Length", "100000")
            h.end_headers()
            for _ in range(600):
                h.wfile.write(b"\xff")
                h.wfile.flush()
                time.sleep(0.2)
        else:
            self._send(h, 404, b"not here", "text/plain")

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
