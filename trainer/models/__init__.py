"""Lightweight multi-label CNNs; ``create_model`` is the one way in.

The registry imports no family; this package imports every family, which registers its variants. Importing
``trainer.models.registry`` (or anything under ``trainer.models``) runs this first, so the registry is full.
"""

from trainer.models import efficientnet_lite, mobilenet, resnet  # noqa: F401  (register their variants)
from trainer.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
