"""A record whose header *name* is not UTF-8, on the real stack (Tansu, tritonserver, Faust worker, search
indexer): it reaches the worker and ends as exactly one output, and the uploads after it in the same
partition (in its own record batch and in the next one) are tagged as usual.

The hostile client is kafka-python's producer handed a ``str`` whose ``encode`` gives raw bytes: a valid
record batch (CRC and all) whose header name is ``x-\\xff\\xfe``, as any client writing raw bytes could make.
Before stream/tolerant_records.py, aiokafka's fetcher raised UnicodeDecodeError on that batch at every fetch:
no output for it or for anything after it on its partition (the test timed out waiting for them)."""

from __future__ import annotations

import shutil
import time
import uuid

import orjson
import pytest
from kafka import KafkaProducer

from contracts.tracecontext import QUOTED_HEADER_PREFIX, original_header_name
from search.store import SearchIndex
from stream.clients import follow
from tools.embedded import Ports, Stack
from trainer.data.synthetic import make_photo_set

pytestmark = pytest.mark.e2e
BAD_NAME = b"x-\xff\xfe"


class RawName(str):
    """A header name that a str-checking client accepts and writes as arbitrary bytes."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawName:
        name = super().__new__(cls, raw.decode("latin-1"))
        name.raw = raw
        return name

    def encode(self, *args: object, **kwargs: object) -> bytes:  # type: ignore[override]
        return self.raw


def upload(photo_id: str, url: str) -> bytes:
    return orjson.dumps({"photo_id": photo_id, "url": url, "uploaded_at": "2026-12-01T00:00:00Z"})


@pytest.fixture(scope="module")
def stack(synthetic_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("badheader")
    shutil.copytree(synthetic_model / "repo", base / "triton_models")
    photos = base / "photos"
    make_photo_set(photos, 1, seed=5, size=(320, 240), split="badheader")
    stack = Stack(base / "run", base / "triton_models", Ports.free(), file_roots=[photos], with_indexer=True)
    stack.start()
    yield stack, next(photos.glob("*.jpg"))
    stack.stop()


def test_a_header_name_that_is_not_utf8_becomes_one_output_and_the_rest_flows(stack, outcome_reader):
    stack, photo = stack
    run = uuid.uuid4().hex[:6]
    tagged, refused = f"badname-ok-{run}", f"badname-refused-{run}"
    after = [f"after-{i}-{run}" for i in range(4)]
    bad = [(RawName(BAD_NAME), b"raw value \xff"), ("x-fine", b"1")]
    # One partition, so the records after the bad ones are behind them; linger makes one batch per flush.
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=200)
    send = lambda pid, url, headers=None: producer.send(  # noqa: E731
        "photo-uploads", key=pid.encode(), value=upload(pid, url), headers=headers, partition=0
    )
    send(tagged, photo.as_uri(), bad)  # a valid upload: a bad header name harms nothing
    send(after[0], photo.as_uri())
    send(after[1], photo.as_uri())
    producer.flush(30)
    send(refused, "file:///etc/passwd", bad)  # a refused upload: its dead letter keeps the header
    send(after[2], photo.as_uri())
    producer.flush(30)
    send(after[3], photo.as_uri())
    producer.flush(30)
    producer.close()

    reader = outcome_reader(stack.bootstrap)
    everything = {tagged, refused, *after}
    reader.wait_for(everything, timeout_s=90, grace_s=3)
    assert stack.failed_child() is None, stack.failed_child()
    assert everything <= set(reader.outcomes), f"no output for {sorted(everything - set(reader.outcomes))}"
    for pid in everything:
        assert len(reader.outcomes[pid]) == 1, (pid, reader.outcomes[pid])  # exactly one output each
        want = "photo-uploads-dlq" if pid == refused else "photo-tags"
        assert reader.outcomes[pid][0][0] == want, (pid, reader.outcomes[pid])
    assert reader.outcomes[refused][0][1].get("error"), reader.outcomes[refused]
    worker_log = stack.child("worker").log.read_text(errors="replace")
    assert "a header name is not UTF-8 (after " in worker_log  # the C reader did raise

    # The dead letter (read by kafka-python, whose parser is as strict as aiokafka's) keeps the header with
    # its value as it was and its raw name recoverable; the header after it is untouched.
    [letter_headers] = reader.headers[refused]
    assert letter_headers[:2] == [(QUOTED_HEADER_PREFIX + "x-%FF%FE", b"raw value \xff"), ("x-fine", b"1")]
    assert original_header_name(letter_headers[0][0]) == BAD_NAME

    # `darkroom tail`'s reader (librdkafka) sees the dead letter too.
    seen = {
        orjson.loads(v)["photo_id"] for _, _, v in follow(stack.bootstrap, ["photo-uploads-dlq"], True, 5)
    }
    assert refused in seen

    # The search indexer (librdkafka, reading the uploads topic too) went on and indexed the tagged photos.
    deadline = time.monotonic() + 60
    indexed: set[str] = set()
    want = {tagged, *after}
    while time.monotonic() < deadline and not want <= indexed:
        assert stack.failed_child() is None, stack.failed_child()
        if stack.index_db.exists():
            index = SearchIndex(stack.index_db, readonly=True)
            try:
                indexed = {pid for pid in want if index.photo(pid) is not None}
            finally:
                index.close()
        time.sleep(0.5)
    assert want <= indexed, f"not indexed: {sorted(want - indexed)}"
