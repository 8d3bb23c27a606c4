"""The served model's interface: its name, its tensors and the input every version of it takes.

The worker, export (ONNX graph, ``config.pbtxt``), the benchmark and the tests read these. The Python-backend
``model.py`` (trainer/serving/tagger_backend.py) runs inside Triton without this package and spells the same
names itself; tests/test_contracts.py holds the two together.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The Triton model the worker asks for tags (``DARKROOM_MODEL_NAME`` overrides it).
MODEL_NAME = "tagger"
#: uint8 ``[N, height, width, 3]`` RGB photos, decoded by contracts.photos
INPUT_NAME = "IMAGE"
#: float32 ``[N, tags]`` per-tag scores
SCORES_OUTPUT = "SCORES"
#: bytes ``[N, 1]``: per photo, JSON ``[[tag, score], ...]`` or ``[[tag, score, id], ...]`` above the
#: version's calibrated thresholds, sorted by score
TAGS_OUTPUT = "TAGS"
#: float16 ``[N, D]``: per photo, the pooled backbone features the head consumes (versions exported since
#: the embeddings topic exists; their ``metadata.json`` says ``"embedding"``, their config declares it)
EMBEDDING_OUTPUT = "EMBEDDING"


@dataclass(frozen=True)
class ModelInput:
    """What the worker must produce for the model: ``(width, height)`` uint8 RGB, batches up to max."""

    width: int
    height: int
    max_batch_size: int
