"""``darkroom index`` on a real Tansu broker (resumes from the offsets in its index) and ``darkroom search``."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from search.cli import main, search_main
from search.store import SearchIndex
from stream.settings import Settings
from tools.embedded import create_topics


def stderr(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture
def topics(broker, monkeypatch) -> Settings:
    """Fresh names for the three topics, created on the broker and exported as DARKROOM_*_TOPIC."""
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=broker,
        uploads_topic=f"up-{suffix}",
        tags_topic=f"tags-{suffix}",
        dlq_topic=f"dlq-{suffix}",
    )
    create_topics(broker, settings)
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    return settings


def produce(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for value in values:
        producer.produce(topic, key=orjson.loads(value).get("photo_id"), value=value)
    assert producer.flush(15) == 0


def test_index_once_then_resume_reads_only_what_is_new(topics, tag_value, tmp_path, capsys):
    db = tmp_path / "index.sqlite"
    produce(topics, topics.tags_topic, [tag_value(f"p{i}", {"beach": 0.5 + i / 100}) for i in range(6)])
    produce(topics, topics.uploads_topic, [orjson.dumps({"photo_id": "p0", "url": "file:///a/p0.jpg"})])
    letter = {"photo_id": "bad", "error": "not_found", "detail": "x", "at": "2026-01-01T00:00:00Z",
              "source": {"topic": topics.uploads_topic, "partition": 0, "offset": 1},
              "original": "{}", "original_encoding": "text"}  # fmt: skip
    produce(topics, topics.dlq_topic, [orjson.dumps(letter)])
    assert main(["--once", "--db", str(db)]) == 0
    assert "indexed 6 tag event(s) (0 replayed or older), 1 upload(s), 1 dead letter(s)" in stderr(capsys)

    produce(
        topics,
        topics.tags_topic,
        [tag_value("p0", {"sunset": 0.9}, version=2), tag_value("p9", {"sea": 0.4})],
    )
    assert main(["--once", "--db", str(db)]) == 0
    assert "indexed 2 tag event(s) (0 replayed or older), 0 upload(s), 0 dead letter(s)" in stderr(capsys)

    index = SearchIndex(db, readonly=True)
    assert index.counts()["photos"] == 7 and index.counts()["photos_by_version"] == {"1": 6, "2": 1}
    assert index.url_of("p0") == "file:///a/p0.jpg"
    assert [h.photo_id for h in index.search("beach")] == ["p5", "p4", "p3", "p2", "p1"]  # p0 is v2 now

    before = [h.to_json() for h in index.recent(50)]
    assert main(["--once", "--reset", "--db", str(db)]) == 0  # a rebuild reads everything again...
    assert "indexed 8 tag event(s)" in stderr(capsys)
    assert [h.to_json() for h in index.recent(50)] == before  # ...and ends where the incremental run did


def test_search_prints_ranked_photos_with_tags_and_exits_1_when_nothing_matches(tmp_path, tag_value, capsys):
    from search.store import Record, TopicNames

    db = tmp_path / "index.sqlite"
    index = SearchIndex(db)
    values = [
        tag_value("sunny", {"beach": 0.9, "sunset": 0.8}),
        tag_value("dim", {"beach": 0.6, "sunset": 0.6}),
    ]
    index.apply([Record("photo-tags", 0, i, v) for i, v in enumerate(values)], TopicNames())
    index.close()

    assert search_main(["beach", "sunset", "--db", str(db), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["photo_id"] for h in lines] == ["sunny", "dim"] and lines[0]["relevance"] == pytest.approx(1.7)
    assert lines[0]["tags"] == [{"tag": "beach", "score": 0.9}, {"tag": "sunset", "score": 0.8}]

    assert search_main(["beach sunset", "--db", str(db)]) == 0
    table = capsys.readouterr().out
    assert table.index("sunny") < table.index("dim") and "beach 0.90" in table and "tagger v1" in table

    assert search_main(["moon", "--db", str(db)]) == 1
    assert "no photo matches 'moon'" in capsys.readouterr().out


def test_markup_in_photo_ids_and_tags_prints_literally(tmp_path, tag_value, capsys):
    from search.store import Record, TopicNames

    db = tmp_path / "index.sqlite"
    index = SearchIndex(db)
    index.apply(
        [Record("photo-tags", 0, 0, tag_value("[/x]", {"beach": 0.9, "[bold]red": 0.8}))], TopicNames()
    )
    index.close()
    assert search_main(["beach", "--db", str(db), "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "[/x]" in out and "[bold]red 0.80" in out
    assert search_main(["[/x] [bold]", "--db", str(db)]) == 1  # words "x" and "bold": nothing matches
    assert "no photo matches '[/x] [bold]'" in capsys.readouterr().out
    assert search_main(["[/]", "--db", str(db)]) == 2
    assert "the query '[/]' has no words" in stderr(capsys)


def test_index_prints_skipped_records_literally(topics, tmp_path, capsys):
    bad = {"photo_id": "[/x]", "model": "m", "model_version": "1", "tags": [{"tag": "[/red]", "score": 2}],
           "uploaded_at": "2026-01-01T00:00:00Z", "tagged_at": "2026-01-01T00:00:00Z"}  # fmt: skip
    produce(topics, topics.tags_topic, [orjson.dumps(bad)])
    assert main(["--once", "--db", str(tmp_path / "index.sqlite")]) == 0
    assert "score of tag '[/red]' is 2, expected 0..1" in stderr(capsys)


def test_search_and_index_explain_bad_input(tmp_path, capsys):
    assert search_main(["beach", "--db", str(tmp_path / "none.sqlite")]) == 2
    err = stderr(capsys)
    assert "no search index at" in err and "build one with `darkroom index --db" in err
    assert search_main(["***", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "has no words to search for" in stderr(capsys)
    assert main(["--once", "--serve"]) == 2
    assert "exclude each other" in stderr(capsys)
    junk = tmp_path / "junk.sqlite"
    junk.write_text("this is not a database" * 100)
    assert main(["--once", "--db", str(junk)]) == 2
    assert "is not a usable search index" in stderr(capsys)
