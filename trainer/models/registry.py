"""The one way in to every network: ``create_model(name, num_classes=...)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a named variant; the function's name is the model's name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f"model {fn.__name__!r} registered twice")
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs: object) -> nn.Module:
    """Build the registered variant ``name`` with a ``num_classes``-way multi-label head."""
    _load_families()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def _load_families() -> None:
    from trainer.models import efficientnet_lite, mobilenet, resnet  # noqa: F401  (register their variants)
