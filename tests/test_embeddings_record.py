"""The ``photo-embeddings`` record: what the builder writes the parser reads back bit for bit, the schema
accepts it, and the parser refuses every hostile value with a reason instead of a vector."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator

from contracts import topics
from contracts.embeddings import MAX_DIM, EmbeddingError, embedding_record, parse_embedding
from contracts.tensors import EMBEDDING_OUTPUT
from stream.settings import Settings
from trainer.serving import tagger_backend

SCHEMA = json.loads((Path(__file__).parents[1] / "schemas" / "photo-embeddings.schema.json").read_text())


def _vector(dim: int = 1280, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, dim).astype(np.float32)


def test_record_round_trips_the_float16_vector_exactly_and_matches_the_schema() -> None:
    vector = _vector()
    raw = embedding_record("photo-1", "3", vector)
    Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER).validate(
        orjson.loads(raw)
    )
    record = parse_embedding(raw)
    assert (record.photo_id, record.model_version) == ("photo-1", "3")
    assert record.vector.dtype == np.float16 and record.vector.shape == (1280,)
    assert np.array_equal(record.vector, vector.astype(np.float16))
    assert len(raw) < 1280 * 2 * 4 / 3 + 200  # compact: base64 of float16, not a JSON list of numbers


def test_the_wire_order_is_little_endian_whatever_the_input_s() -> None:
    big = np.array([1.0, -2.5, 65504.0], dtype=">f2")
    raw = orjson.loads(embedding_record("p", "1", big))
    assert base64.b64decode(raw["vector"]) == np.array([1.0, -2.5, 65504.0], "<f2").tobytes()


def _with(**changes: object) -> bytes:
    value = orjson.loads(embedding_record("photo-1", "3", _vector(8)))
    value.update(changes)
    return orjson.dumps({k: v for k, v in value.items() if v is not ...})


def _vector_text(values: list[float]) -> str:
    return base64.b64encode(np.array(values, "<f2").tobytes()).decode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "tombstone"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b"x" * 100_000, "larger than"),
        (_with(photo_id=...), "photo_id"),
        (_with(photo_id=""), "photo_id"),
        (_with(photo_id="p" * 257), "photo_id"),
        (_with(model_version=3), "model_version"),
        (_with(model_version="03"), "model_version"),
        (_with(model_version="1; drop"), "model_version"),
        (_with(dtype="float32"), "dtype"),
        (_with(dim=True), "dim"),
        (_with(dim=8.0), "dim"),
        (_with(dim=0), "dim"),
        (_with(dim=MAX_DIM + 1), "dim"),
        (_with(dim=9), "bytes"),
        (_with(vector=[1.0, 2.0]), "base64 string"),
        (_with(vector="%%%not base64%%%"), "not base64"),
        (_with(vector=_vector_text([1.0] * 7)), "bytes"),
        (_with(vector=_vector_text([1.0] * 7 + [float("nan")])), "NaN"),
        (_with(vector=_vector_text([1.0] * 7 + [float("inf")])), "infinite"),
    ],
)
def test_parser_refuses_hostile_values_naming_the_problem(raw: bytes | None, reason: str) -> None:
    with pytest.raises(EmbeddingError, match=reason):
        parse_embedding(raw)


def test_names_agree_across_contract_settings_and_the_served_model() -> None:
    assert tagger_backend.EMBEDDING == EMBEDDING_OUTPUT
    settings = Settings()
    assert settings.embeddings_topic == topics.EMBEDDINGS == SCHEMA["title"]
    assert settings.publish_embeddings is False, "opt-in"
