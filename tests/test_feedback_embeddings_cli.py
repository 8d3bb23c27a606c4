"""``darkroom feedback train --embeddings-from-topic``: the features come from embedding records on a real
broker (bad records skipped and counted), and records from another backbone are refused in one line."""

from __future__ import annotations

import numpy as np
import torch
from confluent_kafka import Producer

from contracts.embeddings import embedding_record
from stream.settings import Settings
from tests.search.conftest import broker  # noqa: F401 - the fixture: a real Tansu broker
from tests.test_feedback_cli import world  # noqa: F401 - the fixture: a tiny collection and checkpoint
from tools import feedback
from trainer.checkpoint import load_tagger
from trainer.finetune import extract_features
from trainer.vocab.vocabulary import synthetic_vocabulary


def _produce(bootstrap: str, values: list[tuple[str, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for key, value in values:
        producer.produce(Settings().embeddings_topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_feedback_train_reads_features_from_the_topic_and_refuses_another_backbone(
    world,  # noqa: F811
    broker,  # noqa: F811
    tmp_path,
    capsys,
    monkeypatch,
):
    root, manifest = world
    monkeypatch.setenv("DARKROOM_KAFKA_BOOTSTRAP", broker)
    collection = feedback.load_collection(manifest, synthetic_vocabulary(), 32, None)
    own = extract_features(
        load_tagger(torch.load(root / "checkpoint.pt", weights_only=False)), collection.images
    )
    half = collection.photo_ids[::2]
    _produce(broker, [(p, embedding_record(p, "7", own[2 * i, 0])) for i, p in enumerate(half)])
    _produce(broker, [("x", b"\xff not a record"), ("y", embedding_record("y", "6", own[0, 0]))])
    rng = np.random.default_rng(0)
    _produce(broker, [(p, embedding_record(p, "8", rng.normal(size=own.shape[-1]))) for p in half])

    common = ["train", "--index", str(root / "index.sqlite"), "--manifest", str(manifest), "--checkpoint",
              str(root / "checkpoint.pt"), "--repo", str(tmp_path / "repo"), "--votes", "2"]  # fmt: skip
    assert feedback.main([*common, "--out", str(tmp_path / "a"), "--embeddings-from-topic", "7"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"embeddings: {len(half)} of {len(collection.photo_ids)} photo(s)" in err, err
    assert "1 invalid skipped" in err, err
    assert (tmp_path / "a" / "feedback.json").is_file()

    assert feedback.main([*common, "--out", str(tmp_path / "b"), "--embeddings-from-topic", "8"]) == 2
    assert "has another backbone" in " ".join(capsys.readouterr().err.split())
    assert feedback.main([*common, "--out", str(tmp_path / "c"), "--embeddings-from-topic", "v7"]) == 2
    assert "give a model version number" in " ".join(capsys.readouterr().err.split())
