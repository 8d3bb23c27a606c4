"""The walking skeleton, end to end on the real embedded broker, the real tritonserver and the real worker,
started the way a user starts them: ``darkroom up`` in the background."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tools.embedded import Ports
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e
INPUTS: set[str] = set()  # every photo_id this module publishes: no output may name another


@pytest.fixture(scope="module")
def up(synthetic_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("up")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    photos = base / "photos"
    photos.mkdir()
    ports = Ports.free()
    argv = [sys.executable, "-m", "tools.cli", "up", "--model-repo", str(base / "triton_models"),
            "--run-dir", str(base / "run"), "--file-root", str(photos),
            "--kafka-port", str(ports.kafka), "--triton-http-port", str(ports.triton_http),
            "--triton-grpc-port", str(ports.triton_grpc), "--triton-metrics-port", str(ports.triton_metrics),
            "--worker-port", str(ports.worker_web), "--web-port", str(ports.web), "--workers", "2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if line.strip() == "darkroom ready":
            break
    else:
        proc.kill()
    if not any(line.strip() == "darkroom ready" for line in seen):
        proc.kill()
        pytest.fail("darkroom up did not get ready:\n" + "".join(seen[-30:]))
    yield {"proc": proc, "ports": ports, "photos": photos, "run": base / "run", "lines": lines, "out": seen}
    if proc.poll() is None:
        proc.kill()


def upload(photo_id: str, url: str) -> bytes:
    return orjson.dumps(
        {"photo_id": photo_id, "url": url, "uploaded_at": "2026-11-29T00:00:00Z", "user_tags": []}
    )


def test_up_prints_endpoints_then_ready(up):
    text = "".join(up["out"])
    assert f"127.0.0.1:{up['ports'].kafka}" in text and f"{up['ports'].triton_grpc}" in text
    for port in (up["ports"].worker_web, up["ports"].worker_web + 1):  # two workers, one consumer group
        assert f"http://127.0.0.1:{port}/metrics" in text
        assert orjson.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5).read()
        )["model_ready"]


def test_upload_from_a_librdkafka_producer_is_tagged(up, outcome_reader):
    make_photo_set(up["photos"] / "one", 1, seed=7, size=(640, 480), split="one")
    photo = next((up["photos"] / "one").glob("*.jpg"))
    photo_id = f"librdkafka-{uuid.uuid4().hex[:6]}"
    INPUTS.add(photo_id)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up['ports'].kafka}", "acks": "all"})
    producer.produce("photo-uploads", key=photo_id, value=upload(photo_id, photo.as_uri()))
    assert producer.flush(30) == 0
    reader = outcome_reader(f"127.0.0.1:{up['ports'].kafka}")
    reader.wait_for({photo_id}, timeout_s=60, grace_s=0)
    [(topic, event)] = reader.outcomes[photo_id]
    assert topic == "photo-tags" and event["model"] == "tagger" and event["model_version"] == "1"
    assert all(0.0 <= t["score"] <= 1.0 for t in event["tags"])


def test_every_upload_good_or_broken_ends_in_exactly_one_outcome(up, outcome_reader):
    manifest = make_photo_set(up["photos"] / "batch", 110, seed=99, size=(640, 480), split="batch")
    truth = {}
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up['ports'].kafka}", "acks": "all"})
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        pid = f"good-{Path(record['path']).stem}"
        truth[pid] = set(record["labels"])
        producer.produce(
            "photo-uploads", key=pid, value=upload(pid, (manifest.parent / record["path"]).as_uri())
        )
    (up["photos"] / "notes.jpg").write_text("this is not an image")
    (up["photos"] / "cut.jpg").write_bytes((manifest.parent / "batch-99-000000.jpg").read_bytes()[:500])
    broken = {
        "bad-json-1": (b"{photo_id: nope", "invalid_event"),
        "bad-json-2": (b'["not", "an", "object"]', "invalid_event"),
        "missing-url": (b'{"photo_id": "missing-url"}', "invalid_event"),
        "missing-file": (upload("missing-file", (up["photos"] / "nope.jpg").as_uri()), "not_found"),
        "not-image": (upload("not-image", (up["photos"] / "notes.jpg").as_uri()), "unsupported_format"),
        "truncated": (upload("truncated", (up["photos"] / "cut.jpg").as_uri()), "decode_failed"),
        "outside-root": (upload("outside-root", "file:///etc/passwd"), "forbidden_url"),
        "ftp": (upload("ftp", "ftp://example.com/a.jpg"), "forbidden_url"),
    }
    for pid, (value, _) in broken.items():
        producer.produce("photo-uploads", key=pid, value=value)
    assert producer.flush(30) == 0
    INPUTS.update(truth, broken)

    reader = outcome_reader(f"127.0.0.1:{up['ports'].kafka}")
    reader.wait_for(set(truth) | set(broken), timeout_s=120)
    assert set(reader.outcomes) <= INPUTS, "an output names a photo that was never uploaded"
    for pid in truth:
        assert [t for t, _ in reader.outcomes[pid]] == ["photo-tags"], pid
    for pid, (_, code) in broken.items():
        [(topic, letter)] = reader.outcomes[pid]
        assert topic == "photo-uploads-dlq" and letter["error"] == code, (pid, letter)
        assert letter["source"]["topic"] == "photo-uploads" and letter["original"]

    predicted = {pid: {t["tag"] for t in reader.outcomes[pid][0][1]["tags"]} for pid in truth}
    hits = sum(len(predicted[p] & truth[p]) for p in truth)
    precision = hits / max(1, sum(len(v) for v in predicted.values()))
    recall = hits / sum(len(v) for v in truth.values())
    chance = sum(len(v) for v in truth.values()) / (15 * len(truth))  # precision of tags drawn at random
    print(
        f"\ntag agreement with known content: precision {precision:.2f}, recall {recall:.2f}, chance {chance:.2f}"
    )
    assert precision >= max(0.7, 2.5 * chance) and recall >= 0.4


def test_an_upload_s_times_come_from_its_record_so_a_redelivery_repeats_them(up, outcome_reader):
    make_photo_set(up["photos"] / "timed", 1, seed=11, size=(320, 240), split="timed")
    photo = next((up["photos"] / "timed").glob("*.jpg"))
    untimed, refused = (f"{kind}-{uuid.uuid4().hex[:6]}" for kind in ("untimed", "refused"))
    INPUTS.update({untimed, refused})
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up['ports'].kafka}", "acks": "all"})
    created_ms = 1764583200123  # the records' CreateTime: 2025-12-01T10:00:00.123Z
    producer.produce(
        "photo-uploads",
        key=untimed,
        timestamp=created_ms,
        value=orjson.dumps({"photo_id": untimed, "url": photo.as_uri()}),
    )  # no uploaded_at
    producer.produce("photo-uploads", key=refused, timestamp=created_ms + 1000,
                     value=orjson.dumps({"photo_id": refused, "url": "file:///etc/passwd"}))  # fmt: skip
    assert producer.flush(30) == 0
    reader = outcome_reader(f"127.0.0.1:{up['ports'].kafka}")
    reader.wait_for({untimed, refused}, timeout_s=60, grace_s=0)
    [(topic, event)] = reader.outcomes[untimed]
    assert topic == "photo-tags" and event["uploaded_at"] == "2025-12-01T10:00:00.123Z"
    assert event["url"] == photo.as_uri()
    [(topic, letter)] = reader.outcomes[refused]
    assert topic == "photo-uploads-dlq" and letter["at"] == "2025-12-01T10:00:01.123Z"


def test_each_workers_metrics_page_follows_the_conventions_and_feeds_the_dashboard(up, outcome_reader):
    """The real /metrics pages, scraped over HTTP once a photo is tagged: every name by the conventions, the
    served model version named, and every metric the service dashboard queries present."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.deploy.test_grafana_dashboard import EXTERNAL, dashboard, exprs, promql_names
    from tests.stream.test_metric_names import STANDARD_PREFIXES, problems

    make_photo_set(up["photos"] / "metrics", 1, seed=11, size=(320, 240), split="metrics")
    photo_id = f"metrics-{uuid.uuid4().hex[:6]}"
    INPUTS.add(photo_id)
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up['ports'].kafka}", "acks": "all"})
    photo = next((up["photos"] / "metrics").glob("*.jpg"))
    producer.produce("photo-uploads", key=photo_id, value=upload(photo_id, photo.as_uri()))
    assert producer.flush(30) == 0
    outcome_reader(f"127.0.0.1:{up['ports'].kafka}").wait_for({photo_id}, timeout_s=60, grace_s=0)
    served, versions = set(), set()
    for port in (up["ports"].worker_web, up["ports"].worker_web + 1):
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        families = [
            f for f in text_string_to_metric_families(text) if not f.name.startswith(STANDARD_PREFIXES)
        ]
        assert not {f.name: problems(f) for f in families if problems(f)}
        served |= {s.name for f in families for s in f.samples} | {f.name for f in families}
        versions |= {(s.labels["model"], s.labels["version"], s.value) for f in families
                     if f.name == "darkroom_model_version_info" for s in f.samples}  # fmt: skip
    assert versions == {("tagger", "1", 1.0)}
    for expr in exprs(dashboard()):
        names, _ = promql_names(expr)
        assert names <= served | set(EXTERNAL), (expr, names - served)


def test_sigterm_stops_every_process(up):
    pids = json.loads((up["run"] / "pids.json").read_text())
    assert set(pids) == {"broker", "triton", "worker", "worker2", "indexer"}
    up["proc"].send_signal(signal.SIGTERM)
    assert up["proc"].wait(timeout=60) == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # reaped by `up`: no such process any more
