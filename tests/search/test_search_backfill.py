"""``darkroom backfill`` on a real Tansu broker: same ids as ``publish``, paced, resumable; clear input errors."""

from __future__ import annotations

import json
import time
import uuid

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from search.backfill import ArchiveError, Pacer, folder_photos, main, manifest_photos
from stream.clients import photo_id_for
from stream.settings import Settings
from tools.embedded import create_topics


def uploads_topic(monkeypatch, broker: str) -> str:
    """A fresh uploads topic per test, so tests never see each other's events."""
    topic = f"uploads-{uuid.uuid4().hex[:8]}"
    create_topics(broker, Settings(uploads_topic=topic))
    monkeypatch.setenv("DARKROOM_UPLOADS_TOPIC", topic)
    return topic


def published(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[dict]:
    """Every value in ``topic`` now: read up to the end offsets (the backfill has flushed, acks=all, before it
    returns), so nothing is waited for by the clock; ``timeout_s`` only bounds a broken broker."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            assert time.monotonic() < deadline, f"topic {topic} has no partitions"
            time.sleep(0.2)
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(parts)
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        values: list[dict] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            assert time.monotonic() < deadline, f"read {len(values)} value(s) of {topic}, not up to {ends}"
            for batch in consumer.poll(timeout_ms=300).values():
                values += [orjson.loads(r.value) for r in batch]
        return values
    finally:
        consumer.close()


def stderr(capsys) -> str:
    """What the command printed to stderr, with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().err.split())


@pytest.fixture
def archive(tmp_path, jpeg):
    paths = [jpeg(f"p{i:02d}.jpg") for i in range(10)]
    manifest = tmp_path / "photos" / "manifest.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"path": p.name, "owner": "u1", "user_tags": ["t"], "labels": ["sea"]}) + "\n"
            for p in paths
        )
    )
    return paths, manifest


def test_folder_and_manifest_give_the_ids_darkroom_publish_gives(archive):
    paths, manifest = archive
    assert [p.photo_id for p in folder_photos(manifest.parent)] == [photo_id_for(p) for p in paths]
    assert [p.photo_id for p in manifest_photos(manifest)] == [photo_id_for(p) for p in paths]


def test_backfill_resumes_where_it_stopped_and_publishes_each_photo_once(
    archive, broker, monkeypatch, tmp_path
):
    paths, manifest = archive
    topic = uploads_topic(monkeypatch, broker)
    state = tmp_path / "state.json"
    argv = ["--manifest", str(manifest), "--bootstrap", broker, "--state", str(state), "--rate", "200"]
    assert main([*argv, "--limit", "4"]) == 0
    assert json.loads(state.read_text())["done"] == 4
    assert main(argv) == 0  # the rest
    assert json.loads(state.read_text()) | {"at": None} == {
        "source": str(manifest),
        "done": 10,
        "total": 10,
        "at": None,
    }
    assert main(argv) == 0  # already complete: publishes nothing
    events = published(broker, topic)
    assert sorted(e["photo_id"] for e in events) == sorted(photo_id_for(p) for p in paths)
    assert {e["url"] for e in events} == {p.resolve().as_uri() for p in paths}
    assert all(e["owner"] == "u1" and e["user_tags"] == ["t"] for e in events)


def test_backfill_is_rate_limited(archive, broker, monkeypatch, tmp_path):
    paths, _ = archive
    uploads_topic(monkeypatch, broker)
    started = time.monotonic()
    assert (
        main(
            [
                "--dir",
                str(paths[0].parent),
                "--bootstrap",
                broker,
                "--state",
                str(tmp_path / "s"),
                "--rate",
                "20",
            ]
        )
        == 0
    )
    assert time.monotonic() - started >= 9 / 20  # 10 events, 1/20 s apart


def test_missing_files_are_skipped_not_published(archive, broker, monkeypatch, tmp_path, capsys):
    paths, manifest = archive
    topic = uploads_topic(monkeypatch, broker)
    paths[3].unlink()
    assert (
        main(
            [
                "--manifest",
                str(manifest),
                "--bootstrap",
                broker,
                "--state",
                str(tmp_path / "s"),
                "--rate",
                "500",
            ]
        )
        == 0
    )
    assert "1 missing file(s) skipped" in stderr(capsys)
    assert photo_id_for(paths[3]) not in {e["photo_id"] for e in published(broker, topic)}


class FakeClock:
    """A monotonic clock that moves only when slept on, or by ``advance``: pacing without timing margins."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_spaces_calls_at_the_rate():
    clock = FakeClock()
    pacer = Pacer(100.0, clock=clock, sleep=clock.sleep)
    for _ in range(21):
        pacer.wait()
    assert clock.now - 1000.0 == pytest.approx(0.2)  # 21 calls: the first at once, then 1/100 s apart
    assert clock.slept == pytest.approx([0.01] * 20)


def test_pacer_does_not_catch_up_a_pause_with_a_burst():
    clock = FakeClock()
    pacer = Pacer(10.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 5.0  # the caller was busy for 50 intervals
    for _ in range(5):
        pacer.wait()
    # at most one interval of credit (two calls at once), not 50: the rest are paced again
    assert clock.slept == pytest.approx([0.1, 0.1, 0.1])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "manifest.jsonl:2: not JSON"),
        ("[1]", "manifest.jsonl:2: expected a JSON object"),
        ('{"owner": "x"}', "manifest.jsonl:2: needs a 'path'"),
        ('{"url": "https://example.com/a.jpg"}', "needs its 'photo_id'"),
        (
            '{"path": "a.jpg", "uploaded_at": "last week"}',
            "manifest.jsonl:2: 'uploaded_at' 'last week' is not RFC 3339",
        ),
    ],
)
def test_bad_manifest_lines_are_named_with_file_and_line(tmp_path, line, message):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"path": "ok.jpg"}\n' + line + "\n")
    with pytest.raises(ArchiveError, match=message):
        list(manifest_photos(manifest))


def test_bad_arguments_exit_2_with_the_reason(tmp_path, capsys):
    assert main(["--dir", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in stderr(capsys)
    assert main(["--dir", str(tmp_path), "--rate", "0"]) == 2
    assert "--rate must be > 0" in stderr(capsys)
    state = tmp_path / "state.json"
    state.write_text('{"source": "/elsewhere", "done": 3}')
    assert main(["--dir", str(tmp_path), "--state", str(state)]) == 2
    assert "belongs to /elsewhere" in stderr(capsys)
