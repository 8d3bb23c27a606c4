"""Edits on the real broker: the page's controls and ``darkroom edit`` publish, the indexer applies them,
search shows them; a refused edit ends as a dead letter on ``photo-tag-edits-dlq``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer

from search.consumer import consume
from search.counters import LiveCounters
from search.edit_cli import main as edit_main
from search.store import SearchIndex, TopicNames
from search.web import serve
from stream.clients import UploadPublisher, follow
from stream.settings import Settings
from tests.external import require
from tests.search.test_search_page import CHROMIUM_HINT, browser, shown  # noqa: F401 - the fixture
from tools.embedded import Ports

SETTINGS = Settings()
#: click the remove button of tag arguments[1] on the card of photo arguments[0] (found and clicked in one
#: step: the page redraws its cards every few seconds)
CLICK_REMOVE = """
const fig = document.querySelector(`figure.photo[data-photo-id="${arguments[0]}"]`);
const tag = fig && [...fig.querySelectorAll(".tag")].find(s => s.textContent.startsWith(arguments[1] + " "));
if (!tag) return false;
tag.querySelector("button.rm").click();
return true;
"""
CARD_TEXT = """
const fig = document.querySelector(`figure.photo[data-photo-id="${arguments[0]}"]`);
return fig ? fig.innerText : "";
"""
TOPICS = TopicNames.from_settings(SETTINGS)


def _publish(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in values:
        producer.produce(topic, value, key.encode())
    assert producer.flush(30) == 0


def _wait(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


def _search(db, query: str) -> list[str]:
    index = SearchIndex(db, readonly=True)
    try:
        return [h.photo_id for h in index.search(query, limit=1000)]
    finally:
        index.close()


@pytest.fixture
def indexer(broker, tmp_path) -> Iterator:
    """A running indexer (consume in a thread, as `darkroom index` runs it) on a fresh index file."""
    db = tmp_path / "index.sqlite"
    index = SearchIndex(db)
    stop, failures = threading.Event(), []

    def run() -> None:
        try:
            for _ in consume(
                index, broker, TOPICS, stop=stop, settings=SETTINGS.replace(kafka_bootstrap=broker)
            ):
                pass
        except Exception as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield db
    stop.set()
    thread.join(timeout=30)
    index.close()
    assert not failures, failures


def test_edit_command_reaches_the_index_and_a_refused_edit_becomes_a_dead_letter(broker, indexer, tag_value):
    run = f"cli-{time.monotonic_ns()}"
    mine, theirs = f"{run}-mine", f"{run}-theirs"
    _publish(broker, TOPICS.uploads, [
        (mine, orjson.dumps({"photo_id": mine, "url": "file:///m.jpg", "owner": "ann"})),
        (theirs, orjson.dumps({"photo_id": theirs, "url": "file:///t.jpg", "owner": "bob"})),
    ])  # fmt: skip
    _publish(broker, TOPICS.tags, [(p, tag_value(p, {"car": 0.8, "grass": 0.7})) for p in (mine, theirs)])
    _wait(lambda: {mine, theirs} <= set(_search(indexer, "car")), "the tag events in the index")

    args = ["--bootstrap", broker, "--owner", "ann", "--remove", "car", "--add", "Red Kite"]
    assert edit_main([mine, *args]) == 0
    _wait(lambda: mine not in _search(indexer, "car"), "ann's edit in the index")
    assert _search(indexer, "kite") == [mine]
    assert edit_main([mine, "--bootstrap", broker, "--owner", "ann", "--add", "x", "--remove", "X"]) == 2

    assert edit_main([theirs, *args]) == 0  # well-formed, so published; the indexer refuses it
    _publish(broker, TOPICS.edits, [(run, b"\xff not an edit")])
    letters = {}
    for _, key, value in follow(broker, [TOPICS.edits_dlq], idle_timeout_s=20, settings=SETTINGS,
                                should_stop=lambda: len(letters) == 2):  # fmt: skip
        letter = orjson.loads(value)
        if key in (theirs.encode(), None) and run in (letter.get("photo_id") or "") + (
            letter["original"] or ""
        ):
            letters[letter["error"]] = letter
        elif letter["source"]["topic"] == TOPICS.edits and letter["original_encoding"] == "base64":
            letters.setdefault("invalid_event", letter)
    assert set(letters) == {"not_owner", "invalid_event"}, letters
    assert theirs in _search(indexer, "car")  # bob's photo kept its tags


def test_removing_a_tag_on_the_page_reaches_the_index_through_the_broker(
    broker,
    indexer,
    tag_value,
    browser,  # noqa: F811 - the fixture
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    require("chromium", "chromium-browser", hint=CHROMIUM_HINT)
    pid = f"page-{time.monotonic_ns()}"
    _publish(
        broker,
        TOPICS.uploads,
        [(pid, orjson.dumps({"photo_id": pid, "url": "file:///p.jpg", "owner": "ann"}))],
    )
    _publish(broker, TOPICS.tags, [(pid, tag_value(pid, {"boat": 0.9, "sea": 0.8}))])
    _wait(lambda: pid in _search(indexer, "boat"), "the tag event in the index")
    port = Ports.free().web
    edits = UploadPublisher(broker, TOPICS.edits, SETTINGS)
    server = serve(indexer, LiveCounters(), "127.0.0.1", port, [], edits=edits)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        browser.find_element(By.ID, "owner").send_keys("ann")
        box = browser.find_element(By.ID, "q")
        box.send_keys("boat")
        assert pid in shown(browser, "boat")
        assert browser.execute_script(CLICK_REMOVE, pid, "boat")
        _wait(lambda: pid not in _search(indexer, "boat"), "the page's edit in the index")
        box.clear()
        box.send_keys("sea")
        assert pid in shown(browser, "sea")
        card = f'figure.photo[data-photo-id="{pid}"]'
        add = browser.find_element(By.CSS_SELECTOR, f"{card} form.add input")
        add.send_keys("Sailboat\n")
        _wait(lambda: _search(indexer, "sailboat") == [pid], "the added tag in the index")
        WebDriverWait(browser, 20).until(
            lambda d: "sailboat 1.00" in d.execute_script(CARD_TEXT, pid)
        )  # the page shows the owner's tag once the index has it
        assert "boat 0.90" not in browser.execute_script(CARD_TEXT, pid)
    finally:
        server.shutdown()
