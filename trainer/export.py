"""Export a checkpoint to ONNX (preprocessing inside the graph) and add it as a new version of a Triton model.

A version folder holds everything that must change together: ``model.onnx`` (or ``model.plan``),
``vocab.json``, ``thresholds.json`` and, for the CPU variant, ``model.py``. It is written aside and renamed
into place, so Triton's repository poller never sees half a version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.serving import tagger_backend

INPUT, SCORES, TAGS = tagger_backend.INPUT, tagger_backend.SCORES, tagger_backend.TAGS


@dataclass(frozen=True)
class ServingConfig:
    """What ``config.pbtxt`` says about batching, instances and versions."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    intra_op_threads: int = 2
    num_versions: int = 1  # version policy: serve the latest N


def export_onnx(tagger: torch.nn.Module, path: Path, size: tuple[int, int], opset: int = 17) -> None:
    """Write ``tagger`` (uint8 NHWC → probabilities) as ONNX with a dynamic batch axis."""
    example = torch.zeros(2, size[0], size[1], 3, dtype=torch.uint8)
    torch.onnx.export(
        tagger.eval(),
        (example,),
        str(path),
        input_names=[INPUT],
        output_names=[SCORES],
        dynamic_axes={INPUT: {0: "batch"}, SCORES: {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )


def model_config(name: str, target: str, size: tuple[int, int], serving: ServingConfig) -> str:
    """The ``config.pbtxt`` of the CPU (Python backend + ONNX Runtime) or GPU (TensorRT plan) variant."""
    if target == "cpu":
        head = f'name: "{name}"\nbackend: "python"\n'
        outputs = (
            f'  {{ name: "{SCORES}" data_type: TYPE_FP32 dims: [ -1 ] }},\n'
            f'  {{ name: "{TAGS}" data_type: TYPE_STRING dims: [ 1 ] }}\n'
        )
        kind = "KIND_CPU"
        params = f'parameters {{ key: "intra_op_threads" value: {{ string_value: "{serving.intra_op_threads}" }} }}\n'
    elif target == "gpu":
        head = f'name: "{name}"\nplatform: "tensorrt_plan"\n'
        outputs = f'  {{ name: "{SCORES}" data_type: TYPE_FP32 dims: [ -1 ] }}\n'
        kind, params = "KIND_GPU", ""
    else:
        raise ValueError(f"unknown target {target!r}; choose cpu or gpu")
    preferred = ", ".join(str(b) for b in serving.preferred_batch_sizes if b <= serving.max_batch_size)
    return (
        head
        + f"max_batch_size: {serving.max_batch_size}\n"
        + f'input [\n  {{ name: "{INPUT}" data_type: TYPE_UINT8 dims: [ {size[0]}, {size[1]}, 3 ] }}\n]\n'
        + f"output [\n{outputs}]\n"
        + f"version_policy: {{ latest {{ num_versions: {serving.num_versions} }} }}\n"
        + f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        + f"  max_queue_delay_microseconds: {serving.max_queue_delay_us}\n}}\n"
        + f"instance_group [ {{ kind: {kind} count: {serving.instances} }} ]\n"
        + params
    )


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"[1-9]\d*", p.name)
    )


def _config_input_size(config_text: str) -> tuple[int, int] | None:
    match = re.search(rf'name: "{INPUT}" data_type: TYPE_UINT8 dims: \[ (\d+), (\d+), 3 \]', config_text)
    return (int(match[1]), int(match[2])) if match else None


def write_version(
    repo: Path, checkpoint: dict, name: str = "tagger", serving: ServingConfig | None = None
) -> Path:
    """Add version N+1 of model ``name`` (CPU variant) to ``repo`` from a checkpoint dict; return its folder."""
    from trainer.train import load_tagger

    serving = serving or ServingConfig()
    size = tuple(checkpoint["input_size"])
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    config_path = model_dir / "config.pbtxt"
    if config_path.exists():
        served = _config_input_size(config_path.read_text())
        if served is not None and served != size:
            raise ValueError(
                f"{config_path} serves {served[0]}x{served[1]} inputs but this checkpoint takes "
                f"{size[0]}x{size[1]}: versions of one model share the input size; export under another --name"
            )
    version = (versions(model_dir) or [0])[-1] + 1
    staging = model_dir / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    export_onnx(load_tagger(checkpoint), staging / "model.onnx", size)  # type: ignore[arg-type]
    shutil.copyfile(tagger_backend.__file__, staging / "model.py")
    vocab = dict(checkpoint["vocab"])
    (staging / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    (staging / "thresholds.json").write_text(
        json.dumps({"tags": vocab["tags"], "thresholds": checkpoint["thresholds"]}, indent=1) + "\n"
    )
    (staging / "metadata.json").write_text(
        json.dumps(
            {
                "model": checkpoint["model"],
                "metrics": checkpoint.get("metrics", {}),
                "input_size": list(size),
            },
            indent=1,
        )
        + "\n"
    )
    tmp_config = model_dir / f".config.pbtxt.{os.getpid()}"
    tmp_config.write_text(model_config(name, "cpu", size, serving))  # type: ignore[arg-type]
    os.replace(tmp_config, config_path)
    os.rename(staging, model_dir / str(version))
    return model_dir / str(version)
