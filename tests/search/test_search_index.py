"""The SQLite search index: newest model version wins per photo, replays change nothing, ranked search."""

from __future__ import annotations

import sqlite3
import threading

import orjson
import pytest

from contracts.records import InvalidEvent, parse_rfc3339, parse_tag_event
from search.counters import LiveCounters
from search.store import Record, SearchIndex, TopicNames, query_terms

TOPICS = TopicNames()


@pytest.fixture
def index(tmp_path):
    idx = SearchIndex(tmp_path / "index.sqlite")
    yield idx
    idx.close()


def records(*values: bytes, topic: str = TOPICS.tags, partition: int = 0, start: int = 0) -> list[Record]:
    return [Record(topic, partition, start + i, v) for i, v in enumerate(values)]


def ids(hits) -> list[str]:
    return [h.photo_id for h in hits]


def test_search_ranks_photos_by_the_scores_of_the_matching_tags(index, tag_value):
    index.apply(
        records(
            tag_value("a", {"beach": 0.9, "sunset": 0.8, "sea": 0.7}),
            tag_value("b", {"beach": 0.6, "sunset": 0.95}),
            tag_value("c", {"beach": 0.99, "sea": 0.9}),
            tag_value("d", {"snow": 0.9}),
        ),
        TOPICS,
    )
    assert ids(index.search("beach sunset")) == ["a", "b"]  # every term must match; a: 1.7 > b: 1.55
    assert ids(index.search("beach")) == ["c", "a", "b"]
    assert [round(h.relevance, 2) for h in index.search("beach sunset")] == [1.7, 1.55]
    assert index.search("moon") == [] and index.search("beach moon") == []


def test_search_is_case_insensitive_and_stems_plurals(index, tag_value):
    index.apply(records(tag_value("a", {"flower": 0.9, "boat": 0.8})), TOPICS)
    assert ids(index.search("Flowers")) == ["a"]
    assert ids(index.search("BOATS, flower!")) == ["a"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('"', []),  # no words at all
        ("beach OR", ["b"]),  # "or" is a word to match, not an operator: only b has a tag "or"
        ("NEAR(beach sunset)", []),  # no photo has a tag "near"
        ("beach*", ["a", "b"]),  # no prefix query: "beach" exactly (stemmed)
        ("-beach", ["a", "b"]),  # no negation
        ("sunset AND ^", []),  # no photo has a tag "and"
        ("'; DROP TABLE photos; --", []),
    ],
)
def test_query_syntax_never_reaches_fts5(index, tag_value, query, expected):
    index.apply(records(tag_value("a", {"beach": 0.9, "sunset": 0.8}), tag_value("b", {"beach": 0.5, "or": 0.4})),
                TOPICS)  # fmt: skip
    assert ids(index.search(query)) == expected  # words only, as plain terms; never sqlite3.OperationalError
    assert index.photo("a") is not None


def test_a_term_matching_more_tags_than_sqlite_has_variables_still_answers(index, tag_value):
    # 32766 is SQLite's default variable limit (this build allows more: lower it to what most builds have)
    index._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32766)
    many = {f"sea {i}": 0.5 for i in range(33_000)}  # every one of them matches the term "sea"
    index.apply(records(tag_value("wide", many), tag_value("top", {"sea 1": 0.9, "sky": 0.8})), TOPICS)
    assert ids(index.search("sea")) == ["top", "wide"]  # best matching tag: 0.9 > 0.5
    assert ids(index.search("sea sky")) == ["top"]


def test_query_terms_are_words_only_deduplicated_and_capped():
    assert query_terms("  Beach, beach; SUNSET!! ") == ["beach", "sunset"]
    assert query_terms("*** ---") == []
    assert len(query_terms(" ".join(f"w{i}" for i in range(50)))) == 8


def test_newer_version_replaces_every_tag_of_the_photo(index, tag_value):
    index.apply(records(tag_value("p", {"beach": 0.9, "sunset": 0.8}, version=1)), TOPICS)
    index.apply(records(tag_value("p", {"snow": 0.7}, version=2), start=1), TOPICS)
    assert index.search("beach") == [] and index.search("sunset") == []  # no stale version-1 tag remains
    [hit] = index.search("snow")
    assert (hit.photo_id, hit.model_version, hit.tags) == ("p", "2", [{"tag": "snow", "score": 0.7}])


def test_older_version_never_overwrites_a_newer_one(index, tag_value):
    index.apply(records(tag_value("p", {"snow": 0.7}, version=2)), TOPICS)
    applied = index.apply(records(tag_value("p", {"beach": 0.9}, version=1), start=1), TOPICS)
    assert applied.stale == 1 and applied.tag_events == 0
    assert index.photo("p").model_version == "2" and index.search("beach") == []


def test_versions_compare_as_numbers_not_strings(index, tag_value):
    index.apply(records(tag_value("p", {"snow": 0.7}, version=10)), TOPICS)
    index.apply(records(tag_value("p", {"beach": 0.9}, version=9), start=1), TOPICS)
    assert index.photo("p").model_version == "10"


def test_replaying_a_topic_changes_nothing(index, tag_value, tmp_path):
    batch = records(
        tag_value("a", {"beach": 0.9}), tag_value("b", {"sea": 0.8}), tag_value("a", {"sky": 0.5}, 2)
    )
    index.apply(batch, TOPICS)
    before = (
        sqlite3.connect(tmp_path / "index.sqlite")
        .execute("SELECT * FROM photos ORDER BY photo_id")
        .fetchall()
    )
    replay = index.apply(batch, TOPICS)
    after = (
        sqlite3.connect(tmp_path / "index.sqlite")
        .execute("SELECT * FROM photos ORDER BY photo_id")
        .fetchall()
    )
    assert replay.tag_events == 0 and replay.stale == 3
    assert before == after and index.counts()["photos"] == 2


def test_offsets_are_stored_with_the_batch_and_only_move_forward(index, tag_value):
    index.apply(
        records(tag_value("a", {"beach": 0.9}), tag_value("b", {"sea": 0.8}), partition=3, start=41), TOPICS
    )
    assert index.offsets() == {(TOPICS.tags, 3): 43}
    index.apply(records(tag_value("a", {"beach": 0.9}), partition=3, start=10), TOPICS)  # a rewind
    assert index.offsets() == {(TOPICS.tags, 3): 43}


def test_a_failed_batch_leaves_neither_rows_nor_offsets(index, tag_value, monkeypatch):
    def boom(*args):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(SearchIndex, "_upsert_upload", staticmethod(boom))
    upload = orjson.dumps({"photo_id": "a", "url": "file:///x.jpg"})
    with pytest.raises(sqlite3.OperationalError):
        index.apply(
            [Record(TOPICS.tags, 0, 0, tag_value("a", {"beach": 0.9})), Record(TOPICS.uploads, 0, 0, upload)],
            TOPICS,
        )
    assert index.photo("a") is None and index.offsets() == {}


def test_invalid_records_are_skipped_with_a_reason_and_their_offsets_consumed(index, tag_value):
    bad = [b"not json", orjson.dumps({"photo_id": "x", "tags": [], "model": "tagger", "model_version": "v2",
                                      "uploaded_at": "2026-01-01T00:00:00Z", "tagged_at": "2026-01-01T00:00:00Z"})]  # fmt: skip
    applied = index.apply(records(*bad, tag_value("ok", {"sea": 0.5})), TOPICS)
    assert applied.tag_events == 1 and len(applied.invalid) == 2
    assert (
        "not JSON" in applied.invalid[0]
        and "'model_version' must be a positive integer" in applied.invalid[1]
    )
    assert "photo-tags[0]@1" in applied.invalid[1]
    assert index.offsets() == {(TOPICS.tags, 0): 3}


def test_uploads_give_photos_their_url_and_dead_letters_count_once_per_source(index):
    upload = orjson.dumps(
        {"photo_id": "a", "url": "file:///photos/a.jpg", "uploaded_at": "2026-01-01T00:00:00Z"}
    )
    letter = orjson.dumps(
        {"photo_id": "z", "error": "not_found", "detail": "no such file", "at": "2026-01-01T00:00:00Z",
         "source": {"topic": "photo-uploads", "partition": 1, "offset": 7}, "original": "{}", "original_encoding": "text"}
    )  # fmt: skip
    index.apply(records(upload, topic=TOPICS.uploads), TOPICS)
    index.apply(records(letter, letter, topic=TOPICS.dlq), TOPICS)  # a redelivered dead letter
    assert index.url_of("a") == "file:///photos/a.jpg" and index.url_of("zz") is None
    counts = index.counts()
    assert counts["dead_letters"] == 1 and counts["dead_letters_by_error"] == {"not_found": 1}


def test_duplicate_photo_ids_keep_the_url_of_the_event_whose_tags_are_indexed(index, tag_value):
    first = orjson.loads(tag_value("p", {"beach": 0.9})) | {"url": "file:///photos/first.jpg"}
    second = orjson.loads(tag_value("p", {"snow": 0.8})) | {"url": "file:///photos/second.jpg"}
    uploads = [orjson.dumps({"photo_id": "p", "url": e["url"]}) for e in (first, second)]
    index.apply(records(uploads[0], topic=TOPICS.uploads), TOPICS)
    index.apply(records(orjson.dumps(first)), TOPICS)
    index.apply(records(uploads[1], topic=TOPICS.uploads, start=1), TOPICS)  # the same id uploaded again
    index.apply(records(orjson.dumps(second), start=1), TOPICS)  # same version: the first event's tags stay
    assert [t["tag"] for t in index.photo("p").tags] == ["beach"]
    assert index.url_of("p") == "file:///photos/first.jpg"  # ...and so does the first event's URL


def test_an_upload_without_uploaded_at_is_dated_by_its_record_in_the_index(index):
    upload = orjson.dumps({"photo_id": "a", "url": "file:///photos/a.jpg"})
    index.apply([Record(TOPICS.uploads, 0, 0, upload, 1764583200.123)], TOPICS)
    index.apply([Record(TOPICS.uploads, 0, 0, upload, 1764583200.123)], TOPICS)  # a redelivery
    row = index._db.execute("SELECT uploaded_at FROM uploads WHERE photo_id = 'a'").fetchall()
    assert row == [("2025-12-01T10:00:00.123Z",)]


def test_a_reader_sees_a_photo_entirely_at_one_version(index, tag_value, tmp_path):
    index.apply(records(tag_value("p", {f"tag{i}": 0.5 for i in range(40)}, version=1)), TOPICS)
    reader = SearchIndex(tmp_path / "index.sqlite", readonly=True)
    seen: set[tuple[str, ...]] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            hit = reader.photo("p")
            seen.add(tuple(sorted({t["tag"][:3] for t in hit.tags} | {hit.model_version})))

    thread = threading.Thread(target=read)
    thread.start()
    for version in range(2, 60):
        prefix = "tag" if version % 2 else "alt"
        index.apply(
            records(tag_value("p", {f"{prefix}{i}": 0.5 for i in range(40)}, version), start=version), TOPICS
        )
    done.set()
    thread.join()
    reader.close()
    assert all(len(s) == 2 for s in seen), seen  # one version's tags, never a mix


def test_recent_lists_the_newest_tagged_first(index, tag_value):
    index.apply(
        records(
            tag_value("old", {"sea": 0.5}, tagged_at="2026-01-01T00:00:01Z"),
            tag_value("new", {"sea": 0.5}, tagged_at="2026-01-01T00:00:09Z"),
        ),
        TOPICS,
    )
    assert ids(index.recent()) == ["new", "old"]


def test_counters_measure_new_photos_latency_but_not_retags(index, tag_value):
    counters = LiveCounters(window_s=3600)
    stamp = "2026-01-01T00:00:05Z"  # 5 s after the upload
    index.apply(
        records(tag_value("a", {"sea": 0.5}, tagged_at=stamp), tag_value("a", {"sea": 0.5}, 2, stamp)),
        TOPICS,
        counters,
    )
    snap = counters.snapshot(now=parse_rfc3339("2026-01-01T00:00:10Z").timestamp())
    assert snap["tag_events"] == 2 and snap["latency_ms"] == {"p50": 5000, "p95": 5000}
    assert snap["throughput_per_s"] == pytest.approx(2 / 5)


def test_readonly_index_that_does_not_exist_says_how_to_build_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="darkroom index"):
        SearchIndex(tmp_path / "nope.sqlite", readonly=True)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"[]", "expected a JSON object"),
        (b'{"photo_id": "a"}', "'model' is required"),
        (b'{"photo_id":"a","model":"m","model_version":"1","tags":{}}', "'tags' must be a list"),
        (b'{"photo_id":"a","model":"m","model_version":"1","tags":[{"tag":"x","score":2}]}', "expected 0..1"),
        (
            b'{"photo_id":"a","model":"m","model_version":"1","tags":[],"uploaded_at":"x","tagged_at":"y"}',
            "RFC 3339",
        ),
    ],
)
def test_bad_tag_events_are_rejected_naming_the_problem(value, message):
    with pytest.raises(InvalidEvent, match=message):
        parse_tag_event(value)
