"""The search page the indexer serves: a search box, the newest tagged uploads and live counters.

Plain ``http.server`` in a background thread of ``darkroom index --serve``: the page is one static HTML
document whose script polls a small JSON API, and every request opens its own read-only connection to
the index, so the page never blocks the indexer.

``GET /``                  the page
``GET /api/search?q=...``  ranked photos for a query (``limit`` optional)
``GET /api/recent``        the newest tagged photos
``GET /api/stats``         counters: photos by model version, throughput, latency, dead letters
``GET /thumbs/<id>.jpg``   a thumbnail, for photos uploaded as ``file://`` under the allowed roots
``GET /health``            200 once the page is up
"""

from __future__ import annotations

import functools
import io
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from PIL import Image, ImageOps

from search.indexer import LiveCounters, SearchIndex
from stream.events import ErrorCode, PermanentError
from stream.images import fetch

THUMB_SIZE = (240, 180)
MAX_THUMB_SOURCE_BYTES = 25 * 1024 * 1024
MAX_LIMIT = 200


class PageServer(ThreadingHTTPServer):
    """The HTTP server and what its handlers read: the index file, the live counters, the file roots."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], db_path: Path, counters: LiveCounters, roots: list[str]
    ) -> None:
        super().__init__(address, PageHandler)
        self.db_path = db_path
        self.counters = counters
        self.roots = [str(Path(r).resolve()) for r in roots]
        self.thumbnail = functools.lru_cache(maxsize=1024)(self._thumbnail)

    def _thumbnail(self, url: str) -> bytes:
        """A JPEG thumbnail of a ``file://`` photo under the roots; PermanentError if it cannot be shown."""
        data = fetch(url, self.roots, MAX_THUMB_SOURCE_BYTES, timeout_s=5.0)
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", THUMB_SIZE)  # JPEG: decode at a fraction of full size
                thumb = ImageOps.exif_transpose(img).convert("RGB")
                thumb.thumbnail(THUMB_SIZE)
        except (OSError, ValueError) as exc:
            raise PermanentError(ErrorCode.DECODE_FAILED, str(exc)) from None
        out = io.BytesIO()
        thumb.save(out, "JPEG", quality=80)
        return out.getvalue()


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        params = urllib.parse.parse_qs(url.query)
        try:
            if url.path == "/":
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/health":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            elif url.path.startswith("/api/"):
                self._api(url.path, params)
            elif url.path.startswith("/thumbs/") and url.path.endswith(".jpg"):
                self._thumb(urllib.parse.unquote(url.path[len("/thumbs/") : -len(".jpg")]))
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {url.path!r}"})
        except FileNotFoundError as exc:  # no index yet: the indexer has not written anything
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})

    def _api(self, path: str, params: dict[str, list[str]]) -> None:
        try:
            limit = int(params.get("limit", ["24"])[0])
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "'limit' must be an integer"})
            return
        limit = max(1, min(MAX_LIMIT, limit))
        index = SearchIndex(self.server.db_path, readonly=True)
        try:
            if path == "/api/search":
                query = params.get("q", [""])[0]
                body = {"query": query, "photos": [h.to_json() for h in index.search(query, limit)]}
            elif path == "/api/recent":
                body = {"photos": [h.to_json() for h in index.recent(limit)]}
            elif path == "/api/stats":
                body = {**index.counts(), **self.server.counters.snapshot()}
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such API {path!r}"})
                return
        finally:
            index.close()
        self._json(HTTPStatus.OK, body)

    def _thumb(self, photo_id: str) -> None:
        index = SearchIndex(self.server.db_path, readonly=True)
        try:
            url = index.url_of(photo_id)
        finally:
            index.close()
        if url is None or not url.startswith("file://"):
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no local file known for photo {photo_id!r}"})
            return
        try:
            data = self.server.thumbnail(url)
        except PermanentError as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"{exc.code}: {exc.detail}"})
            return
        self._send(HTTPStatus.OK, data, "image/jpeg", cache=True)

    def _json(self, status: HTTPStatus, body: dict) -> None:
        self._send(status, orjson.dumps(body), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # the page polls every two seconds: request lines would drown the indexer's log


def serve(db_path: Path, counters: LiveCounters, bind: str, port: int, roots: list[str]) -> PageServer:
    """Start the page in a daemon thread; ``server.shutdown()`` stops it."""
    server = PageServer((bind, port), db_path, counters, roots)
    threading.Thread(target=server.serve_forever, name="search-page", daemon=True).start()
    return server


PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Darkroom search</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;background:#111;color:#eee}
h1{font-size:20px;margin:0 0 .6em}
#q{font-size:18px;padding:6px 10px;width:min(36em,90%);border-radius:4px;border:1px solid #555;background:#222;color:#eee}
#stats{margin:.8em 0;color:#aaa}#stats b{color:#eee;font-weight:600}
#status{margin:.4em 0 .8em;color:#aaa}
#results{display:grid;grid-template-columns:repeat(auto-fill,250px);gap:10px}
figure{margin:0;background:#222;padding:5px;border-radius:4px}
img{width:240px;height:180px;object-fit:cover;background:#333;display:block}
figcaption code{font-size:11px;color:#bbb}
.tag{display:inline-block;margin:2px;padding:1px 5px;border-radius:3px;font-size:12px;background:#2a5d8f}
small{display:block;color:#999;margin-top:3px}
</style>
<h1>Darkroom search</h1>
<input id="q" type="search" placeholder="search tags, e.g. beach sunset" autofocus autocomplete="off">
<div id="stats">
  photos <b id="stat-photos">0</b> <span id="stat-versions"></span> ·
  throughput <b id="stat-throughput">0</b> tags/s ·
  latency p50 <b id="stat-p50">–</b> p95 <b id="stat-p95">–</b> ms ·
  dead letters <b id="stat-dlq">0</b>
</div>
<div id="status">newest tagged uploads</div>
<main id="results" data-query=""></main>
<script>
"use strict";
const box = document.getElementById("q"), results = document.getElementById("results");
const statusLine = document.getElementById("status");
let seq = 0, timer = null;

function card(photo) {
  const fig = document.createElement("figure");
  fig.className = "photo";
  fig.dataset.photoId = photo.photo_id;
  fig.dataset.modelVersion = photo.model_version;
  const img = document.createElement("img");
  img.src = "/thumbs/" + encodeURIComponent(photo.photo_id) + ".jpg";
  img.alt = photo.tags.map(t => t.tag).join(", ");
  img.loading = "lazy";
  const cap = document.createElement("figcaption");
  for (const t of photo.tags) {
    const span = document.createElement("span");
    span.className = "tag";
    span.textContent = t.tag + " " + t.score.toFixed(2);
    cap.appendChild(span);
  }
  const id = document.createElement("small");
  const code = document.createElement("code");
  code.textContent = photo.photo_id;
  id.appendChild(code);
  id.appendChild(document.createTextNode(" · " + photo.model + " v" + photo.model_version));
  cap.appendChild(id);
  fig.append(img, cap);
  return fig;
}

async function refresh() {
  const query = box.value.trim(), mine = ++seq;
  const url = query ? "/api/search?q=" + encodeURIComponent(query) : "/api/recent";
  let body;
  try {
    const resp = await fetch(url);
    body = await resp.json();
    if (!resp.ok) throw new Error(body.error || resp.status);
  } catch (err) {
    if (mine === seq) statusLine.textContent = "index not reachable: " + err.message;
    return;
  }
  if (mine !== seq) return;  // a newer request was sent meanwhile: its answer wins
  results.replaceChildren(...body.photos.map(card));
  results.dataset.query = query;
  statusLine.textContent = query
    ? (body.photos.length ? body.photos.length + " photo(s) for \\u201c" + query + "\\u201d" : "no photo matches \\u201c" + query + "\\u201d")
    : "newest tagged uploads";
}

async function stats() {
  try {
    const s = await (await fetch("/api/stats")).json();
    document.getElementById("stat-photos").textContent = s.photos;
    document.getElementById("stat-versions").textContent =
      "(" + Object.entries(s.photos_by_version).map(([v, n]) => "v" + v + ": " + n).join(", ") + ")";
    document.getElementById("stat-throughput").textContent = s.throughput_per_s.toFixed(1);
    document.getElementById("stat-p50").textContent = s.latency_ms ? s.latency_ms.p50 : "–";
    document.getElementById("stat-p95").textContent = s.latency_ms ? s.latency_ms.p95 : "–";
    document.getElementById("stat-dlq").textContent = s.dead_letters;
  } catch (err) { /* the next tick retries */ }
}

box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 150); });
box.addEventListener("keydown", e => { if (e.key === "Enter") { clearTimeout(timer); refresh(); } });
setInterval(() => { stats(); if (!box.value.trim()) refresh(); }, 2000);
stats(); refresh();
</script>
</html>
"""
