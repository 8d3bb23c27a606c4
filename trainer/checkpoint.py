"""Checkpoints: plain dicts of weights, input size, normalization, vocabulary and thresholds, read one way.

``load_checkpoint`` is the validated reader every command uses (a file that is not a checkpoint is one clear
error naming it); ``load_tagger`` rebuilds the serving network, preprocessing included, from one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainer.models import create_model
from trainer.models.preprocess import Tagger

#: What export and serving read from every checkpoint.
CHECKPOINT_KEYS = ("model", "state_dict", "input_size", "mean", "std", "vocab", "thresholds")


def read_torch_file(path: Path) -> object:
    """Whatever ``torch.save`` wrote to ``path``; ValueError naming the file if it is missing or not one."""
    if not path.is_file():
        raise ValueError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise ValueError(f"{path} is not a PyTorch checkpoint: {type(exc).__name__}: {exc}") from None


def is_checkpoint(obj: object) -> bool:
    """Whether ``obj`` is a Darkroom checkpoint dict (has every key export and serving read)."""
    return isinstance(obj, dict) and all(k in obj for k in CHECKPOINT_KEYS)


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint (a plain dict); ValueError naming the file if it is not one."""
    checkpoint = read_torch_file(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ValueError(
            f"{path} is not a Darkroom checkpoint (missing {', '.join(missing)}); see darkroom train"
        )
    return checkpoint


def load_tagger(checkpoint: dict) -> Tagger:
    """Rebuild the serving network (preprocessing included) from a checkpoint dict."""
    net = create_model(checkpoint["model"], num_classes=len(checkpoint["vocab"]["tags"]))
    net.load_state_dict(checkpoint["state_dict"])
    return Tagger(
        net, tuple(checkpoint["mean"]), tuple(checkpoint["std"]), checkpoint.get("crop_size")
    ).eval()
