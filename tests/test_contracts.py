"""The contract layer is the one place the worker, the trainer and the served model agree on names."""

from __future__ import annotations

from contracts import tensors, topics
from stream.settings import Settings
from trainer.serving import tagger_backend


def test_the_python_backend_spells_the_contract_s_tensor_names() -> None:
    """model.py runs inside Triton without this package, so it keeps its own copies: they must agree."""
    assert (tagger_backend.INPUT, tagger_backend.SCORES, tagger_backend.TAGS) == (
        tensors.INPUT_NAME,
        tensors.SCORES_OUTPUT,
        tensors.TAGS_OUTPUT,
    )


def test_settings_default_to_the_contract_s_topic_and_model_names() -> None:
    settings = Settings()
    assert (settings.uploads_topic, settings.tags_topic, settings.dlq_topic) == (
        topics.UPLOADS,
        topics.TAGS,
        topics.DLQ,
    )
    assert settings.model_name == tensors.MODEL_NAME
