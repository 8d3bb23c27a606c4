"""Embeddings on the real stack: with ``DARKROOM_PUBLISH_EMBEDDINGS`` on, every tagged photo has exactly one
``photo-embeddings`` record, equal (within float16) to the version's ONNX EMBEDDING computed offline, and
its tag event is what it would be without them; with the setting off, a worker publishes none."""

from __future__ import annotations

import signal

import numpy as np
import onnxruntime as ort
import orjson
import pytest
from confluent_kafka import Producer

from contracts.embeddings import parse_embedding
from contracts.photos import decode
from stream.settings import Settings
from tools.embedded import Ports, Stack
from tools.feedback import read_embeddings
from trainer.checkpoint import load_tagger
from trainer.data.synthetic import make_photo_set
from trainer.export import export_onnx
from trainer.serving.tagger_backend import select_tags

pytestmark = pytest.mark.e2e

TOPICS = ("photo-tags", "photo-uploads-dlq", "photo-embeddings")
ON, OFF = 5, 3  # photos tagged with the setting on, then off


def _publish(producer: Producer, ids_files: dict) -> None:
    for pid, path in ids_files.items():
        value = {"photo_id": pid, "url": path.as_uri(), "uploaded_at": "2026-12-02T00:00:00Z"}
        producer.produce("photo-uploads", key=pid, value=orjson.dumps(value))
    assert producer.flush(30) == 0


def _wait(reader, ids: set[str], topics: set[str], timeout_s: float = 150.0) -> None:
    """Until every id has an outcome on each of ``topics``, then a few seconds more for duplicates."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen = {(pid, t) for pid in ids for t, _ in reader.outcomes.get(pid, [])}
        if all((pid, t) in seen for pid in ids for t in topics):
            break
        reader.poll(0.5)
    reader.poll(3.0)


def test_each_tagged_photo_has_one_embedding_equal_to_the_offline_onnx_one(
    checkpoint, model_repo, tmp_path, outcome_reader
):
    manifest = make_photo_set(tmp_path / "photos", ON + OFF, seed=17, size=(160, 120), split="emb")
    files = sorted(manifest.parent.glob("*.jpg"))
    on = {f"emb-on-{i}": f for i, f in enumerate(files[:ON])}
    off = {f"emb-off-{i}": f for i, f in enumerate(files[ON:])}
    stack = Stack(
        tmp_path / "run", model_repo, Ports.free(), file_roots=[tmp_path / "photos"],
        worker_env={"DARKROOM_PUBLISH_EMBEDDINGS": "true"},
    )  # fmt: skip
    stack.start()
    try:
        producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all"})
        reader = outcome_reader(stack.bootstrap, topics=TOPICS)
        _publish(producer, on)
        _wait(reader, set(on), {"photo-tags", "photo-embeddings"})
        assert stack.kill_child("worker", signal.SIGTERM) == 0
        stack.start_worker(env={"DARKROOM_PUBLISH_EMBEDDINGS": "false"})
        _publish(producer, off)
        _wait(reader, set(off), {"photo-tags"})
        assert stack.failed_child() is None
        read = read_embeddings(
            stack.bootstrap, "photo-embeddings", "1", idle_timeout_s=2.0
        )  # training's reader
    finally:
        stack.stop()

    version_dir = model_repo / "tagger" / "1"
    size = (checkpoint["input_size"][1], checkpoint["input_size"][0])
    images = np.stack([decode(f.read_bytes(), size, Settings().max_image_pixels) for f in files])
    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    scores, embeddings = session.run(["SCORES", "EMBEDDING"], {"IMAGE": images})
    vocab = orjson.loads((version_dir / "vocab.json").read_bytes())
    thresholds = np.asarray(orjson.loads((version_dir / "thresholds.json").read_bytes())["thresholds"])
    want_tags = select_tags(scores, vocab["tags"], thresholds.astype(np.float32))
    assert any(want_tags), "the photos must get some tags for the comparison to mean anything"

    for i, pid in enumerate([*on, *off]):
        outcomes = reader.outcomes[pid]
        [tag_event] = [e for t, e in outcomes if t == "photo-tags"]
        assert [t["tag"] for t in tag_event["tags"]] == [t for t, _ in want_tags[i]], pid  # unchanged
        records = [e for t, e in outcomes if t == "photo-embeddings"]
        if pid in off:
            assert records == [], f"{pid}: the setting is off, yet an embedding was published"
            continue
        [value] = records
        record = parse_embedding(orjson.dumps(value))  # the strict parser accepts what the worker wrote
        assert (record.photo_id, record.model_version) == (pid, tag_event["model_version"]) == (pid, "1")
        want = embeddings[i].astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(record.vector.astype(np.float32), want, rtol=2e-3, atol=2e-3)
    assert set(reader.outcomes) == set(on) | set(off)
    assert read.records == ON and not read.skipped and set(read.vectors) == set(on)
    for pid in on:
        [value] = [e for t, e in reader.outcomes[pid] if t == "photo-embeddings"]
        np.testing.assert_array_equal(read.vectors[pid], parse_embedding(orjson.dumps(value)).vector)


def test_a_version_exported_before_embeddings_still_tags_and_publishes_none(
    checkpoint, model_repo, tmp_path, outcome_reader
):
    """The config declares EMBEDDING (a newer export wrote it) but version 1's graph has none, as a version
    exported before embeddings existed: the worker asks, gets no EMBEDDING, tags as before, logs it once."""
    version_dir = model_repo / "tagger" / "1"
    export_onnx(load_tagger(checkpoint), version_dir / "model.onnx", tuple(checkpoint["input_size"]))
    manifest = make_photo_set(tmp_path / "photos", 3, seed=18, size=(160, 120), split="old")
    photos = {f"old-{i}": f for i, f in enumerate(sorted(manifest.parent.glob("*.jpg")))}
    stack = Stack(
        tmp_path / "run", model_repo, Ports.free(), file_roots=[tmp_path / "photos"],
        worker_env={"DARKROOM_PUBLISH_EMBEDDINGS": "true"},
    )  # fmt: skip
    stack.start()
    try:
        reader = outcome_reader(stack.bootstrap, topics=TOPICS)
        _publish(Producer({"bootstrap.servers": stack.bootstrap, "acks": "all"}), photos)
        _wait(reader, set(photos), {"photo-tags"})
        assert stack.failed_child() is None
        log = stack.child("worker").log.read_text(errors="replace")
    finally:
        stack.stop()
    for pid in photos:
        assert [t for t, _ in reader.outcomes[pid]] == ["photo-tags"], (pid, reader.outcomes[pid])
    assert log.count("answers without an embedding") == 1, log[-3000:]
