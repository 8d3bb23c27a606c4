"""The search page's rollout panel: the summary ``darkroom compare --json`` writes, served checked and cut
down (plain HTTP) and shown as text in headless Chromium."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from search.compare_panel import PANEL_TAGS
from search.counters import LiveCounters
from search.store import SearchIndex
from search.web import serve
from tests.search.test_search_page import browser  # noqa: F401  (headless Chromium)
from tools.embedded import Ports
from tools.rollout import compare

HOSTILE = '<img src=x onerror="document.title=1">'


def _event(pid: str, version: str, tags: list[str]) -> bytes:
    return orjson.dumps(
        {"photo_id": pid, "model_version": version, "uploaded_at": "2026-12-01T00:00:00Z",
         "tagged_at": "2026-12-01T00:00:01Z", "tags": [{"tag": t, "score": 0.9} for t in tags]}
    )  # fmt: skip


def _summary(path: Path) -> dict:
    """A real comparison's summary, as `darkroom compare --json` writes it: 30 tags, one of them hostile."""
    live = [_event(f"p{i}", "3", ["sky", *(["dog"] if i % 2 else [])]) for i in range(40)]
    shadow = [_event(f"p{i}", "4", ["sky", *([HOSTILE] if i < 10 else [])]) for i in range(40)]
    live += [_event("many", "3", [f"t{k:02d}" for k in range(28)])]
    shadow += [_event("many", "4", [])]
    summary = compare(live, shadow, "3", "4").summary()
    summary["costs"] = {
        "3": {"request_p50_us": 12000.0, "request_p99_us": 30000.0, "compute_us_per_image": 800.0}
    }
    path.write_text(json.dumps(summary))
    return summary


@pytest.fixture
def page(tmp_path):
    db = tmp_path / "index.sqlite"
    SearchIndex(db).close()
    servers = []

    def start(compare_path: Path | None) -> str:
        port = Ports.free().web
        servers.append(serve(db, LiveCounters(), "127.0.0.1", port, [], compare_path=compare_path))
        return f"http://127.0.0.1:{port}/"

    yield start
    for server in servers:
        server.shutdown()


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_the_panel_api_serves_the_summary_checked_and_cut_down(page, tmp_path) -> None:
    path = tmp_path / "compare.json"
    summary = _summary(path)
    url = page(path)
    status, body = _get(url + "api/compare")
    assert status == 200
    assert (body["live_version"], body["shadow_version"], body["compared"]) == ("3", "4", 41)
    assert body["agreement"] == pytest.approx(summary["agreement"])
    assert len(summary["tags"]) == 31 and len(body["tags"]) == PANEL_TAGS
    assert [t["tag"] for t in body["tags"][:2]] == ["dog", HOSTILE]  # the largest rate changes first
    assert body["disagreements"][0]["photo_id"] == "many"
    assert body["costs"]["3"]["compute_us_per_image"] == 800.0

    path.write_text('{"tags": {"x": {"live_rate": "NaN", "agreement": true}}, "compared": [1]}')
    status, body = _get(url + "api/compare")
    assert status == 200 and body["tags"] == [
        {"tag": "x", "live_rate": 0.0, "shadow_rate": 0.0, "agreement": 0.0}
    ]
    for bad, problem in ((b"{", "is not JSON"), (b"[1, 2]", "is not a `darkroom compare --json` summary")):
        path.write_bytes(bad)
        status, body = _get(url + "api/compare")
        assert status == 503 and problem in body["error"]
    path.unlink()
    assert _get(url + "api/compare")[0] == 503
    status, body = _get(page(None) + "api/compare")
    assert status == 404 and "--compare-json" in body["error"]


def test_the_page_shows_the_rollout_panel_as_text(page, tmp_path, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "compare.json"
    _summary(path)
    browser.get(page(path))
    section = browser.find_element(By.ID, "compare")
    WebDriverWait(browser, 10).until(lambda d: section.is_displayed())
    head = browser.find_element(By.ID, "compare-head").text
    assert "live v3 vs shadow v4" in head and "41 photos compared" in head
    assert (
        "v3 request p50 12.0 ms, p99 30.0 ms, compute 800 µs/image"
        in browser.find_element(By.ID, "compare-line").text
    )
    rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "#compare-tags tbody tr")]
    assert len(rows) == PANEL_TAGS and rows[0] == "dog 0.488 0.000 0.000"  # 20 of 41 photos
    assert rows[1].startswith(HOSTILE)  # shown as text, never as markup
    assert not browser.find_elements(By.CSS_SELECTOR, "#compare img") and browser.title == "Darkroom search"
    disagree = browser.find_elements(By.CSS_SELECTOR, "#compare-disagree tbody tr")
    assert disagree[0].text.startswith("many 0.00 t00, t01")


def test_the_panel_stays_hidden_without_a_summary(page, browser) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page(None))
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert not browser.find_element(By.ID, "compare").is_displayed()
