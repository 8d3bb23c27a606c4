"""The search page in headless Chromium: type a query, see the right photos, thumbnails and counters.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (the test setup installs them: see
docs/search.md); it is skipped, saying so, only where they are not installed.
"""

from __future__ import annotations

import urllib.request

import orjson
import pytest

from search.indexer import LiveCounters, Record, SearchIndex, Topics
from search.web import serve
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
TOPICS = Topics()


@pytest.fixture
def page(tmp_path, jpeg, tag_value):
    """The page of an index holding PHOTOS (uploaded as real files) and one dead letter."""
    db = tmp_path / "index.sqlite"
    index = SearchIndex(db)
    recs = [Record(TOPICS.tags, 0, i, tag_value(pid, tags)) for i, (pid, tags) in enumerate(PHOTOS.items())]
    recs += [
        Record(TOPICS.uploads, 0, i, orjson.dumps({"photo_id": pid, "url": jpeg(f"{pid}.jpg").as_uri()}))
        for i, pid in enumerate(PHOTOS)
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
