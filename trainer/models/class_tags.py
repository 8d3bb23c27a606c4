"""A head that turns single-label class logits into multi-label tag logits through a class → tag matrix.

A tag's probability is the summed softmax probability of the classes that imply it (a photo is a "dog" with
the probability of all breeds together). It is returned as a logit so the multi-label ``Tagger``'s sigmoid
gives that probability back, and export, thresholds and serving treat it like any other tagger.
"""

from __future__ import annotations

import torch
from torch import nn

EPS = 1e-6  # keeps the logit finite where a tag's probability rounds to 0 or 1


class ClassTagHead(nn.Module):
    """class logits [N, C] → tag logits [N, T]; the matrix is a buffer, saved and exported with the weights."""

    def __init__(self, num_classes: int, num_tags: int) -> None:
        super().__init__()
        self.register_buffer("class_tags", torch.zeros(num_classes, num_tags))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        p = (torch.softmax(logits, dim=1) @ self.class_tags).clamp(EPS, 1 - EPS)
        return torch.log(p) - torch.log1p(-p)
