"""The tagging stage carries an upload's trace context to its output (fake stream, Triton and broker, as in
test_tagging): tag events and dead letters continue the upload's trace, dead letters keep the original headers,
a redelivered batch repeats the very same headers, and log lines about an upload name its trace."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import orjson
import pytest
from PIL import Image

from contracts.tensors import ModelInput
from contracts.tracecontext import parse_traceparent
from stream.logs import JsonFormatter
from stream.settings import Settings
from stream.tagging import BatchTagger
from tests.stream.test_tagging import FakeBroker, FakeTriton, event, fake_topics, upload

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()


def run_batch(folder: Path, events: list) -> FakeBroker:  # type: ignore[no-untyped-def]
    async def scenario() -> FakeBroker:
        broker = FakeBroker()
        topics = fake_topics(broker)
        tagger = BatchTagger(
            Settings(file_roots=str(folder), allow_loopback_http=True, fetch_attempts=2), topics
        )  # type: ignore[arg-type]
        tagger.client = FakeTriton()  # type: ignore[assignment]
        tagger.model_input = ModelInput(width=32, height=32, max_batch_size=8)
        done = asyncio.ensure_future(tagger.process(events))
        while len(broker.sent) < len(events):
            await asyncio.sleep(0.01)
        broker.ack_all()
        await asyncio.wait_for(done, 10)
        return broker

    return asyncio.run(scenario())


def batch(folder: Path, port: int) -> list:
    return [
        event(0, upload("traced", folder / "red.png"), "traced", [("traceparent", PARENT), ("tracestate", b"x=1")]),
        event(1, upload("untraced", folder / "red.png"), "untraced"),
        event(2, b"{not json", "broken", [("source", b"app"), ("traceparent", PARENT), ("empty", None)]),
        event(3, upload("blue", folder / "blue.png"), "blue", [("traceparent", b"00-garbage")]),
        event(4, orjson.dumps({"photo_id": "unreachable", "url": f"http://127.0.0.1:{port}/a.jpg",
                               "uploaded_at": "2026-01-01T00:00:00Z"}), "unreachable", [("traceparent", PARENT)]),
    ]  # fmt: skip


def test_outputs_continue_the_upload_s_trace_and_a_redelivery_repeats_their_headers(
    tagged_photos, closed_port, caplog
):
    with caplog.at_level(logging.INFO, logger="stream.tagging"):
        broker = run_batch(tagged_photos, batch(tagged_photos, closed_port))
    out = {value["photo_id"]: (topic, dict(headers), headers) for (topic, _, value), headers in
           zip(broker.sent, broker.headers, strict=True)}  # fmt: skip
    assert set(out) == {"traced", "untraced", "broken", "blue", "unreachable"}

    topic, traced, _ = out["traced"]
    parent = parse_traceparent(traced["traceparent"])
    assert topic == "photo-tags" and parent is not None and parent.trace_id == TRACE_ID
    assert parent.span_id != "00f067aa0ba902b7" and parent.flags == 1 and traced["tracestate"] == b"x=1"

    topic, untraced, _ = out["untraced"]
    assert topic == "photo-tags" and list(untraced) == ["traceparent"]
    assert parse_traceparent(untraced["traceparent"]).trace_id != TRACE_ID  # type: ignore[union-attr]

    topic, _, letter = out["broken"]
    assert topic == "dlq" and [name for name, _ in letter] == ["source", "empty", "traceparent"]
    assert letter[:2] == [("source", b"app"), ("empty", None)]
    assert parse_traceparent(letter[2][1]).trace_id == TRACE_ID  # type: ignore[union-attr]

    topic, blue, _ = out["blue"]  # the model fails on it: a dead letter; its bad traceparent is replaced
    assert topic == "dlq" and list(blue) == ["traceparent"] and blue["traceparent"] != b"00-garbage"

    again = run_batch(tagged_photos, batch(tagged_photos, closed_port))  # the same records delivered again
    assert sorted(again.headers, key=repr) == sorted(broker.headers, key=repr)

    letters = [r for r in caplog.records if r.getMessage().startswith("dead letter")]
    assert {(r.photo_id, r.trace_id) for r in letters} == {  # type: ignore[attr-defined]
        ("broken", TRACE_ID),
        ("blue", parse_traceparent(blue["traceparent"]).trace_id),  # type: ignore[union-attr]
        ("unreachable", TRACE_ID),
    }
    line = JsonFormatter().format(letters[0])
    assert f'"trace_id":"{letters[0].trace_id}"' in line and '"photo_id"' in line  # type: ignore[attr-defined]

    retries = [r for r in caplog.records if "; retry" in r.getMessage()]
    assert retries and {(r.photo_id, r.trace_id) for r in retries} == {("unreachable", TRACE_ID)}  # type: ignore[attr-defined]


@pytest.fixture
def tagged_photos(tmp_path: Path) -> Path:
    """A red photo (tagged by FakeTriton) and a blue one (the model fails on it)."""
    for name, color in (("red", (220, 20, 20)), ("blue", (20, 20, 250))):
        Image.new("RGB", (64, 48), color).save(tmp_path / f"{name}.png")
    return tmp_path


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed
