"""The search page in headless Chromium: type a query, see the right photos, thumbnails and counters.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (the test setup installs them: see
docs/search.md); it is skipped, saying so, only where they are not installed.
"""

from __future__ import annotations

import io
import socket
import threading
import time
import urllib.request

import orjson
import pytest

from search import web
from search.counters import LiveCounters
from search.store import Record, SearchIndex, TopicNames
from search.web import serve
from stream.settings import Settings
from tests.external import require
from tools.embedded import Ports

CHROMIUM_HINT = "apt-get install -y chromium chromium-driver"
PHOTOS = {
    "beach-sunset-1": {"beach": 0.93, "sunset": 0.88, "sea": 0.7},
    "beach-sunset-2": {"beach": 0.71, "sunset": 0.66},
    "beach-day": {"beach": 0.95, "sky": 0.8},
    "snowy-night": {"snow": 0.9, "night": 0.85},
    "meadow": {"grass": 0.9, "flower": 0.6},
}
TOPICS = TopicNames()


@pytest.fixture
def page(tmp_path, jpeg, tag_value):
    """The page of an index holding PHOTOS (uploaded as real files) and one dead letter."""
    db = tmp_path / "index.sqlite"
    index = SearchIndex(db)
    recs = [Record(TOPICS.tags, 0, i, tag_value(pid, tags)) for i, (pid, tags) in enumerate(PHOTOS.items())]
    recs += [
        Record(
            TOPICS.uploads, 0, i, orjson.dumps({"photo_id": pid, "url": jpeg(f"{pid}.jpg").as_uri()}), 1.7e9
        )
        for i, pid in enumerate(PHOTOS)  # no uploaded_at: the record's timestamp stands in
    ]
    letter = {"photo_id": "x", "error": "decode_failed", "detail": "truncated", "at": "2026-01-01T00:00:00Z",
              "source": {"topic": "photo-uploads", "partition": 0, "offset": 9},
              "original": "{}", "original_encoding": "text"}  # fmt: skip
    recs.append(Record(TOPICS.dlq, 0, 0, orjson.dumps(letter)))
    index.apply(recs, TOPICS, LiveCounters())
    index.close()
    port = Ports.free().web
    server = serve(db, LiveCounters(), "127.0.0.1", port, [str(tmp_path / "photos")])
    yield f"http://127.0.0.1:{port}/"
    server.shutdown()


@pytest.fixture
def browser(tmp_path):
    chromium = require("chromium", "chromium-browser", hint=CHROMIUM_HINT)
    chromedriver = require("chromedriver", hint=CHROMIUM_HINT)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


def shown(driver, query: str, timeout_s: float = 10.0) -> list[str]:
    """The photo ids the page shows once it has rendered the answer to ``query``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    results = driver.find_element(By.ID, "results")
    WebDriverWait(driver, timeout_s).until(lambda d: results.get_attribute("data-query") == query)
    return [
        fig.get_attribute("data-photo-id") for fig in results.find_elements(By.CSS_SELECTOR, "figure.photo")
    ]


def test_typing_a_query_shows_the_matching_photos_best_first(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page)
    assert sorted(shown(browser, "")) == sorted(PHOTOS)  # before a query: the newest tagged uploads
    box = browser.find_element(By.ID, "q")
    box.send_keys("beach sunset")
    assert shown(browser, "beach sunset") == ["beach-sunset-1", "beach-sunset-2"]
    first = browser.find_element(By.CSS_SELECTOR, "figure.photo")
    assert "beach 0.93" in first.text and "tagger v1" in first.text

    img = first.find_element(By.TAG_NAME, "img")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].complete", img))
    assert browser.execute_script("return arguments[0].naturalWidth", img) == 240  # a real thumbnail

    box.clear()
    box.send_keys("snows")
    assert shown(browser, "snows") == ["snowy-night"]
    box.clear()
    box.send_keys("moon")
    assert shown(browser, "moon") == []
    assert "no photo matches" in browser.find_element(By.ID, "status").text


def test_counters_show_photos_versions_and_dead_letters(page, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "stat-photos").text == "5")
    assert browser.find_element(By.ID, "stat-dlq").text == "1"
    assert browser.find_element(By.ID, "stat-versions").text == "(v1: 5)"


def test_thumbnails_only_for_known_photos_under_the_roots(page, tmp_path):
    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(page + path, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("thumbs/meadow.jpg") == 200
    assert status("thumbs/unknown.jpg") == 404
    assert status("api/search?q=beach&limit=x") == 400
    assert status("nope") == 404
    with urllib.request.urlopen(page + "api/search?q=BEACH", timeout=5) as resp:
        body = orjson.loads(resp.read())
    assert [p["photo_id"] for p in body["photos"]] == ["beach-day", "beach-sunset-1", "beach-sunset-2"]


# -- the thumbnailer and the server under hostile input ----------------------------------------------------------
def _serve_photos(tmp_path, files: dict[str, bytes], **options) -> tuple[str, object]:
    """A page whose index knows each file (written under tmp_path/photos) as an uploaded photo."""
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    index = SearchIndex(tmp_path / "index.sqlite")
    for i, (name, data) in enumerate(files.items()):
        (photos / name).write_bytes(data)
        upload = orjson.dumps(
            {"photo_id": name, "url": (photos / name).as_uri(), "uploaded_at": "2026-01-01T00:00:00Z"}
        )
        index.apply([Record(TOPICS.uploads, 0, i, upload)], TOPICS)
    index.close()
    port = Ports.free().web
    server = serve(tmp_path / "index.sqlite", LiveCounters(), "127.0.0.1", port, [str(photos)], **options)
    return f"http://127.0.0.1:{port}/", server


def _thumb(base: str, photo_id: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{base}thumbs/{photo_id}.jpg", timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _image(fmt: str, size: tuple[int, int] = (64, 48), **save) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, fmt, **save)
    return out.getvalue()


def test_thumbnails_go_through_the_workers_decode_path(tmp_path):
    from PIL import Image

    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(5)]  # distinct: Pillow keeps all 5
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    files = {
        "ok.jpg": _image("JPEG", (400, 200)),
        "bitmap.bmp": _image("BMP"),  # Pillow reads BMP; the worker's allow-list does not
        "huge.png": _image("PNG", (400, 300)),  # over the pixel cap below
        "animated.gif": gif.getvalue(),  # over the frame cap below
    }
    base, server = _serve_photos(tmp_path, files, settings=Settings(max_image_pixels=100_000, max_frames=3))
    try:
        status, body = _thumb(base, "ok.jpg")
        assert status == 200 and Image.open(io.BytesIO(body)).size == (240, 120)  # aspect kept
        for photo_id, code in (("bitmap.bmp", "unsupported_format"), ("huge.png", "too_many_pixels"),
                               ("animated.gif", "too_many_frames")):  # fmt: skip
            status, body = _thumb(base, photo_id)
            assert (status, orjson.loads(body)["error"].split(":")[0]) == (404, code), body
    finally:
        server.shutdown()


def test_a_client_that_sends_nothing_is_disconnected(tmp_path):
    assert 0 < web.REQUEST_TIMEOUT_S <= 30  # the default: a silent client cannot hold a thread for long
    base, server = _serve_photos(tmp_path, {}, request_timeout_s=0.5)
    try:
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1].strip("/")))) as idle:
            idle.settimeout(10)
            assert idle.recv(1) == b""  # closed by the server, not still waiting for a request line
    finally:
        server.shutdown()


def test_idle_connections_cannot_take_more_than_the_request_threads(tmp_path):
    before = threading.active_count()
    base, server = _serve_photos(tmp_path, {"ok.jpg": _image("JPEG")}, max_threads=3)
    port = int(base.rsplit(":", 1)[1].strip("/"))
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    try:
        time.sleep(1.0)  # let the server accept what it will
        assert threading.active_count() - before <= 1 + 3  # the accept loop and at most 3 request threads
    finally:
        for conn in idle:
            conn.close()
    status, _ = _thumb(base, "ok.jpg")  # the threads come back once those clients go
    server.shutdown()
    assert status == 200
