"""Shared fixtures: a real model trained once per session on synthetic photos, and free-port stacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Triton model repository holding version 1 of ``tagger``, trained here on synthetic photos
    (the QUICK recipe: under a minute on 2 cores). Returns the work folder; ``repo`` and the photo sets
    (``train``, ``val``) and ``checkpoint/checkpoint.pt`` are inside it."""
    from trainer.synthetic_model import QUICK, build_synthetic_model

    work = tmp_path_factory.mktemp("synthetic-model")
    build_synthetic_model(work / "repo", work, QUICK)
    return work


@pytest.fixture(scope="session")
def checkpoint(synthetic_model: Path) -> dict:
    """The plain-dict checkpoint behind ``synthetic_model``'s version 1 (shared: copy it before changing it)."""
    import torch

    return torch.load(synthetic_model / "checkpoint" / "checkpoint.pt", weights_only=False)


@pytest.fixture
def model_repo(synthetic_model: Path, tmp_path: Path) -> Path:
    """A private copy of the trained repository, for tests that add versions or break it."""
    repo = tmp_path / "triton_models"
    shutil.copytree(synthetic_model / "repo", repo)
    return repo
