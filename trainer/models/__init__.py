"""Lightweight multi-label CNNs; ``create_model`` is the one way in."""

from trainer.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
