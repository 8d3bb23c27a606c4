"""Backbone features from the ``photo-embeddings`` topic, so training need not run the backbone again.

With ``DARKROOM_PUBLISH_EMBEDDINGS`` on, the worker publishes each photo's pooled backbone features as the
served version computed them (contracts/embeddings.py). :func:`collect` turns the topic's values (read by ``tools.feedback.read_embeddings``, bounded) into
``{photo_id: float16 vector}`` for one model version; a record that is not a valid embedding is skipped and
counted, never fatal.
:func:`features_from_embeddings` turns them into the ``[N, 2, D]`` features ``trainer.finetune`` trains
heads on, running the backbone only for photos the topic lacks, after a spot check that the vectors are
this checkpoint's backbone's (a version with another backbone is refused, whatever its number says).

The topic holds the photo as served, not its mirror image: both views of a photo read from it are the
same vector (the flip augmentation then adds nothing for those photos).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from contracts.embeddings import EmbeddingError, parse_embedding
from trainer.finetune import extract_features
from trainer.models.preprocess import Tagger

#: How far a topic vector may be from the checkpoint's own features (relative to their largest value):
#: float16 rounding and ONNX Runtime vs PyTorch arithmetic are far below it, another backbone far above.
SPOT_CHECK_TOLERANCE = 0.02
#: ... plus float16's smallest step, twice: features within float16's subnormal range round by up to half of it
FLOAT16_STEP = 2 * 2.0**-24


@dataclass
class EmbeddingsRead:
    """What a read of the topic found for one model version."""

    model_version: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # photo_id → float16 [D]; the latest wins
    records: int = 0
    other_versions: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)  # why → how many

    def summary(self) -> dict:
        return {
            "model_version": self.model_version,
            "records": self.records,
            "photos": len(self.vectors),
            "other_versions": dict(self.other_versions),
            "skipped": dict(self.skipped),
        }


def collect(values: Iterable[bytes | None], model_version: str) -> EmbeddingsRead:
    """Parse record values; keep ``model_version``'s vectors (one width: the first valid record's)."""
    read = EmbeddingsRead(model_version)
    dim = None
    for raw in values:
        read.records += 1
        try:
            record = parse_embedding(raw)
        except EmbeddingError as exc:
            read.skipped[str(exc).split(":")[0][:60]] += 1
            continue
        if record.model_version != model_version:
            read.other_versions[record.model_version] += 1
            continue
        dim = dim or len(record.vector)
        if len(record.vector) != dim:
            read.skipped[f"dim {len(record.vector)} is not {dim}"] += 1
            continue
        read.vectors[record.photo_id] = record.vector
    return read


@torch.no_grad()
def features_from_embeddings(
    tagger: Tagger,
    images: np.ndarray,
    photo_ids: list[str],
    vectors: dict[str, np.ndarray],
    spot_checks: int = 4,
) -> tuple[np.ndarray, int]:
    """float32 ``[N, 2, D]`` features of ``images``: the topic's vector (both views) where ``vectors`` has the
    photo, the backbone's own features elsewhere; and how many came from the topic.

    Up to ``spot_checks`` photos found in the topic are also run through the backbone: if their vectors
    differ from its features, they belong to another backbone, and ValueError says so."""
    if not len(images):
        raise ValueError("no photos to compute features of")
    have = [i for i, pid in enumerate(photo_ids) if pid in vectors]
    check = have[:spot_checks]
    missing = sorted(set(range(len(photo_ids))) - set(have))
    computed = extract_features(tagger, images[check + missing]) if check or missing else None
    dim = computed.shape[-1] if computed is not None else len(vectors[photo_ids[have[0]]])
    for row, i in enumerate(check):
        own = computed[row, 0]
        topic = vectors[photo_ids[i]].astype(np.float32)
        if topic.shape != own.shape:
            raise ValueError(
                f"the topic's embeddings have {topic.shape[0]} numbers but this checkpoint's backbone makes "
                f"{own.shape[0]}: they come from another model; drop --embeddings-from-topic"
            )
        scale = float(np.abs(own).max())
        error = float(np.abs(topic - own).max())
        if error > SPOT_CHECK_TOLERANCE * scale + FLOAT16_STEP:
            raise ValueError(
                f"photo {photo_ids[i]}'s embedding in the topic differs from this checkpoint's backbone "
                f"features by {error / max(scale, 1e-30):.1%}: that version has another backbone; give the version whose "
                "backbone this checkpoint has, or drop --embeddings-from-topic"
            )
    features = np.empty((len(images), 2, dim), np.float32)
    for i in have:
        features[i] = vectors[photo_ids[i]].astype(np.float32)  # both views
    if missing:
        features[missing] = computed[len(check) :]
    return features, len(have)
