"""Internal origins and a proxy end to end: ``darkroom up`` (the real broker, tritonserver and worker) with
``DARKROOM_ALLOWED_ORIGINS`` and ``HTTP_PROXY`` set the way a site sets them, the loopback development
setting off. Photos on an allow-listed origin and behind the proxy are tagged; a redirect to the metadata
address, an unlisted private address and an internal name are dead letters, and never reach the proxy."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from tests.stream.origin_servers import ForwardProxy, PhotoOrigin
from tools.embedded import Ports
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """The site's photo origin (on 127.0.0.1, allow-listed by CIDR) and its egress proxy, which alone knows
    the name ``photos.test``."""
    folder = tmp_path_factory.mktemp("origin")
    make_photo_set(folder, 6, seed=11, size=(640, 480), split="origin")
    origin = PhotoOrigin(photos={f"/{p.name}": p.read_bytes() for p in sorted(folder.glob("*.jpg"))})
    proxy = ForwardProxy(names={"photos.test": "127.0.0.1"})
    yield origin, proxy
    origin.close()
    proxy.close()


@pytest.fixture(scope="module")
def up(synthetic_model, sites, tmp_path_factory):
    _, proxy = sites
    base = tmp_path_factory.mktemp("up-origins")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    ports = Ports.free()
    env = {**os.environ, "DARKROOM_ALLOWED_ORIGINS": "127.0.0.0/8", "DARKROOM_ALLOW_LOOPBACK_HTTP": "false",
           "HTTP_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "127.0.0.1,localhost"}  # fmt: skip
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


def test_allowed_origins_and_the_proxy_are_tagged_and_internal_targets_dead_lettered(
    up, sites, outcome_reader
):
    origin, proxy = sites
    names = sorted(origin.photos)
    run = uuid.uuid4().hex[:6]
    direct = {f"in-{run}-{i}": f"http://127.0.0.1:{origin.port}{name}" for i, name in enumerate(names[:4])}
    proxied = {f"px-{run}-{i}": f"http://photos.test:{origin.port}{name}" for i, name in enumerate(names[4:])}
    metadata = urllib.parse.quote("http://169.254.169.254/latest/meta-data/", safe="")
    bad = {f"md-{run}": f"http://127.0.0.1:{origin.port}/redirect?to={metadata}",
           f"pv-{run}": "http://10.1.2.3/a.jpg", f"nm-{run}": "http://metadata/computeMetadata/v1/"}  # fmt: skip
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{up.kafka}", "acks": "all"})
    for photo_id, url in {**direct, **proxied, **bad}.items():
        value = {"photo_id": photo_id, "url": url, "uploaded_at": "2026-12-02T00:00:00Z", "user_tags": []}
        producer.produce("photo-uploads", key=photo_id, value=orjson.dumps(value))
    assert producer.flush(30) == 0
    del producer  # else librdkafka keeps reconnecting to the stopped broker until the session ends

    reader = outcome_reader(f"127.0.0.1:{up.kafka}")
    reader.wait_for(set(direct) | set(proxied) | set(bad), timeout_s=90)
    for photo_id in {**direct, **proxied}:
        [(topic, event)] = reader.outcomes[photo_id]
        assert topic == "photo-tags", event
    for photo_id in bad:
        [(topic, letter)] = reader.outcomes[photo_id]
        assert (topic, letter["error"]) == ("photo-uploads-dlq", "forbidden_url"), letter
    assert sorted(target for method, target, _ in proxy.requests if method == "GET") == sorted(
        proxied.values()
    )
    assert all("photos.test" in target for _, target, _ in proxy.requests), proxy.requests
