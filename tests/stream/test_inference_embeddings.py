"""The EMBEDDING output in Triton's answer: used when it is one finite float16 row per image, otherwise the
photo simply has no embedding; the tags are never lost over it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from contracts.tensors import EMBEDDING_OUTPUT, TAGS_OUTPUT
from stream.inference import parse_answer

ROW = orjson.dumps([["beach", 0.9]])


class Answer:
    """An inference result with a TAGS output for ``n`` images and the given EMBEDDING output."""

    class _Response:
        model_version = "4"

    def __init__(self, n: int, embedding: np.ndarray | None) -> None:
        self.outputs = {TAGS_OUTPUT: np.array([[ROW]] * n, dtype=np.object_), EMBEDDING_OUTPUT: embedding}

    def get_response(self) -> _Response:
        return self._Response()

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self.outputs[name]


def test_one_row_per_image_becomes_each_prediction_s_embedding() -> None:
    vectors = np.arange(6, dtype=np.float16).reshape(2, 3)
    predictions = parse_answer(Answer(2, vectors), 2)
    assert [p.tags for p in predictions] == [[("beach", 0.9)]] * 2
    for prediction, row in zip(predictions, vectors, strict=True):
        np.testing.assert_array_equal(prediction.embedding, row)


@pytest.mark.parametrize(
    "embedding",
    [
        None,  # a version exported before embeddings
        np.zeros((3, 4), np.float16),  # rows for other images
        np.zeros((2, 4), np.float32),  # not the declared type
        np.zeros((2,), np.float16),  # no vector axis
        np.zeros((2, 0), np.float16),  # empty vectors
        np.array([[1, np.nan], [1, np.inf]], np.float16),  # non-finite numbers
    ],
)
def test_an_unusable_embedding_output_leaves_the_tags_and_no_embedding(embedding) -> None:
    predictions = parse_answer(Answer(2, embedding), 2)
    assert [p.tags for p in predictions] == [[("beach", 0.9)]] * 2
    assert [p.embedding for p in predictions] == [None, None]
