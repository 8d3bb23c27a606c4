"""``s3://`` uploads end to end: moto's standalone S3 server as its own process, ``darkroom up`` (the real
broker, tritonserver and worker), photos listed from a bucket prefix, tagged by the worker through the S3
protocol; a missing key and a bucket off the allow-list end as dead letters."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid

import botocore.session
import orjson
import pytest
from confluent_kafka import Producer

from stream.objectstore import S3Options, list_s3_photos
from tools.embedded import Ports
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """``python -m moto.server`` on a free loopback port, the way s3fs starts it for its tests."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto.server did not listen within 30 s")
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="module")
def up(synthetic_model, s3_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("up-s3")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    ports = Ports.free()
    env = {**os.environ, **CREDENTIALS, "DARKROOM_S3_ENDPOINT_URL": s3_server,
           "DARKROOM_S3_ALLOWED_BUCKETS": "photos", "DARKROOM_S3_ADDRESSING_STYLE": "path"}  # fmt: skip
    argv = [sys.executable, "-m", "tools.cli", "up", "--model-repo", str(base / "triton_models"),
            "--run-dir", str(base / "run"), "--kafka-port", str(ports.kafka),
            "--triton-http-port", str(ports.triton_http), "--triton-grpc-port", str(ports.triton_grpc),
            "--triton-metrics-port", str(ports.triton_metrics), "--worker-port", str(ports.worker_web),
            "--web-port", str(ports.web), "--workers", "1"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            seen.append(lines.get(timeout=1))
        except queue.Empty:
            continue
        if seen[-1].strip() == "darkroom ready":
            break
    if not any(line.strip() == "darkroom ready" for line in seen):
        proc.kill()
        pytest.fail("darkroom up did not get ready:\n" + "".join(seen[-30:]))
    yield ports
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_photos_in_a_bucket_are_tagged_and_bad_s3_urls_dead_lettered(up, s3_server, outcome_reader, tmp_path):
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        store = botocore.session.get_session().create_client("s3", endpoint_url=s3_server)
        for bucket in ("photos", "secret"):
            store.create_bucket(Bucket=bucket)
        make_photo_set(tmp_path / "set", 6, seed=5, size=(640, 480), split="s3")
        for photo in sorted((tmp_path / "set").glob("*.jpg")):
            store.put_object(Bucket="photos", Key=f"uploads/2026/{photo.name}", Body=photo.read_bytes())
            store.put_object(Bucket="secret", Key=photo.name, Body=photo.read_bytes())
        store.put_object(Bucket="photos", Key="uploads/2026/notes.txt", Body=b"not a photo")
        urls = list(list_s3_photos("s3://photos/uploads/", S3Options(endpoint_url=s3_server), page_size=4))
    assert len(urls) == 6 and all(u.startswith("s3://photos/uploads/2026/") for u in urls)

    run = uuid.uuid4().hex[:6]
    good = {f"s3-{run}-{i}": url for i, url in enumerate(urls)}
    bad = {f"s3-{run}-missing": ("s3://photos/uploads/2026/gone.jpg", "not_found"),
           f"s3-{run}-secret": (f"s3://secret/{urls[0].rsplit('/', 1)[1]}", "forbidden_url"),
           f"s3-{run}-escape": ("s3://photos/uploads/../../secret/x.jpg", "forbidden_url")}  # fmt: skip
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up.kafka}", "acks": "all"})
    for photo_id, url in {**good, **{pid: url for pid, (url, _) in bad.items()}}.items():
        value = {"photo_id": photo_id, "url": url, "uploaded_at": "2026-12-01T00:00:00Z", "user_tags": []}
        producer.produce("photo-uploads", key=photo_id, value=orjson.dumps(value))
    assert producer.flush(30) == 0
    del producer  # else librdkafka keeps reconnecting to the stopped broker until the session ends

    reader = outcome_reader(f"127.0.0.1:{up.kafka}")
    reader.wait_for(set(good) | set(bad), timeout_s=90)
    for photo_id in good:
        [(topic, event)] = reader.outcomes[photo_id]
        assert topic == "photo-tags", event
        assert event["model_version"] == "1" and all(0.0 <= t["score"] <= 1.0 for t in event["tags"])
    for photo_id, (_, code) in bad.items():
        [(topic, letter)] = reader.outcomes[photo_id]
        assert (topic, letter["error"]) == ("photo-uploads-dlq", code), letter
