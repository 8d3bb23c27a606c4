"""The search page the indexer serves: a search box, the newest tagged uploads and live counters.

Plain ``http.server`` in a background thread of ``darkroom index --serve``: the page is one static HTML
document whose script polls a small JSON API, and every request opens its own read-only connection to
the index, so the page never blocks the indexer.

``GET /``                  the page
``GET /api/search?q=...``  ranked photos for a query (``limit`` optional)
``GET /api/recent``        the newest tagged photos
``GET /api/stats``         counters: photos by model version, throughput, latency, dead letters
``GET /api/compare``       the latest ``darkroom compare --json`` summary, for the rollout panel
                           (search/compare_panel.py; 404 when the page was started without one)
``GET /thumbs/<id>.jpg``   a thumbnail, for photos uploaded as ``file://`` under the allowed roots
``POST /api/edit``         an owner's tag edit ``{photo_id, owner, added, removed}``, published to
                           ``photo-tag-edits`` (JSON bodies only, so no cross-site form can post one)
``GET /health``            200 once the page is up

Thumbnails go through the worker's own fetch and decode (format allow-list, pixel and frame caps, from
``Settings``), at most ``MAX_THUMB_DECODES`` at a time; the server runs at most ``max_threads`` requests at
once (further connections wait in the listen backlog) and drops a client silent for ``REQUEST_TIMEOUT_S``.
"""

from __future__ import annotations

import functools
import io
import socket
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

import orjson
from PIL import ExifTags, Image

from contracts.edits import MAX_EDIT_BYTES, EditRejected, edit_value
from contracts.photos import ALLOWED_FORMATS, decode
from contracts.records import PermanentError
from search.compare_panel import PanelError, panel
from search.counters import LiveCounters
from search.store import SearchIndex
from stream.fetch import fetch
from stream.settings import Settings

THUMB_SIZE = (240, 180)
MAX_LIMIT = 200
#: requests served at once; a thumbnail decode or a slow client holds one thread
MAX_REQUEST_THREADS = 8
#: thumbnails decoded at once: each holds a photo's bytes and pixels
MAX_THUMB_DECODES = 2
#: a client that sends nothing (or trickles its request) for this long is disconnected
REQUEST_TIMEOUT_S = 10.0


class PageServer(ThreadingHTTPServer):
    """The HTTP server and what its handlers read: the index file, the live counters, the file roots."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        db_path: Path,
        counters: LiveCounters,
        roots: list[str],
        settings: Settings | None = None,
        max_threads: int = MAX_REQUEST_THREADS,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        edits: EditSink | None = None,
        compare_path: Path | None = None,
    ) -> None:
        super().__init__(address, PageHandler)
        self.compare_path = compare_path
        self.edits = edits
        self._edit_lock = threading.Lock()
        self.db_path = db_path
        self.counters = counters
        self.roots = [str(Path(r).resolve()) for r in roots]
        self.limits = settings or Settings()
        self.request_timeout_s = request_timeout_s
        self._request_slots = threading.BoundedSemaphore(max_threads)
        self._decodes = threading.BoundedSemaphore(MAX_THUMB_DECODES)
        self.thumbnail = functools.lru_cache(maxsize=1024)(self._thumbnail)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """Start a request thread once one of ``max_threads`` is free; until then the accept loop waits and
        new connections queue in the kernel's backlog instead of each taking a thread."""
        self._request_slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._request_slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._request_slots.release()

    def _thumbnail(self, url: str) -> bytes:
        """A JPEG thumbnail of a ``file://`` photo under the roots, fetched and decoded as the worker does;
        PermanentError (with the worker's code) if it cannot be shown."""
        limits = self.limits
        data = fetch(url, self.roots, limits.max_image_bytes, limits.fetch_timeout_s)
        with self._decodes:
            pixels = decode(data, _thumb_size(data), limits.max_image_pixels, limits.max_frames)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=80)
        return out.getvalue()


def _thumb_size(data: bytes) -> tuple[int, int]:
    """THUMB_SIZE shrunk to the photo's aspect ratio (from its header, EXIF rotation included); THUMB_SIZE
    when the header cannot be read, and then ``decode`` names the problem."""
    try:
        with Image.open(io.BytesIO(data), formats=sorted(ALLOWED_FORMATS)) as img:
            width, height = img.size
            if img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # turned by a quarter
                width, height = height, width
    except Exception:  # noqa: BLE001 - any unreadable header: decode classifies it as a dead letter would
        return THUMB_SIZE
    scale = min(THUMB_SIZE[0] / max(width, 1), THUMB_SIZE[1] / max(height, 1), 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


class EditSink(Protocol):
    """Where the page publishes edits: ``stream.clients.UploadPublisher`` on the edits topic."""

    def send(self, key: str | bytes | None, value: bytes) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def setup(self) -> None:
        self.timeout = self.server.request_timeout_s  # read by setup() for the socket's timeout
        super().setup()

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

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if urllib.parse.urlsplit(self.path).path != "/api/edit":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {self.path!r:.100}"})
            return
        if self.headers.get_content_type() != "application/json":
            self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send the edit as application/json"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_EDIT_BYTES:
            self._json(
                HTTPStatus.BAD_REQUEST, {"error": f"an edit needs a Content-Length of 0..{MAX_EDIT_BYTES}"}
            )
            return
        status, body = self._edit(self.rfile.read(length))
        self._json(status, body)

    def _edit(self, raw: bytes) -> tuple[HTTPStatus, dict]:
        """Check an edit as the indexer will (a bad one never reaches the topic), then publish it."""
        if self.server.edits is None:
            return HTTPStatus.SERVICE_UNAVAILABLE, {
                "error": "edits are off: this page was started without a broker"
            }
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return HTTPStatus.BAD_REQUEST, {"error": "the body is not JSON"}
        if not isinstance(data, dict):
            return HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object"}
        photo_id, owner = data.get("photo_id"), data.get("owner")
        index = SearchIndex(self.server.db_path, readonly=True)
        try:
            hit = index.photo(photo_id) if isinstance(photo_id, str) else None
            photo_owner = index.owner_of(photo_id) if isinstance(photo_id, str) else None
        finally:
            index.close()
        if hit is None:
            return HTTPStatus.NOT_FOUND, {"error": f"no tagged photo {str(photo_id)[:100]!r} in the index"}
        if photo_owner is not None and photo_owner != owner:
            return HTTPStatus.FORBIDDEN, {"error": "only the photo's owner may edit its tags"}
        try:
            value = edit_value(
                photo_id,
                owner,
                data.get("added", []),
                data.get("removed", []),
                hit.model_version,  # type: ignore[arg-type]
            )
        except (EditRejected, TypeError) as exc:
            return HTTPStatus.BAD_REQUEST, {"error": getattr(exc, "detail", str(exc))}
        try:
            with self.server._edit_lock:  # one producer, shared by the request threads
                self.server.edits.send(photo_id, value)
                self.server.edits.flush(10.0)
        except Exception as exc:  # noqa: BLE001 - the broker's failure, reported to the page
            return HTTPStatus.BAD_GATEWAY, {"error": f"the edit was not published: {exc}"}
        return HTTPStatus.ACCEPTED, {"published": orjson.loads(value)}

    def _api(self, path: str, params: dict[str, list[str]]) -> None:
        if path == "/api/compare":
            self._compare()
            return
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

    def _compare(self) -> None:
        if self.server.compare_path is None:
            self._json(
                HTTPStatus.NOT_FOUND, {"error": "no compare summary: start the page with --compare-json"}
            )
            return
        try:
            body = panel(self.server.compare_path)
        except PanelError as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
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


def serve(
    db_path: Path,
    counters: LiveCounters,
    bind: str,
    port: int,
    roots: list[str],
    settings: Settings | None = None,
    max_threads: int = MAX_REQUEST_THREADS,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    edits: EditSink | None = None,
    compare_path: Path | None = None,
) -> PageServer:
    """Start the page in a daemon thread; ``server.shutdown()`` stops it. ``settings`` gives the thumbnails
    the worker's caps (bytes, pixels, frames; default: the defaults); ``edits`` publishes owners' edits
    (none: the page refuses them); ``compare_path`` is the summary the rollout panel shows (none: no panel)."""
    server = PageServer(
        (bind, port), db_path, counters, roots, settings, max_threads, request_timeout_s, edits, compare_path
    )
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
.tag.edited{background:#2a7a4a}
.rm{margin-left:4px;padding:0 3px;border:0;border-radius:2px;background:#0004;color:#eee;cursor:pointer;font-size:11px}
form.add input{width:9em;font-size:12px;margin-top:4px;background:#333;color:#eee;border:1px solid #555;border-radius:3px}
#owner{font-size:13px;padding:3px 6px;margin-left:1em;width:10em;background:#222;color:#eee;border:1px solid #555;border-radius:4px}
body:not(.editing) .rm, body:not(.editing) form.add{display:none}
#compare{margin:.6em 0 1em;padding:.5em .8em;background:#1b1b1b;border-radius:4px;color:#ccc}
#compare h2{font-size:15px;margin:0 0 .4em}#compare table{border-collapse:collapse;margin:.3em 0}
#compare td,#compare th{padding:1px 8px;text-align:right}#compare td:first-child,#compare th:first-child{text-align:left}
</style>
<h1>Darkroom search</h1>
<input id="q" type="search" placeholder="search tags, e.g. beach sunset" autofocus autocomplete="off">
<label>edit tags as owner <input id="owner" placeholder="your owner id" autocomplete="off"></label>
<div id="stats">
  photos <b id="stat-photos">0</b> <span id="stat-versions"></span> ·
  throughput <b id="stat-throughput">0</b> tags/s ·
  latency p50 <b id="stat-p50">–</b> p95 <b id="stat-p95">–</b> ms ·
  dead letters <b id="stat-dlq">0</b>
</div>
<section id="compare" hidden>
  <h2 id="compare-head"></h2><div id="compare-line"></div>
  <table id="compare-tags"><thead><tr><th>tag</th><th>live rate</th><th>shadow rate</th><th>agreement</th></tr></thead><tbody></tbody></table>
  <table id="compare-disagree"><thead><tr><th>photo</th><th>Jaccard</th><th>only live</th><th>only shadow</th></tr></thead><tbody></tbody></table>
</section>
<div id="status">newest tagged uploads</div>
<main id="results" data-query=""></main>
<script>
"use strict";
const box = document.getElementById("q"), results = document.getElementById("results");
const statusLine = document.getElementById("status"), ownerBox = document.getElementById("owner");
let seq = 0, timer = null;

function editing() { document.body.classList.toggle("editing", ownerBox.value.trim() !== ""); }

async function edit(photoId, added, removed) {
  let resp, body;
  try {
    resp = await fetch("/api/edit", {method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({photo_id: photoId, owner: ownerBox.value.trim(), added: added, removed: removed})});
    body = await resp.json();
  } catch (err) { statusLine.textContent = "edit not sent: " + err.message; return; }
  statusLine.textContent = resp.ok ? "edit of " + photoId + " sent; the index applies it in a moment"
                                   : "edit refused: " + body.error;
  for (const ms of [800, 2000, 5000]) setTimeout(refresh, ms);  // the indexer applies it within a moment
}

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
    if (t.edited) span.classList.add("edited");
    const rm = document.createElement("button");
    rm.className = "rm";
    rm.type = "button";
    rm.title = "remove this tag from the photo";
    rm.textContent = "\u00d7";
    rm.addEventListener("click", () => edit(photo.photo_id, [], [t.tag]));
    span.appendChild(rm);
    cap.appendChild(span);
  }
  const form = document.createElement("form");
  form.className = "add";
  const input = document.createElement("input");
  input.placeholder = "add a tag";
  input.maxLength = 128;
  form.appendChild(input);
  form.addEventListener("submit", e => {
    e.preventDefault();
    if (input.value.trim()) edit(photo.photo_id, [input.value.trim()], []);
  });
  cap.appendChild(form);
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

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
  return tr;
}

async function comparePanel() {
  const section = document.getElementById("compare");
  let c;
  try {
    const resp = await fetch("/api/compare");
    if (resp.status === 404) { section.hidden = true; return; }  // started without a summary
    c = await resp.json();
    if (!resp.ok) throw new Error(c.error || resp.status);
  } catch (err) {
    section.hidden = false;
    document.getElementById("compare-head").textContent = "rollout: " + err.message;
    return;
  }
  const ms = us => us ? (us / 1000).toFixed(1) + " ms" : "\u2013";
  document.getElementById("compare-head").textContent =
    "rollout: live v" + c.live_version + " vs shadow v" + c.shadow_version + " \u00b7 " + c.compared +
    " photos compared \u00b7 agreement " + c.agreement.toFixed(3) + " \u00b7 written " + Math.round(c.age_s) + " s ago";
  const parts = ["without a shadow event " + (100 * c.shadow_missing).toFixed(1) + " %"];
  if (c.edited) parts.push("owners' edits (" + c.edited + " photos): " +
    Object.entries(c.edits).map(([v, a]) => "v" + v + " " + a.toFixed(3)).join(", "));
  for (const [v, q] of Object.entries(c.costs))
    parts.push("v" + v + " request p50 " + ms(q.request_p50_us) + ", p99 " + ms(q.request_p99_us) +
               ", compute " + (q.compute_us_per_image ? q.compute_us_per_image.toFixed(0) + " \u00b5s/image" : "\u2013"));
  document.getElementById("compare-line").textContent = parts.join(" \u00b7 ");
  document.querySelector("#compare-tags tbody").replaceChildren(...c.tags.map(t =>
    row([t.tag, t.live_rate.toFixed(3), t.shadow_rate.toFixed(3), t.agreement.toFixed(3)])));
  document.querySelector("#compare-disagree tbody").replaceChildren(...c.disagreements.map(d =>
    row([d.photo_id, d.jaccard.toFixed(2), d.only_live.join(", ") || "\u2013", d.only_shadow.join(", ") || "\u2013"])));
  section.hidden = false;
}

box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refresh, 150); });
box.addEventListener("keydown", e => { if (e.key === "Enter") { clearTimeout(timer); refresh(); } });
ownerBox.value = localStorage.getItem("darkroom-owner") || "";
ownerBox.addEventListener("input", () => { localStorage.setItem("darkroom-owner", ownerBox.value.trim()); editing(); });
editing();
setInterval(() => {
  stats();
  const typing = document.activeElement && document.activeElement.closest("form.add");
  if (!box.value.trim() && !typing) refresh();  // never redraw the card whose tag is being typed
}, 2000);
setInterval(comparePanel, 10000);  // the summary changes when `darkroom compare` runs again
stats(); refresh(); comparePanel();
</script>
</html>
"""
