"""With ``publish_embeddings`` on, each tagged photo's embedding record goes out with its tag event and is
acknowledged before the batch counts as done; a version answering without one publishes none."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from contracts.embeddings import parse_embedding
from contracts.tensors import ModelInput
from stream.inference import Prediction
from stream.settings import Settings
from stream.tagging import BatchTagger
from tests.stream.test_tagging import (  # noqa: F401 - photos is a fixture
    FakeBroker,
    event,
    fake_topics,
    photos,
    process_acking_late,
    upload,
)

VECTOR = np.linspace(-1, 1, 16).astype(np.float16)


class EmbeddingTriton:
    """Tags every image "red" with an embedding, except under version "2", which has none."""

    embeddings = True  # the model's config declares EMBEDDING

    def __init__(self, version: str) -> None:
        self.version = version

    async def predict(self, images):  # type: ignore[no-untyped-def]
        vector = VECTOR if self.version == "3" else None
        return [Prediction([("red", 0.9)], self.version, vector) for _ in images]


def _run(folder, version: str) -> tuple[FakeBroker, bool]:  # type: ignore[no-untyped-def]
    async def scenario() -> tuple[FakeBroker, bool]:
        broker = FakeBroker()
        topics = fake_topics(broker)
        settings = Settings(file_roots=str(folder), publish_embeddings=True)
        tagger = BatchTagger(settings, topics)  # type: ignore[arg-type]
        tagger.client = EmbeddingTriton(version)  # type: ignore[assignment]
        tagger.model_input = ModelInput(width=32, height=32, max_batch_size=8)
        events = [event(i, upload(f"p{i}", folder / "red.png"), f"p{i}") for i in range(3)]
        return broker, await process_acking_late(tagger, broker, events)

    return asyncio.run(scenario())


def test_each_tag_event_has_its_embedding_acknowledged_before_the_batch_is_done(photos) -> None:  # noqa: F811
    broker, finished_before_acks = _run(photos, "3")
    assert not finished_before_acks
    tags = [v["photo_id"] for t, _, v in broker.sent if t == "photo-tags"]
    records = [(k, v) for t, k, v in broker.sent if t == "photo-embeddings"]
    assert sorted(tags) == ["p0", "p1", "p2"] and len(records) == 3
    for key, value in records:
        record = parse_embedding(orjson.dumps(value))
        assert key == record.photo_id.encode() and record.model_version == "3"
        np.testing.assert_array_equal(record.vector, VECTOR)


def test_a_version_without_embeddings_publishes_only_tag_events(photos) -> None:  # noqa: F811
    broker, _ = _run(photos, "2")
    assert [t for t, _, _ in broker.sent] == ["photo-tags"] * 3
