"""`darkroom drift` and `darkroom compare` read their window from a real broker (Tansu, no Triton): every
record of the window counts, although Tansu reports a high watermark behind the records it serves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer

from contracts.edits import edit_value
from contracts.records import rfc3339
from contracts.rollout import Rollout
from stream.settings import Settings
from tests.search.conftest import broker  # noqa: F401  (the session's Tansu broker with every topic)
from tools import drift, rollout

PHOTOS_PER_HOUR = 80
TAGS = {"sky": 0.5, "dog": 0.1, "beach": 0.2}


def _event(pid: str, version: str, tags: list[str], tagged_at: float, shadow: bool = False) -> bytes:
    return orjson.dumps(
        {"photo_id": pid, "model_version": version, "model": "tagger", "uploaded_at": rfc3339(tagged_at - 0.05),
         "tagged_at": rfc3339(tagged_at), "tags": [{"tag": t, "score": 0.9} for t in tags],
         **({"shadow": True} if shadow else {})}
    )  # fmt: skip


def _hours(producer: Producer, topic: str, start: float, hours: range, night: float, rng, prefix: str) -> int:
    sent = 0
    for hour in hours:
        for i in range(PHOTOS_PER_HOUR):
            tags = [t for t, p in TAGS.items() if rng.random() < p]
            if rng.random() < night:
                tags.append("night")
            at = start + hour * 3600 + i * 3600 / PHOTOS_PER_HOUR
            producer.produce(
                topic, key=f"{prefix}-{hour}-{i}", value=_event(f"{prefix}-{hour}-{i}", "7", tags, at)
            )
            sent += 1
        producer.poll(0)
    assert producer.flush(30) == 0
    return sent


def test_drift_is_quiet_on_a_steady_day_and_alarms_when_night_photos_surge(broker: str, capsys) -> None:  # noqa: F811
    settings = Settings()
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    rng = np.random.default_rng(4)
    start = (time.time() // 3600 - 30) * 3600
    steady = _hours(producer, settings.tags_topic, start, range(24), 0.1, rng, "drift")
    argv = ["--bootstrap", broker, "--hours", "2", "--trailing", "24", "--fail-on-alarm", "--version", "7"]
    assert drift.main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{steady} tag events in 24 buckets" in out and "; 0 alarm(s)" in out

    _hours(producer, settings.tags_topic, start, range(24, 25), 0.7, rng, "drift")
    assert drift.main(argv) == 1  # the newest hour alarms
    out = " ".join(capsys.readouterr().out.split())
    assert "; 1 alarm(s)" in out and "night" in out


def test_compare_reads_every_event_of_the_window(broker: str, tmp_path: Path) -> None:  # noqa: F811
    from trainer.export import ServingConfig, _write_config, model_config

    settings = Settings()
    model_dir = tmp_path / "repo" / "tagger"
    for v in ("3", "4"):
        (model_dir / v).mkdir(parents=True)
    _write_config(model_dir, model_config("tagger", "cpu", (64, 64), ServingConfig()))
    rollout.write_rollout(model_dir, Rollout(live="3", shadow="4"))
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 5})
    now = time.time() - 60
    n = 257
    for i in range(n):
        live = ["sky"] + (["dog"] if i % 4 == 0 else [])
        shadow = ["sky"] + (["dog"] if i % 2 == 0 else [])
        producer.produce(
            settings.tags_topic, key=f"cmp-{i}", value=_event(f"cmp-{i}", "3", live, now + i / 100)
        )
        producer.produce(
            settings.shadow_tags_topic,
            key=f"cmp-{i}",
            value=_event(f"cmp-{i}", "4", shadow, now + i / 100 + 0.01, True),
        )
        producer.poll(0)
    # owners add "dog" to 40 photos the shadow tags "dog" (the live version only to every other one)
    for i in range(0, 80, 2):
        producer.produce(
            settings.edits_topic, key=f"cmp-{i}", value=edit_value(f"cmp-{i}", "o", ["dog"], [], 3)
        )
    producer.produce(settings.edits_topic, key="cmp-1", value=b"not an edit")
    assert producer.flush(30) == 0
    out = tmp_path / "compare.json"
    argv = ["--repo", str(model_dir.parent), "--bootstrap", broker, "--minutes", "10", "--json", str(out)]
    assert rollout.compare_main(argv) == 0
    report = json.loads(out.read_text())
    assert report["live_photos"] == report["compared"] == n and report["shadow_missing"] == 0.0
    dog = report["tags"]["dog"]
    assert (dog["live"], dog["shadow"], dog["both"]) == (65, 129, 65)
    assert report["agreement"] == (n - (129 - 65) / 2) / n  # photos with only the shadow's dog agree 1/2
    assert report["edited"] == 40 and report["edits_skipped"] == 1
    assert report["edits"]["3"]["agreement"] == 0.5 and report["edits"]["4"]["agreement"] == 1.0
