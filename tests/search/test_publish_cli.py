"""``darkroom publish``: files, folders, s3:// prefixes and URLs become upload events; bad input is one line."""

from __future__ import annotations

import time
import uuid

import botocore.session
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from moto.server import ThreadedMotoServer
from PIL import Image

from contracts.records import parse_upload
from stream.clients import url_photo_id
from stream.settings import Settings
from tools.cli import main
from tools.embedded import create_topics


def published(bootstrap: str, topic: str, expected: int, wait_s: float = 20.0) -> list[dict]:
    """The values in ``topic`` (every partition, from the start): ``expected`` of them, or what came within
    ``wait_s`` (then a few more seconds, to catch any extra)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    values: list[dict] = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            values.append(orjson.loads(msg.value()))
            if len(values) == expected:
                deadline = min(deadline, time.monotonic() + 2.0)  # anything beyond expected would show now
    consumer.close()
    return values


@pytest.fixture
def topic(broker) -> str:
    name = f"uploads-{uuid.uuid4().hex[:8]}"
    create_topics(broker, Settings(uploads_topic=name))
    return name


def test_files_folders_and_s3_prefixes_become_upload_events(broker, topic, tmp_path, monkeypatch, capsys):
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (32, 24), (10, 200, 30)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a photo")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("DARKROOM_S3_ENDPOINT_URL", f"http://{host}:{port}")
        client = botocore.session.get_session().create_client(
            "s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1"
        )
        client.create_bucket(Bucket="photos")
        for key in ("2026/x.jpg", "2026/y.webp", "2026/readme.md", "2025/z.jpg"):
            client.put_object(Bucket="photos", Key=key, Body=b"bytes")
        argv = ["publish", "--bootstrap", broker, "--topic", topic, "--owner", "ann"]
        assert main([*argv, str(tmp_path), "s3://photos/2026/", "https://example.org/p/q.jpg"]) == 0
    finally:
        server.stop()
    values = published(broker, topic, expected=5)
    urls = sorted(v["url"] for v in values)
    assert urls == sorted(
        [(tmp_path / "a.jpg").as_uri(), (tmp_path / "b.png").as_uri(), "s3://photos/2026/x.jpg",
         "s3://photos/2026/y.webp", "https://example.org/p/q.jpg"]
    )  # fmt: skip
    for value in values:
        parse_upload(orjson.dumps(value))  # each is a valid upload for the worker
        assert value["owner"] == "ann"
    s3 = next(v for v in values if v["url"] == "s3://photos/2026/x.jpg")
    assert s3["photo_id"] == url_photo_id("s3://photos/2026/x.jpg")
    assert "published 5 upload event(s)" in capsys.readouterr().out


def test_a_missing_path_publishes_nothing_and_says_which(broker, topic, tmp_path, capsys):
    Image.new("RGB", (32, 24)).save(tmp_path / "a.jpg")
    code = main(["publish", "--bootstrap", broker, "--topic", topic, str(tmp_path), str(tmp_path / "nope")])
    assert code == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert published(broker, topic, expected=0, wait_s=3.0) == []


def test_an_unreachable_broker_is_one_line_and_exit_2(tmp_path, capsys):
    Image.new("RGB", (32, 24)).save(tmp_path / "a.jpg")
    assert main(["publish", "--bootstrap", "127.0.0.1:9", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Kafka at 127.0.0.1:9" in err and "Traceback" not in err
