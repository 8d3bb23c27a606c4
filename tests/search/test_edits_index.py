"""Owners' tag edits: the record and its schema, how the index applies them, and why one owner cannot
poison anyone else's results or the global training labels."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from contracts.edits import MAX_EDIT_BYTES, EditError, EditRejected, edit_value, parse_tag_edit
from search.counters import LiveCounters
from search.edits import EditLimits, global_corrections
from search.store import Applied, Record, SearchIndex, TopicNames
from tests.search.test_search_schemas import formats

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TOPICS = TopicNames()


def _validator(topic: str) -> Draft202012Validator:
    resources = [
        (f"{p.name}", Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS.glob("*.json")
    ]
    registry = Registry().with_resources(
        [(r.contents["$id"], r) for _, r in resources] + resources  # type: ignore[union-attr]
    )
    schema = json.loads((SCHEMAS / f"{topic}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, registry=registry, format_checker=formats)


# -- the record --------------------------------------------------------------------------------------------
def test_an_edit_is_normalized_and_dated_by_its_record_when_it_has_no_time():
    raw = orjson.dumps(
        {"photo_id": "p", "owner": "ann", "added": ["  Red  Car ", "red car"], "removed": ["Sky"]}
    )
    edit = parse_tag_edit(raw, 1_764_583_200.0)
    assert (edit.added, edit.removed, edit.model_version) == (("red car",), ("sky",), None)
    assert edit.at == "2025-12-01T10:00:00.000Z"
    assert parse_tag_edit(raw, 1_764_583_200.0) == edit  # a redelivery reads the same


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (None, EditError.INVALID_EVENT, "tombstone"),
        (b"{oops", EditError.INVALID_EVENT, "not JSON"),
        (b"[]", EditError.INVALID_EVENT, "JSON object"),
        (b'{"owner": "a", "added": ["x"]}', EditError.INVALID_EVENT, "'photo_id'"),
        (b'{"photo_id": "p", "owner": "  ", "added": ["x"]}', EditError.INVALID_EVENT, "'owner'"),
        (b'{"photo_id": "p", "owner": "a"}', EditError.INVALID_EVENT, "at least one"),
        (
            b'{"photo_id": "p", "owner": "a", "added": ["x"], "removed": ["X"]}',
            EditError.INVALID_EVENT,
            "both",
        ),
        (b'{"photo_id": "p", "owner": "a", "added": [" "]}', EditError.INVALID_EVENT, "'added'"),
        (b'{"photo_id": "p", "owner": "a", "added": "x"}', EditError.INVALID_EVENT, "'added'"),
        (
            b'{"photo_id": "p", "owner": "a", "added": ["x"], "model_version": 2}',
            EditError.INVALID_EVENT,
            "model_version",
        ),  # fmt: skip
        (
            b'{"photo_id": "p", "owner": "a", "added": ["x"], "at": "yesterday"}',
            EditError.INVALID_EVENT,
            "RFC",
        ),
        (b'{"photo_id": "p", "owner": "a", "added": ["x"]}', EditError.INVALID_EVENT, "no timestamp"),
        (b" " * (MAX_EDIT_BYTES + 1), EditError.EVENT_TOO_LARGE, "limit"),
    ],
)
def test_a_bad_edit_is_refused_naming_the_problem(raw, code, words):
    with pytest.raises(EditRejected) as caught:
        parse_tag_edit(raw, None)
    assert caught.value.code == code and words in caught.value.detail


def test_built_edits_and_their_dead_letters_match_the_schemas():
    edits, letters = _validator("photo-tag-edits"), _validator("photo-tag-edits-dlq")
    value = edit_value("p1", "ann", ["boat"], ["car"], 3)
    assert not list(edits.iter_errors(orjson.loads(value)))
    assert not edits.is_valid({"photo_id": "p1", "owner": "ann"})  # no change: refused by both
    assert not edits.is_valid({"photo_id": "p1", "owner": "ann", "added": [], "removed": []})
    index = SearchIndex(Path(":memory:"))
    applied = index.apply([Record(TOPICS.edits, 0, 5, b"{oops", 1.7e9)], TOPICS)
    (key, letter), = applied.edit_letters  # fmt: skip
    assert not list(letters.iter_errors(orjson.loads(letter)))
    assert orjson.loads(letter)["error"] == "invalid_event"
    assert not letters.is_valid(
        {"error": "x"}
    )  # the $ref is followed: the uploads' letter fields are required


# -- the index ---------------------------------------------------------------------------------------------
@pytest.fixture
def index(tmp_path):
    index = SearchIndex(tmp_path / "index.sqlite")
    yield index
    index.close()


class Feed:
    """Records for one index, each on its own offset, as the consumer would hand them over."""

    def __init__(self, index: SearchIndex, tag_value) -> None:
        self.index, self.tag_value, self.offset = index, tag_value, 0
        self.limits = EditLimits()

    def _next(self) -> int:
        self.offset += 1
        return self.offset

    def upload(self, pid: str, owner: str | None) -> Applied:
        value = orjson.dumps({"photo_id": pid, "url": f"file:///{pid}.jpg", "owner": owner})
        return self.index.apply([Record(TOPICS.uploads, 0, self._next(), value, 1.7e9)], TOPICS)

    def tags(self, pid: str, tags: dict[str, float], version: int = 1) -> Applied:
        record = Record(TOPICS.tags, 0, self._next(), self.tag_value(pid, tags, version))
        return self.index.apply([record], TOPICS, LiveCounters())

    def edit(self, pid: str, owner: str, added=(), removed=(), at: float = 1.7e9) -> Applied:
        value = orjson.dumps(
            {"photo_id": pid, "owner": owner, "added": list(added), "removed": list(removed)}
        )
        return self.index.apply([Record(TOPICS.edits, 0, self._next(), value, at)], TOPICS, None, self.limits)


@pytest.fixture
def feed(index, tag_value):
    return Feed(index, tag_value)


def found(index: SearchIndex, query: str) -> list[str]:
    return [h.photo_id for h in index.search(query)]


def test_an_owners_edit_shows_at_once_and_no_later_version_undoes_it(index, feed):
    feed.upload("p1", "ann")
    feed.tags("p1", {"beach": 0.9, "car": 0.6})
    assert found(index, "car") == ["p1"]
    applied = feed.edit("p1", "ann", added=["Boat"], removed=["car"])
    assert (applied.edits, applied.edit_letters) == (1, [])
    assert found(index, "car") == [] and found(index, "boat") == ["p1"]
    assert index.photo("p1").tags == [
        {"tag": "boat", "score": 1.0, "edited": "added"},
        {"tag": "beach", "score": 0.9},
    ]
    feed.tags("p1", {"car": 0.95, "sky": 0.7}, version=2)  # the new model still sees a car, not the boat
    assert found(index, "car") == [] and found(index, "boat") == ["p1"] and found(index, "sky") == ["p1"]
    assert index.photo("p1").model_version == "2"
    feed.edit("p1", "ann", added=["car"])  # the owner changes their mind: the last word wins
    assert found(index, "car") == ["p1"]


def test_an_edit_of_someone_elses_photo_is_dead_lettered_and_changes_nothing(index, feed):
    feed.upload("p1", "ann")
    feed.tags("p1", {"beach": 0.9})
    applied = feed.edit("p1", "mallory", removed=["beach"])
    assert applied.edits == 0
    (key, letter), = applied.edit_letters  # fmt: skip
    letter = orjson.loads(letter)
    assert (key, letter["error"], letter["source"]["topic"]) == (b"p1", "not_owner", TOPICS.edits)
    assert orjson.loads(letter["original"])["owner"] == "mallory"
    assert found(index, "beach") == ["p1"]


def test_an_edit_before_its_upload_applies_once_the_upload_names_the_same_owner(index, feed):
    feed.tags("p1", {"beach": 0.9})
    feed.tags("p2", {"beach": 0.8})
    assert feed.edit("p1", "ann", removed=["beach"]).edits == 1  # owner unknown yet: logged, not applied
    assert feed.edit("p2", "mallory", removed=["beach"]).edits == 1
    assert found(index, "beach") == ["p1", "p2"]
    feed.upload("p1", "ann")
    feed.upload("p2", "bob")  # mallory's edit was not the owner's: it never applies
    assert found(index, "beach") == ["p2"]
    assert [(p.photo_id, p.owner) for p in index.edited_photos()] == [("p1", "ann")]


def test_an_owner_over_the_rate_limit_is_dead_lettered_and_a_replay_decides_the_same(index, feed):
    feed.limits = EditLimits(rate_limit=3, window_s=60)
    for i in range(5):
        feed.upload(f"p{i}", "ann")
        feed.tags(f"p{i}", {"beach": 0.9})
    outcomes = [feed.edit(f"p{i}", "ann", removed=["beach"], at=1000.0 + i) for i in range(4)]
    assert [o.edits for o in outcomes] == [1, 1, 1, 0]
    assert orjson.loads(outcomes[3].edit_letters[0][1])["error"] == "rate_limited"
    assert feed.edit("p4", "ann", removed=["beach"], at=1061.0).edits == 1  # the window moved on
    replay = feed.index.apply(
        [Record(TOPICS.edits, 0, 1 + feed.offset - 1, None)], TOPICS
    )  # a tombstone on a consumed offset: still a dead letter, never a crash
    assert orjson.loads(replay.edit_letters[0][1])["error"] == "invalid_event"
    assert found(index, "beach") == ["p3"]


def test_a_redelivered_edit_is_applied_once(index, feed):
    feed.limits = EditLimits(rate_limit=1, window_s=60)
    feed.upload("p1", "ann")
    feed.tags("p1", {"beach": 0.9})
    value = edit_value("p1", "ann", removed=["beach"])
    first = index.apply([Record(TOPICS.edits, 0, 7, value, 1.7e9)], TOPICS, None, feed.limits)
    again = index.apply([Record(TOPICS.edits, 0, 7, value, 1.7e9)], TOPICS, None, feed.limits)
    assert (first.edits, again.edits, again.edit_letters) == (1, 1, [])  # not rate-limited by itself
    assert index._db.execute("SELECT count(*) FROM edits").fetchone() == (1,)


def test_a_failing_dead_letter_delivery_rolls_the_batch_back(index, feed):
    feed.upload("p1", "ann")
    feed.tags("p1", {"beach": 0.9})
    before = index.offsets()

    def broker_down(applied: Applied) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        index.apply([Record(TOPICS.edits, 0, 99, b"{oops", 1.7e9)], TOPICS, before_commit=broker_down)
    assert index.offsets() == before  # read again next time: the letter is not lost


# -- poisoning ---------------------------------------------------------------------------------------------
def test_one_owners_thousand_wrong_edits_change_no_one_elses_results_and_no_global_label(index, feed):
    feed.limits = EditLimits(rate_limit=10_000, window_s=60)
    honest = {f"h{i}": f"user{i % 5}" for i in range(40)}
    for i, (pid, owner) in enumerate(honest.items()):
        feed.upload(pid, owner)
        feed.tags(pid, {"beach": 0.9, "sea": 0.8} if i % 2 else {"snow": 0.9, "car": 0.7})
    for i in range(1000):
        feed.upload(f"m{i}", "mallory")
        feed.tags(f"m{i}", {"beach": 0.9, "sea": 0.8})
    queries = ("beach", "sea", "snow", "car", "spam", "cheap")
    before = {q: [p for p in found_all(index, q) if p in honest] for q in queries}
    # mallory removes the right tags and adds spam on all of their photos, then tries the others' photos
    for i in range(1000):
        feed.edit(f"m{i}", "mallory", added=["cheap", "snow"], removed=["beach", "sea"], at=1.7e9 + i)
    letters = [feed.edit(pid, "mallory", added=["cheap"], removed=["beach"]).edit_letters for pid in honest]
    assert all(orjson.loads(batch[0][1])["error"] == "not_owner" for batch in letters)
    after = {q: [p for p in found_all(index, q) if p in honest] for q in queries}
    assert after == before
    assert found_all(index, "cheap") == sorted(f"m{i}" for i in range(1000))  # mallory's own photos only
    labels = index.edited_photos()
    assert len(labels) == 1000
    assert global_corrections(labels, votes=2) == set()  # one owner is one vote, however many edits
    # three owners who agree do change a global label (votes=3), two do not
    for pid in ("h0", "h1", "h2"):
        feed.edit(pid, honest[pid], added=["boat"])
    corrections = global_corrections(index.edited_photos(), votes=3)
    assert corrections == {("boat", "added")}
    assert global_corrections(index.edited_photos(), votes=4) == set()


def found_all(index: SearchIndex, query: str) -> list[str]:
    return sorted(h.photo_id for h in index.search(query, limit=10_000))


# -- the page's edit endpoint ------------------------------------------------------------------------------
class Sink:
    """Collects what the page would publish (the broker round trip is in test_edits_stack.py)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, key, value: bytes) -> None:
        self.sent.append((key, value))

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, body, {"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_the_page_publishes_only_well_formed_edits_of_the_owners_own_photos(tmp_path, index, feed):
    from search.web import serve
    from tools.embedded import Ports

    feed.upload("p1", "ann")
    feed.tags("p1", {"beach": 0.9}, version=4)
    sink, port = Sink(), Ports.free().web
    server = serve(index.path, LiveCounters(), "127.0.0.1", port, [], edits=sink)
    off = serve(index.path, LiveCounters(), "127.0.0.1", Ports.free().web, [])
    url = f"http://127.0.0.1:{port}/api/edit"
    try:
        ok = orjson.dumps({"photo_id": "p1", "owner": "ann", "removed": ["beach"]})
        assert _post(url, ok)[0] == 202
        assert _post(url, ok, "application/x-www-form-urlencoded")[0] == 415  # no cross-site form posts
        assert _post(url, orjson.dumps({"photo_id": "p1", "owner": "bob", "removed": ["beach"]}))[0] == 403
        assert _post(url, orjson.dumps({"photo_id": "nope", "owner": "ann", "added": ["x"]}))[0] == 404
        status, body = _post(url, orjson.dumps({"photo_id": "p1", "owner": "ann"}))
        assert status == 400 and "at least one" in body["error"]
        assert _post(url, orjson.dumps({"photo_id": "p1", "owner": "ann", "added": 5}))[0] == 400
        assert _post(url, b"[1]")[0] == 400 and _post(url, b"{oops")[0] == 400
        assert _post(f"http://127.0.0.1:{off.server_address[1]}/api/edit", ok)[0] == 503
    finally:
        server.shutdown()
        off.shutdown()
    (key, value), = sink.sent  # fmt: skip
    edit = parse_tag_edit(value)
    assert (key, edit.owner, edit.removed, edit.model_version) == ("p1", "ann", ("beach",), 4)
    feed.index.apply([Record(TOPICS.edits, 0, 100, value, 1.7e9)], TOPICS)  # as the indexer would
    assert found(index, "beach") == []
