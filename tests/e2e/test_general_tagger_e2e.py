"""A fresh clone's ``darkroom up``: with no model in the repository it serves the general tagger, and real
photos come back from the real tritonserver with the same tags (and stable ids) as PyTorch gives them."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from tools.embedded import Ports
from trainer.checkpoint import load_tagger
from trainer.general.model import general_checkpoint
from trainer.general.samples import classify, decode_for, sample_photos
from trainer.serving.tagger_backend import select_tags

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fresh_up(tmp_path_factory):
    """``darkroom up`` on an empty model repository (as after ``git clone``); stopped with SIGTERM after."""
    base = tmp_path_factory.mktemp("fresh")
    photos = base / "photos"
    photos.mkdir()
    (base / "triton_models").mkdir()  # as in a fresh clone: the folder with its README, no model
    (base / "triton_models" / "README.md").write_text("the Triton model repository\n")
    ports = Ports.free()
    argv = [sys.executable, "-m", "tools.cli", "up", "--model-repo", str(base / "triton_models"),
            "--run-dir", str(base / "run"), "--file-root", str(photos), "--workers", "1", "--no-indexer",
            "--kafka-port", str(ports.kafka), "--triton-http-port", str(ports.triton_http),
            "--triton-grpc-port", str(ports.triton_grpc), "--triton-metrics-port", str(ports.triton_metrics),
            "--worker-port", str(ports.worker_web), "--web-port", str(ports.web)]  # fmt: skip
    log = (base / "up.log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while "darkroom ready" not in (base / "up.log").read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("darkroom up did not get ready:\n" + (base / "up.log").read_text()[-3000:])
        time.sleep(1)
    yield {"ports": ports, "photos": photos, "repo": base / "triton_models", "log": base / "up.log"}
    proc.terminate()
    proc.wait(60)


def test_fresh_up_serves_the_general_tagger_and_matches_pytorch(fresh_up, outcome_reader):
    assert "added the general tagger" in " ".join(fresh_up["log"].read_text().split())
    assert (fresh_up["repo"] / "tagger" / "1" / "model.onnx").is_file()
    photos = sample_photos()
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{fresh_up['ports'].kafka}", "acks": "all"})
    for name, photo in photos.items():
        path = fresh_up["photos"] / f"{name}.png"
        path.write_bytes(photo)
        value = {
            "photo_id": name,
            "url": path.as_uri(),
            "uploaded_at": "2026-12-01T00:00:00Z",
            "user_tags": [],
        }
        producer.produce("photo-uploads", key=name, value=orjson.dumps(value))
    assert producer.flush(30) == 0
    reader = outcome_reader(f"127.0.0.1:{fresh_up['ports'].kafka}")
    reader.wait_for(set(photos), timeout_s=120, grace_s=0)

    checkpoint = general_checkpoint()
    images = np.stack([decode_for(checkpoint, photo) for photo in photos.values()])
    _, scores = classify(load_tagger(checkpoint), images)
    thresholds = np.asarray(checkpoint["thresholds"], dtype=np.float32)
    expected = select_tags(scores, checkpoint["vocab"]["tags"], thresholds, checkpoint["vocab"]["ids"])
    for name, want in zip(photos, expected, strict=True):
        [(topic, event)] = reader.outcomes[name]
        assert topic == "photo-tags" and event["model_version"] == "1", (name, event)
        assert [(t["tag"], t["id"]) for t in event["tags"]] == [(t, i) for t, _, i in want], name
        np.testing.assert_allclose([t["score"] for t in event["tags"]], [s for _, s, _ in want], atol=2e-3)
    served = {name: {t["tag"] for t in reader.outcomes[name][0][1]["tags"]} for name in photos}
    assert "cat" in served["chelsea"] and "coffee" in served["coffee"] and "flower" in served["flower"]
