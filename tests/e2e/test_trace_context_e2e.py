"""W3C trace context through the real embedded stack (Tansu broker, tritonserver, Faust worker with JSON logs):
uploads produced with librdkafka headers, outputs read back with kafka-python, headers and all.

A handful of uploads: one with a ``traceparent`` (its tag event continues that trace), one without (a valid new
trace), one bad upload with custom headers (its dead letter keeps them and continues its trace) and one with a
hostile ``traceparent`` (replaced). A second worker in another consumer group then reads the same records, as a
redelivery would, and must publish byte-identical headers."""

from __future__ import annotations

import shutil
import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from contracts.tracecontext import parse_traceparent
from tools import cli
from tools.embedded import Ports, Stack
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@pytest.fixture(scope="module")
def stack(synthetic_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("trace")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    photos = base / "photos"
    make_photo_set(photos, 1, seed=3, size=(320, 240), split="trace")
    stack = Stack(base / "run", base / "triton_models", Ports.free(), file_roots=[photos],
                  worker_env={"DARKROOM_LOG_FORMAT": "json"})  # fmt: skip
    stack.start()
    yield stack, next(photos.glob("*.jpg"))
    stack.stop()


def upload(photo_id: str, url: str) -> bytes:
    return orjson.dumps({"photo_id": photo_id, "url": url, "uploaded_at": "2026-12-01T00:00:00Z"})


def test_outputs_carry_the_upload_s_trace_and_dead_letters_keep_its_headers(stack, outcome_reader, capsys):
    stack, photo = stack
    run = uuid.uuid4().hex[:6]
    traced, untraced, refused, hostile = (
        f"{kind}-{run}" for kind in ("traced", "untraced", "refused", "hostile")
    )
    custom = [("x-request-id", b"req-42"), ("x-binary", b"\xff\x00\xfe"), ("x-empty", None)]
    producer = Producer({"bootstrap.servers": stack.bootstrap, "acks": "all"})
    producer.produce("photo-uploads", key=traced, value=upload(traced, photo.as_uri()),
                     headers=[("traceparent", TRACEPARENT), ("tracestate", b"vendor=opaque")])  # fmt: skip
    producer.produce("photo-uploads", key=untraced, value=upload(untraced, photo.as_uri()))
    producer.produce("photo-uploads", key=refused, value=upload(refused, "file:///etc/passwd"),
                     headers=[*custom, ("traceparent", TRACEPARENT)])  # fmt: skip
    producer.produce("photo-uploads", key=hostile, value=upload(hostile, "ftp://example.com/a.jpg"),
                     headers=[("traceparent", b"00-\xff" + TRACEPARENT[4:]), *custom[:1]])  # fmt: skip
    assert producer.flush(30) == 0
    reader = outcome_reader(stack.bootstrap)
    reader.wait_for({traced, untraced, refused, hostile}, timeout_s=90, grace_s=0)

    def single(photo_id: str, topic: str) -> tuple[list, dict]:
        [(got, event)] = reader.outcomes[photo_id]
        assert got == topic, (photo_id, event)
        [headers] = reader.headers[photo_id]
        return headers, dict(headers)

    headers, by_name = single(traced, "photo-tags")
    span = parse_traceparent(by_name["traceparent"])
    assert span is not None and span.trace_id == TRACE_ID and span.span_id != PARENT_ID and span.flags == 1
    assert by_name["tracestate"] == b"vendor=opaque" and len(headers) == 2

    headers, by_name = single(untraced, "photo-tags")
    span = parse_traceparent(by_name["traceparent"])
    assert span is not None and span.trace_id != TRACE_ID and len(headers) == 1

    headers, by_name = single(refused, "photo-uploads-dlq")
    assert headers[:3] == custom  # the original headers, in order, a null value and raw bytes included
    span = parse_traceparent(by_name["traceparent"])
    assert span is not None and span.trace_id == TRACE_ID and span.span_id != PARENT_ID

    headers, by_name = single(hostile, "photo-uploads-dlq")
    assert headers[0] == custom[0] and parse_traceparent(by_name["traceparent"]) is not None
    assert b"\xff" not in by_name["traceparent"]

    # JSON log lines about an upload name it and its trace.
    lines = [orjson.loads(line) for line in stack.child("worker").log.read_bytes().splitlines()
             if line.startswith(b"{")]  # fmt: skip
    letters = [e for e in lines if e["message"].startswith("dead letter") and e.get("photo_id") == refused]
    assert letters and all(e["trace_id"] == TRACE_ID for e in letters), letters

    # `darkroom tail` shows each output with its trace.
    assert cli.main(["tail", "--bootstrap", stack.bootstrap, "--from-beginning", "--idle-timeout", "3"]) == 0
    printed = {
        line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line[:4] in ("TAGS", "DLQ ")
    }
    assert printed[traced].startswith(f"TAGS {traced}") and printed[traced].endswith(f"trace {TRACE_ID}")
    assert printed[refused].startswith(f"DLQ  {refused}") and printed[refused].endswith(f"trace {TRACE_ID}")
    assert " trace " in printed[untraced] and TRACE_ID not in printed[untraced]

    # Another consumer group reads the same records, as a redelivery would: the very same headers again.
    first = {pid: list(reader.headers[pid]) for pid in (traced, untraced, refused, hostile)}
    stack.start_worker(
        "replay", web_port=stack.ports.worker_web + 1, env={"DARKROOM_GROUP_ID": f"replay-{run}"}
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not all(len(reader.headers[pid]) >= 2 for pid in first):
        reader.poll(0.5)
    for pid, seen in first.items():
        assert reader.headers[pid] == [seen[0], seen[0]], pid
