"""The Kubernetes overlays, rendered once per test session by the real kustomize (``kubectl kustomize``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
# The binary to render with; override with e.g. KUBECTL=/usr/local/bin/kubectl.
KUBECTL = os.environ.get("KUBECTL", "kubectl")

Resource = dict[str, Any]

_cache: dict[str, list[Resource]] = {}


def render(overlay: str) -> list[Resource]:
    """The resources ``kubectl kustomize deploy/k8s/overlays/<overlay>`` produces (cached per session)."""
    if overlay not in _cache:
        if shutil.which(KUBECTL) is None:
            pytest.skip(
                f"{KUBECTL!r} not found: install kubectl >= 1.27 (kustomize v5) to render the overlays"
            )
        proc = subprocess.run(
            [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
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
