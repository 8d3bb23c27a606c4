"""The Triton client's answers: transient failures retried, unusable answers narrowed to the inputs they
come from and quarantined as ``model_error``, the rest tagged. The server is a fake gRPC result per call."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
from tritonclient.utils import InferenceServerException

from contracts.records import ErrorCode, PermanentError
from stream import inference
from stream.inference import ModelAnswerError, Prediction, TaggerClient, parse_answer

OK, FAILS, BAD_JSON, DROPS_ROW, NO_OUTPUT, NOT_PAIRS = 0, 11, 12, 13, 14, 15
GOOD_ROW = orjson.dumps([["beach", 0.9], ["sunset", 0.5]])


class FakeResult:
    """What ``InferenceServerClient.infer`` returns: the model version and the TAGS output."""

    class _Response:
        def __init__(self, version: str) -> None:
            self.model_version = version

    def __init__(self, tags: np.ndarray | None, version: str = "7") -> None:
        self.tags = tags
        self.version = version

    def get_response(self) -> _Response:
        return self._Response(self.version)

    def as_numpy(self, name: str) -> np.ndarray | None:
        assert name == inference.TAGS_OUTPUT
        return self.tags


class FakeTriton(TaggerClient):
    """A client whose server answers by the first pixel of each image (the markers above); ``broken``
    makes every request fail, a blank image included, and ``unavailable`` fails the next calls transiently."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:1", "tagger", model_error_attempts=3)
        self.requests: list[list[int]] = []
        self.broken = False
        self.unavailable = 0

    async def _infer_once(self, images: np.ndarray) -> FakeResult:
        markers = [int(image[0, 0, 0]) for image in images]
        self.requests.append(markers)
        if self.unavailable:
            self.unavailable -= 1
            raise InferenceServerException("connection refused", status="StatusCode.UNAVAILABLE")
        if self.broken or FAILS in markers:
            raise InferenceServerException("tagger: cannot score", status="StatusCode.INTERNAL")
        if NO_OUTPUT in markers:
            return FakeResult(None)
        rows = [
            b"{not json" if m == BAD_JSON else b'[["beach"]]' if m == NOT_PAIRS else GOOD_ROW for m in markers
        ]
        if DROPS_ROW in markers:
            rows = rows[:-1]
        return FakeResult(np.array([[r] for r in rows], dtype=np.object_))


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(inference, "MAX_BACKOFF_S", 0.002)


def batch(*markers: int) -> np.ndarray:
    images = np.full((len(markers), 4, 4, 3), 100, np.uint8)
    images[:, 0, 0, 0] = markers
    return images


def predict(client: FakeTriton, images: np.ndarray, timeout_s: float = 10.0) -> list:
    async def main() -> list:
        try:
            return await asyncio.wait_for(client.predict(images), timeout_s)
        finally:
            await client.close()

    return asyncio.run(main())


def new_client() -> FakeTriton:
    async def make() -> FakeTriton:
        return FakeTriton()

    return asyncio.run(make())


@pytest.mark.parametrize("marker", [FAILS, BAD_JSON, DROPS_ROW, NO_OUTPUT, NOT_PAIRS])
def test_one_unusable_input_becomes_model_error_and_the_rest_are_tagged(marker):
    client = new_client()
    markers = [OK, OK, OK, OK, OK, marker, OK, OK]
    results = predict(client, batch(*markers))
    assert len(results) == len(markers)
    for i, result in enumerate(results):
        if i == 5:
            assert isinstance(result, PermanentError) and result.code == ErrorCode.MODEL_ERROR, result
            assert "3 tries" in result.detail
        else:
            assert result == Prediction([("beach", 0.9), ("sunset", 0.5)], "7")
    # bounded: 3 tries at each of the 4 levels holding the bad input, one probe each, halves without it once
    assert len(client.requests) <= 4 * 3 + 4 + 3, client.requests


def test_two_bad_inputs_in_one_batch_are_both_found():
    results = predict(new_client(), batch(FAILS, OK, OK, BAD_JSON, OK))
    bad = [i for i, r in enumerate(results) if isinstance(r, PermanentError)]
    assert bad == [0, 3]
    assert all(isinstance(r, Prediction) for i, r in enumerate(results) if i not in bad)


def test_a_model_broken_for_every_input_is_retried_not_dead_lettered():
    """When a blank probe image fails too, the fault is the model's: nothing is quarantined, the batch is
    retried until the model answers again."""
    client = new_client()
    client.broken = True

    async def main() -> list:
        call = asyncio.ensure_future(client.predict(batch(OK, OK, OK, OK)))
        while len(client.requests) < 40:  # ten rounds of tries and probes, and still no answer
            assert not call.done(), "gave up on a broken model instead of retrying"
            await asyncio.sleep(0.001)
        client.broken = False  # the model is fixed (a redeploy): the same batch now gets its tags
        try:
            return await asyncio.wait_for(call, 10)
        finally:
            await client.close()

    results = asyncio.run(main())
    assert all(isinstance(r, Prediction) for r in results), results


def test_triton_unavailable_is_retried_without_end_and_never_quarantined():
    client = new_client()
    client.unavailable = 25  # far more than model_error_attempts: unavailability is not the input's fault
    results = predict(client, batch(OK, OK))
    assert all(isinstance(r, Prediction) for r in results)
    assert len(client.requests) == 26 and client.retries == 25


def test_a_request_triton_calls_malformed_is_raised():
    class Mismatch(FakeTriton):
        async def _infer_once(self, images: np.ndarray) -> FakeResult:
            raise InferenceServerException("unexpected shape", status="StatusCode.INVALID_ARGUMENT")

    async def main() -> None:
        client = Mismatch()
        try:
            await client.predict(batch(OK))
        finally:
            await client.close()

    with pytest.raises(InferenceServerException, match="unexpected shape"):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("tags", "images", "message"),
    [
        (None, 1, "no TAGS output"),
        (np.array([[GOOD_ROW]], dtype=np.object_), 2, "1 TAGS rows for 2 images"),
        (np.array([[GOOD_ROW], [b"[1, 2"]], dtype=np.object_), 2, "TAGS row 1 is not JSON"),
        (np.array([[b'{"beach": 1}']], dtype=np.object_), 1, "TAGS row 0 is not JSON"),
        (np.array([[b"[[3, 0.5]]"]], dtype=np.object_), 1, "TAGS row 0 is not JSON"),
        (np.array([[b'[["beach", "high"]]']], dtype=np.object_), 1, "TAGS row 0 is not JSON"),
    ],
)
def test_unusable_answers_name_what_is_wrong(tags, images, message):
    with pytest.raises(ModelAnswerError, match=message):
        parse_answer(FakeResult(tags), images)


def test_a_usable_answer_keeps_order_scores_and_version():
    rows = np.array([[GOOD_ROW], [b"[]"]], dtype=np.object_)
    assert parse_answer(FakeResult(rows, "3"), 2) == [
        Prediction([("beach", 0.9), ("sunset", 0.5)], "3"),
        Prediction([], "3"),
    ]
