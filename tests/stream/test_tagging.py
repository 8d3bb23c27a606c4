"""The tagging stage against a fake stream, a fake Triton and a fake broker: one output per event, each
acknowledged before the batch is done; bad input and inputs the model fails on become dead letters."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest
from PIL import Image

from contracts.records import ErrorCode, PermanentError
from contracts.tensors import ModelInput
from stream.inference import Prediction
from stream.settings import Settings
from stream.tagging import BatchTagger


@dataclass
class FakeBroker:
    """Records what was sent; each send's acknowledgement resolves only when ``ack_all`` is called."""

    sent: list[tuple[str, bytes | None, dict]] = field(default_factory=list)
    acks: list[asyncio.Future] = field(default_factory=list)
    headers: list[list | None] = field(default_factory=list)  # each sent record's headers, in step with sent

    def future(self) -> asyncio.Future:
        ack = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: None, timestamp: None, headers: list
    ) -> asyncio.Future:
        self.sent.append((topic, key, orjson.loads(value)))
        self.headers.append(headers)
        return self.future()

    def ack_all(self) -> None:
        for ack in self.acks:
            if not ack.done():
                ack.set_result(None)


class FakeDlqTopic:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker

    async def send(self, key: bytes | None, value: bytes, headers: list, force: bool) -> asyncio.Future:
        self.broker.sent.append(("dlq", key, orjson.loads(value)))
        self.broker.headers.append(headers)
        return self.broker.future()


def fake_topics(broker: FakeBroker) -> SimpleNamespace:
    """The app's topics as the tagger uses them: tag events straight to the producer, dead letters via the topic."""
    return SimpleNamespace(
        tags=SimpleNamespace(app=SimpleNamespace(producer=broker)), dlq=FakeDlqTopic(broker)
    )


async def process_acking_late(tagger: BatchTagger, broker: FakeBroker, events: list) -> bool:
    """Run ``tagger.process(events)``, holding the broker's acknowledgements until every output was sent and
    0.2 s more; whether the batch counted as done before they came (it must not)."""
    done = asyncio.ensure_future(tagger.process(events))
    while len(broker.sent) < len(events):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    finished_before_acks = done.done()
    broker.ack_all()
    await asyncio.wait_for(done, 10)
    return finished_before_acks


class FakeTriton:
    """Tags every image "red" unless it is blue, which the model fails on (a per-input model error)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def predict(self, images):  # type: ignore[no-untyped-def]
        self.batches.append(len(images))
        return [
            PermanentError(ErrorCode.MODEL_ERROR, "the model failed on this input")
            if image[..., 2].mean() > 200
            else Prediction([("red", 0.9, "n04971313")], "3")
            for image in images
        ]


def event(offset: int, value: bytes, key: str, headers: list | None = None) -> SimpleNamespace:
    """An event as Faust hands it to the agent; the record key is the photo id, as uploads are keyed."""
    message = SimpleNamespace(key=key.encode(), topic="photo-uploads", partition=0, offset=offset,
                              timestamp=1764583200.0 + offset, headers=headers)  # fmt: skip
    return SimpleNamespace(value=value, message=message)


def upload(photo_id: str, path) -> bytes:  # type: ignore[no-untyped-def]
    return orjson.dumps({"photo_id": photo_id, "url": path.as_uri(), "uploaded_at": "2026-01-01T00:00:00Z"})


@pytest.fixture
def photos(tmp_path):
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 250))):
        Image.new("RGB", (64, 48), color).save(tmp_path / f"{name}.png")
    return tmp_path


def test_every_event_ends_as_one_acknowledged_output(photos):
    async def scenario() -> tuple[FakeBroker, FakeTriton, bool]:
        broker = FakeBroker()
        tagger = BatchTagger(Settings(file_roots=str(photos), infer_batch_size=2), fake_topics(broker))  # type: ignore[arg-type]
        tagger.client = FakeTriton()  # type: ignore[assignment]
        tagger.model_input = ModelInput(width=32, height=32, max_batch_size=8)
        events = [
            event(0, upload("p-red", photos / "red.png"), "p-red"),
            event(1, b"{not json", "p-garbage"),
            event(2, upload("p-missing", photos / "nope.png"), "p-missing"),
            event(3, upload("p-blue", photos / "blue.png"), "p-blue"),
            event(4, upload("p-red-2", photos / "red.png"), "p-red-2"),
        ]
        finished_before_acks = await process_acking_late(tagger, broker, events)
        return broker, tagger.client, finished_before_acks  # type: ignore[return-value]

    broker, triton, finished_before_acks = asyncio.run(scenario())
    assert not finished_before_acks, "the batch counted as done before the broker acknowledged its outputs"
    outputs = {value.get("photo_id"): (topic, value) for topic, _, value in broker.sent}
    assert len(broker.sent) == 5 and len(outputs) == 5
    assert outputs["p-red"][0] == "photo-tags" and outputs["p-red"][1]["tags"] == [
        {"tag": "red", "score": 0.9, "id": "n04971313"}
    ]
    assert outputs["p-red"][1]["model_version"] == "3" and outputs["p-red-2"][0] == "photo-tags"
    assert (
        outputs["p-missing"] == ("dlq", outputs["p-missing"][1])
        and outputs["p-missing"][1]["error"] == "not_found"
    )
    assert outputs["p-blue"][1]["error"] == "model_error"
    bad = next(
        value for topic, _, value in broker.sent if topic == "dlq" and value["error"] == "invalid_event"
    )
    assert bad["source"] == {"topic": "photo-uploads", "partition": 0, "offset": 1}
    assert sum(triton.batches) == 3  # only decoded photos reach Triton
