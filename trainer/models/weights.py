"""Load any checkpoint into a registered network, with a report of what did not fit.

Sources: a Darkroom checkpoint (``darkroom train``), a bare state dict, or a dict holding one under
``state_dict``/``model``/``model_state_dict`` (how timm, torchvision and most training scripts save).
A family whose keys differ from other implementations' has a ``remap_state_dict`` method (see
``efficientnet_lite.remap_state_dict`` for the documented mapping); DDP's ``module.`` prefix is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from trainer.checkpoint import is_checkpoint, read_torch_file

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass(frozen=True)
class LoadReport:
    """What loading one file did: tensors loaded, and the keys that were missing, unexpected or mis-shaped."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        """One line per kind of problem, naming up to ``limit`` keys each."""

        def some(keys: list[str]) -> str:
            more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
            return ", ".join(keys[:limit]) + more

        lines = [f"{self.source}: loaded {self.loaded} tensors"]
        if self.missing:
            lines.append(f"missing (left as initialized) {len(self.missing)}: {some(self.missing)}")
        if self.unexpected:
            lines.append(f"unexpected (ignored) {len(self.unexpected)}: {some(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{k} {list(got)} vs model {list(want)}" for k, got, want in self.mismatched]
            lines.append(f"mis-shaped (not loaded) {len(shapes)}: {some(shapes)}")
        return "\n  ".join(lines)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors saved in ``path``, whichever of the usual layouts it uses; ValueError naming the file."""
    obj = read_torch_file(path)
    if is_checkpoint(obj):
        obj = obj["state_dict"]  # type: ignore[index]
    elif isinstance(obj, dict):
        wrapped = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        obj = obj[wrapped[0]] if wrapped else obj
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{path} holds no state dict: expected a dict of tensors, or one under {', '.join(WRAPPER_KEYS)}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(
    net: nn.Module, path: Path, exclude: tuple[str, ...] = (), strict: bool = True
) -> LoadReport:
    """Load ``path`` into ``net``, leaving out keys that start with one of ``exclude`` (e.g. ``"head."``
    for a new vocabulary). Strict: any missing, unexpected or mis-shaped key is a ValueError listing them;
    otherwise what fits is loaded and the report says what did not."""
    source = read_state_dict(path)
    remap = getattr(net, "remap_state_dict", None)
    if remap is not None:
        source = remap(source)
    target = net.state_dict()
    source = {k: v for k, v in source.items() if not k.startswith(exclude)}
    wanted = [k for k in target if not k.startswith(exclude)]
    mismatched = [
        (k, tuple(v.shape), tuple(target[k].shape))
        for k, v in source.items()
        if k in target and v.shape != target[k].shape
    ]
    fitting = {k: v for k, v in source.items() if k in target and v.shape == target[k].shape}
    report = LoadReport(
        source=str(path),
        loaded=len(fitting),
        missing=[k for k in wanted if k not in source],
        unexpected=[k for k in source if k not in target],
        mismatched=mismatched,
    )
    if strict and not report.complete:
        raise ValueError(f"weights do not fit {type(net).__name__}:\n  {report.describe()}")
    net.load_state_dict(fitting, strict=False)
    return report
