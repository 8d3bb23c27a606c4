"""The ``photo-embeddings`` record (schemas/photo-embeddings.schema.json): one photo's backbone embedding.

The worker publishes it beside the photo's tag event when ``DARKROOM_PUBLISH_EMBEDDINGS`` is on, so that
training (trainer/embeddings.py) reads features instead of running the backbone again. The vector is the
pooled features the model version's head consumes, as little-endian float16 bytes in base64: 1280 numbers
are 2.5 KiB of bytes, 3.4 KiB of JSON. The parser is strict: a value is used only if every field is what
the schema says and the vector decodes to ``dim`` finite numbers.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

import numpy as np
import orjson

from contracts.records import MAX_ID_CHARS

DTYPE = "float16"
#: The largest embedding a record may carry (EfficientNet-Lite4 and ResNet-50 have 1280 and 2048).
MAX_DIM = 8192
#: A record is its vector plus a few short fields: anything bigger is not one.
MAX_EMBEDDING_BYTES = 4 * MAX_DIM + 4096
_VERSION = re.compile(r"[1-9][0-9]{0,18}")
_WIRE = np.dtype("<f2")


class EmbeddingError(ValueError):
    """A value that is not a usable ``photo-embeddings`` record; the message names the problem."""


@dataclass(frozen=True)
class Embedding:
    """One photo's embedding as a model version computed it."""

    photo_id: str
    model_version: str
    vector: np.ndarray  # float16 [dim]


def embedding_record(photo_id: str, model_version: str, vector: np.ndarray) -> bytes:
    """The JSON value of one ``photo-embeddings`` record (``vector`` is cast to little-endian float16)."""
    wire = np.ascontiguousarray(vector, dtype=_WIRE).reshape(-1)
    return orjson.dumps(
        {
            "photo_id": photo_id,
            "model_version": model_version,
            "dim": len(wire),
            "dtype": DTYPE,
            "vector": base64.b64encode(wire.tobytes()).decode(),
        }
    )


def parse_embedding(raw: bytes | None) -> Embedding:
    """The record in ``raw``; EmbeddingError naming the first thing wrong with it."""
    if raw is None:
        raise EmbeddingError("no value (a tombstone)")
    if len(raw) > MAX_EMBEDDING_BYTES:
        raise EmbeddingError(f"value of {len(raw)} bytes is larger than {MAX_EMBEDDING_BYTES}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EmbeddingError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"a JSON {type(data).__name__}, not an object")
    photo_id, version = data.get("photo_id"), data.get("model_version")
    if not isinstance(photo_id, str) or not 1 <= len(photo_id) <= MAX_ID_CHARS:
        raise EmbeddingError(f"photo_id must be a string of 1..{MAX_ID_CHARS} characters")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise EmbeddingError('model_version must be a positive integer as a string, like "3"')
    if data.get("dtype") != DTYPE:
        raise EmbeddingError(f"dtype {str(data.get('dtype'))[:40]!r} is not {DTYPE!r}")
    dim = data.get("dim")
    if type(dim) is not int or not 1 <= dim <= MAX_DIM:
        raise EmbeddingError(f"dim must be an integer in 1..{MAX_DIM}")
    text = data.get("vector")
    if not isinstance(text, str):
        raise EmbeddingError("vector must be a base64 string")
    try:
        data_bytes = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EmbeddingError("vector is not base64") from None
    if len(data_bytes) != dim * _WIRE.itemsize:
        raise EmbeddingError(f"vector has {len(data_bytes)} bytes; dim {dim} float16 needs {dim * 2}")
    vector = np.frombuffer(data_bytes, dtype=_WIRE).astype(np.float16)
    if not np.isfinite(vector).all():
        raise EmbeddingError("vector holds NaN or infinite numbers")
    return Embedding(photo_id, version, vector)
