"""External tools the tests need (kubectl, hadolint, chromium): found, or the test skips — or fails under CI.

On a developer's machine a missing tool skips the tests that need it, saying how to install it. Under
``CI=true`` the same miss fails the test: `.ci/run` installs every tool, so a skip there would only hide
manifests or pages that were never checked.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI=true``), where every tool must be present."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def find(*names: str) -> str | None:
    """The first of ``names`` found beside this Python (a venv's console scripts) or on PATH."""
    for name in names:
        beside = Path(sys.executable).parent / name
        if beside.is_file() and os.access(beside, os.X_OK):
            return str(beside)
        found = shutil.which(name)
        if found:
            return found
    return None


def missing(what: str, hint: str) -> None:
    """Skip (or, under CI, fail) the current test because ``what`` is not installed; ``hint`` says how."""
    message = f"{what} not found: {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: .ci/run must install it; a skip would leave this untested)")
    pytest.skip(message)


def require(*names: str, hint: str) -> str:
    """The path of the first of ``names`` found, else skip/fail via ``missing``."""
    path = find(*names)
    if path is None:
        missing(" or ".join(names), hint)
    assert path is not None
    return path
