"""Export a checkpoint to ONNX (preprocessing inside the graph) and add it as a new version of a Triton model.

A version folder holds everything that must change together: weights, ``vocab.json``, ``thresholds.json``
and ``model.py`` (the Python-backend model that turns scores into tags). Each folder is written aside and
renamed into place, so Triton's repository poller never sees half a version.

Three repository variants (``--target``, and ``--backend`` for cpu):

* ``cpu`` (``--backend python``, the default): ``tagger/N/`` = ``model.py`` running ONNX Runtime on
  ``model.onnx`` inside the Python backend (the embedded tritonserver, whose wheel has no ONNX Runtime backend).
* ``cpu --backend onnxruntime`` (NGC Triton on CPU nodes): ``tagger_onnx/N/model.onnx`` served by Triton's
  own ONNX Runtime backend (``backend: "onnxruntime"``, SCORES only), and ``tagger/N/`` = the same
  ``model.py``, which asks *version N* of ``tagger_onnx`` for scores (BLS) and applies version N's thresholds.
* ``gpu``: ``tagger_trt/N/model.plan`` (``platform: "tensorrt_plan"``, ``KIND_GPU``) and the same front.
  INT8 plans are built from a Q/DQ graph (trainer/quantize.py), written beside it as ``model.qdq.onnx``.

The scores model's version is written first; ``tagger`` version N waits until it is loaded.

``darkroom export --checkpoint ckpt.pt --repo triton_models --target cpu|gpu [--backend ...]`` is :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contracts.helpformat import DefaultsHelpFormatter
from contracts.tensors import EMBEDDING_OUTPUT, INPUT_NAME, SCORES_OUTPUT, TAGS_OUTPUT
from trainer.checkpoint import load_checkpoint, load_tagger
from trainer.rollout import keep_rollout
from trainer.serving import tagger_backend

TARGETS = ("cpu", "gpu")
BACKENDS = ("python", "onnxruntime")  # what runs the ONNX graph of the cpu target
PRECISIONS = ("fp32", "fp16", "int8")
PLAN_SUFFIX = "_trt"  # the GPU variant's plan model is "<name>_trt"
ONNX_SUFFIX = "_onnx"  # the ONNX Runtime backend's model is "<name>_onnx"
QDQ_FILE = "model.qdq.onnx"  # the INT8 plan's source graph, kept in the front's version folder


@dataclass(frozen=True)
class ServingConfig:
    """What ``config.pbtxt`` says about batching, instances and versions."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    intra_op_threads: int = 2
    num_versions: int = 1  # version policy "latest": serve the latest N
    version_policy: str = "latest"  # latest | all | specific
    specific_versions: tuple[int, ...] = field(default=())

    def check(self) -> None:
        """Raise ValueError naming the first option that Triton would refuse or silently ignore."""
        if self.max_batch_size < 1:
            raise ValueError(f"max batch size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred batch sizes {bad} are outside 1..{self.max_batch_size} (the max batch size)"
            )
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max queue delay must be >= 0 microseconds, got {self.max_queue_delay_us}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra-op threads must be >= 0 (0 = all cores), got {self.intra_op_threads}")
        if self.version_policy not in ("latest", "all", "specific"):
            raise ValueError(f"version policy {self.version_policy!r}: use latest:N, all or specific:1,2,...")
        if self.version_policy == "latest" and self.num_versions < 1:
            raise ValueError(f"version policy latest:N needs N >= 1, got {self.num_versions}")
        if self.version_policy == "specific" and (
            not self.specific_versions or min(self.specific_versions) < 1
        ):
            raise ValueError(
                f"version policy specific needs versions >= 1, got {list(self.specific_versions)}"
            )

    def set_policy(self, config: model_config_pb2.ModelConfig, extra_latest: int = 0) -> None:
        """Set ``config``'s version policy; ``extra_latest`` keeps that many more of the latest versions loaded."""
        policy = config.version_policy
        if self.version_policy == "all":
            policy.all.SetInParent()
        elif self.version_policy == "specific":
            policy.specific.versions.extend(self.specific_versions)
        else:
            policy.latest.num_versions = self.num_versions + extra_latest


def parse_version_policy(text: str) -> dict:
    """``latest:N`` | ``all`` | ``specific:1,2`` → ServingConfig keyword arguments (ValueError if malformed)."""
    kind, _, rest = text.partition(":")
    try:
        if kind == "latest":
            return {"version_policy": "latest", "num_versions": int(rest or "1")}
        if kind == "all" and not rest:
            return {"version_policy": "all"}
        if kind == "specific":
            return {"version_policy": "specific", "specific_versions": tuple(int(v) for v in rest.split(","))}
    except ValueError:
        pass
    raise ValueError(f"version policy {text!r}: use latest:N, all or specific:1,2,...")


class _CastFirst(torch.nn.Module):
    """Casts the uint8 input to float before anything else: TensorRT takes uint8 only as an input that is
    converted at once (the Tagger transposes first). The numbers are identical."""

    def __init__(self, tagger: torch.nn.Module) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tagger(images.float())


class _WithEmbedding(torch.nn.Module):
    """The tagger with a second output: the pooled backbone features its head consumes (``EMBEDDING``),
    which the worker can publish so that training need not run the backbone again (docs/feedback.md)."""

    def __init__(self, tagger: torch.nn.Module) -> None:
        super().__init__()
        self.tagger = tagger

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.tagger.net
        features = net.forward_features(self.tagger.normalize(images))
        return torch.sigmoid(net.forward_head(features)), features


def export_onnx(
    tagger: torch.nn.Module,
    path: Path,
    size: tuple[int, int],
    opset: int = 17,
    cast_first: bool = False,
    embedding: bool = False,
) -> None:
    """Write ``tagger`` (uint8 NHWC → probabilities) as ONNX with a dynamic batch axis.

    ``cast_first`` puts the uint8 → float cast at the very start of the graph (what TensorRT needs);
    ``embedding`` adds the float32 output ``EMBEDDING``, the pooled features the head consumes.
    """
    if cast_first and embedding:
        raise ValueError("the TensorRT graph (cast_first) has no EMBEDDING output")
    module = _CastFirst(tagger) if cast_first else _WithEmbedding(tagger) if embedding else tagger
    outputs = [SCORES_OUTPUT, *([EMBEDDING_OUTPUT] if embedding else [])]
    example = torch.zeros(2, size[0], size[1], 3, dtype=torch.uint8)
    with warnings.catch_warnings():
        # Height and width are fixed in the graph, so sizes read from them (TF "same" padding, the centre
        # crop) are exact constants: the tracer's warning about that does not apply.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # ... and an opset note that slices with steps > 1 stay unfolded, which changes nothing served
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in outputs}},
            opset_version=opset,
            dynamo=False,
        )


def model_config(
    name: str,
    target: str,
    size: tuple[int, int],
    serving: ServingConfig,
    num_tags: int | None = None,
    scores_model: str | None = None,
    embedding_dim: int | None = None,
) -> str:
    """The ``config.pbtxt`` of a model, built as Triton's ModelConfig message and written in its text format.

    ``cpu``: the Python-backend ``tagger`` (SCORES + TAGS). With ``scores_model`` it is a front, which gets
    its scores from that model. ``gpu``: the TensorRT plan (SCORES only; its output width is ``num_tags``
    when known, since a plan has a fixed vocabulary size). ``onnxruntime``: the ONNX graph on Triton's ONNX
    Runtime backend (SCORES only, CPU instances, ONNX Runtime's thread pools set by parameters).
    ``embedding_dim`` (cpu): the front also declares ``EMBEDDING``, float16 ``[embedding_dim]``.
    """
    pb = model_config_pb2
    config = pb.ModelConfig(name=name, max_batch_size=serving.max_batch_size)
    if target == "cpu":
        config.backend = "python"
        config.output.add(name=SCORES_OUTPUT, data_type=pb.TYPE_FP32, dims=[-1])
        config.output.add(name=TAGS_OUTPUT, data_type=pb.TYPE_STRING, dims=[1])
        if embedding_dim:
            config.output.add(name=EMBEDDING_OUTPUT, data_type=pb.TYPE_FP16, dims=[embedding_dim])
        kind = pb.ModelInstanceGroup.KIND_CPU
        config.parameters["intra_op_threads"].string_value = str(serving.intra_op_threads)
        if scores_model:
            config.parameters["scores_model"].string_value = scores_model
        serving.set_policy(config)
    elif target == "gpu":
        config.platform = "tensorrt_plan"
        config.output.add(name=SCORES_OUTPUT, data_type=pb.TYPE_FP32, dims=[num_tags or -1])
        kind = pb.ModelInstanceGroup.KIND_GPU
        # One version more than the front: during a rollout the front's old version still calls its plan.
        serving.set_policy(config, extra_latest=1)
    elif target == "onnxruntime":
        config.backend = "onnxruntime"
        config.output.add(name=SCORES_OUTPUT, data_type=pb.TYPE_FP32, dims=[num_tags or -1])
        kind = pb.ModelInstanceGroup.KIND_CPU
        # The backend's own parameter names; one inter-op thread: the graph is a chain, nothing to overlap.
        config.parameters["intra_op_thread_count"].string_value = str(serving.intra_op_threads)
        config.parameters["inter_op_thread_count"].string_value = "1"
        serving.set_policy(config, extra_latest=1)
    else:
        raise ValueError(f"unknown target {target!r}; choose cpu, gpu or onnxruntime")
    config.input.add(name=INPUT_NAME, data_type=pb.TYPE_UINT8, dims=[size[0], size[1], 3])
    config.dynamic_batching.preferred_batch_size.extend(
        b for b in serving.preferred_batch_sizes if b <= serving.max_batch_size
    )
    config.dynamic_batching.max_queue_delay_microseconds = serving.max_queue_delay_us
    config.instance_group.add(kind=kind, count=serving.instances)
    return text_format.MessageToString(config)


def read_model_config(path: Path) -> model_config_pb2.ModelConfig:
    """Parse a ``config.pbtxt``; ValueError naming the file when it is not a Triton model config."""
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not a Triton model config ({exc}); remove it or export under another --name"
        ) from None


def tensor_dims(config: model_config_pb2.ModelConfig, name: str) -> list[int] | None:
    """The declared dims of input or output ``name`` (batch axis excluded), None if not declared."""
    for tensor in [*config.input, *config.output]:
        if tensor.name == name:
            return list(tensor.dims)
    return None


def versions(model_dir: Path) -> list[int]:
    """The numeric version folders of a model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and re.fullmatch(r"[1-9]\d*", p.name)
    )


def config_input_size(config: model_config_pb2.ModelConfig) -> tuple[int, int] | None:
    """The (height, width) of a model's uint8 image input, as its config declares it."""
    dims = tensor_dims(config, INPUT_NAME)
    return (dims[0], dims[1]) if dims and len(dims) == 3 else None


def _check_input_size(model_dir: Path, size: tuple[int, int]) -> None:
    config_path = model_dir / "config.pbtxt"
    if config_path.exists():
        served = config_input_size(read_model_config(config_path))
        if served is not None and served != size:
            raise ValueError(
                f"{config_path} serves {served[0]}x{served[1]} inputs but this checkpoint takes "
                f"{size[0]}x{size[1]}: versions of one model share the input size; export under another --name"
            )


def _write_config(model_dir: Path, text: str) -> None:
    """Replace ``config.pbtxt`` atomically, and only if it changes: a changed config makes Triton's poller
    reload every version of the model, an unchanged one lets it just add the new version."""
    path = model_dir / "config.pbtxt"
    if path.exists() and path.read_text() == text:
        return
    tmp = model_dir / f".config.pbtxt.{os.getpid()}"
    tmp.write_text(text)
    os.replace(tmp, path)


def _staging(model_dir: Path, version: int) -> Path:
    staging = model_dir / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, model_dir: Path, version: int) -> Path:
    """Rename a finished version folder into place (atomic: the poller sees all of it or nothing)."""
    target = model_dir / str(version)
    try:
        os.rename(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"{target} appeared while exporting (another export?); nothing was added") from None
    return target


def _write_version_files(staging: Path, checkpoint: dict, size: tuple[int, int], extra: dict) -> None:
    """``model.py``, ``vocab.json``, ``thresholds.json`` and ``metadata.json``: what one version serves."""
    shutil.copyfile(tagger_backend.__file__, staging / "model.py")
    vocab = dict(checkpoint["vocab"])
    (staging / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    (staging / "thresholds.json").write_text(
        json.dumps({"tags": vocab["tags"], "thresholds": checkpoint["thresholds"]}, indent=1) + "\n"
    )
    metadata = {
        "model": checkpoint["model"],
        "metrics": checkpoint.get("metrics", {}),
        "input_size": list(size),
    }
    (staging / "metadata.json").write_text(json.dumps({**metadata, **extra}, indent=1) + "\n")


def write_version(
    repo: Path,
    checkpoint: dict,
    name: str = "tagger",
    serving: ServingConfig | None = None,
    target: str = "cpu",
    precision: str = "fp16",
    calibration: np.ndarray | None = None,
    build_plan: Callable[..., dict] | None = None,
    backend: str = "python",
) -> Path:
    """Add version N+1 of model ``name`` to ``repo`` from a checkpoint dict; return its folder.

    ``target="gpu"`` also builds a TensorRT plan (``precision``; ``calibration`` = uint8 sample images for
    INT8) into version N+1 of ``<name>_trt``. ``build_plan`` defaults to :func:`trainer.tensorrt.build_engine`.
    ``backend="onnxruntime"`` (cpu) puts the ONNX graph into version N+1 of ``<name>_onnx`` for Triton's
    ONNX Runtime backend, behind the same front as the GPU variant.
    """

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose cpu or gpu")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose python or onnxruntime")
    if target == "gpu" and backend != "python":
        raise ValueError("--backend applies to --target cpu; the gpu target serves a TensorRT plan")
    serving = serving or ServingConfig()
    serving.check()
    size = tuple(checkpoint["input_size"])
    model_dir = repo / name
    plan_dir = repo / f"{name}{PLAN_SUFFIX}"
    onnx_dir = repo / f"{name}{ONNX_SUFFIX}"
    _check_input_size(model_dir, size)  # type: ignore[arg-type]
    model_dir.mkdir(parents=True, exist_ok=True)
    # One number names the front and its scores model, so take the next free number of all of them.
    version = max([0, *versions(model_dir), *versions(plan_dir), *versions(onnx_dir)]) + 1
    staging = _staging(model_dir, version)
    try:
        onnx_path = staging / "model.onnx"
        tagger = load_tagger(checkpoint)
        # The Python backend runs the graph itself, so it can return the embedding too; the scores models
        # of the other variants (ONNX Runtime backend, TensorRT) stay SCORES only.
        embedding = target == "cpu" and backend == "python"
        export_onnx(tagger, onnx_path, size, cast_first=target == "gpu", embedding=embedding)  # type: ignore[arg-type]
        extra: dict = {"target": target, **({"backend": backend} if target == "cpu" else {})}
        embedding_dim = _embedding_dim(tagger, size) if embedding else None  # type: ignore[arg-type]
        if embedding_dim:
            extra["embedding"] = {"output": EMBEDDING_OUTPUT, "dim": embedding_dim, "dtype": "float16"}
        scores_model = None
        if target == "gpu":
            if precision == "int8":
                extra["quantization"], onnx_path = _write_qdq(onnx_path, calibration)
            extra["tensorrt"] = _write_plan_version(
                plan_dir, version, onnx_path, checkpoint, size, serving, precision, build_plan
            )
            scores_model = plan_dir.name
        elif backend == "onnxruntime":
            _write_onnx_version(onnx_dir, version, onnx_path, checkpoint, size, serving)  # type: ignore[arg-type]
            scores_model = onnx_dir.name
        _write_version_files(staging, checkpoint, size, extra)  # type: ignore[arg-type]
        front = model_config(
            name, "cpu", size, serving, scores_model=scores_model, embedding_dim=embedding_dim
        )  # type: ignore[arg-type]
        _write_config(model_dir, keep_rollout(model_dir, front))  # under rollout control: a candidate
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(staging, model_dir, version)


@torch.no_grad()
def _embedding_dim(tagger: torch.nn.Module, size: tuple[int, int]) -> int:
    """The width of the tagger's pooled backbone features."""
    blank = torch.zeros(1, size[0], size[1], 3, dtype=torch.uint8)
    return int(tagger.net.forward_features(tagger.normalize(blank)).shape[-1])


def _write_qdq(onnx_path: Path, calibration: np.ndarray | None) -> tuple[dict, Path]:
    """The Q/DQ INT8 graph beside ``onnx_path`` (calibrated on ``calibration``): its report and path."""
    from trainer.quantize import quantize_qdq

    if calibration is None or not len(calibration):
        raise ValueError("INT8 needs calibration images (--calibration-images DIR)")
    qdq_path = onnx_path.with_name(QDQ_FILE)
    return quantize_qdq(onnx_path, qdq_path, calibration), qdq_path


def _check_scores_width(model_dir: Path, num_tags: int) -> None:
    """A scores model declares its output width; versions with another vocabulary size need another name."""
    config_path = model_dir / "config.pbtxt"
    served = tensor_dims(read_model_config(config_path), SCORES_OUTPUT) if config_path.exists() else None
    if served and served[0] > 0 and served[0] != num_tags:
        raise ValueError(
            f"{config_path} serves {served[0]} tags but this checkpoint has {num_tags}: a scores model's output "
            "width is fixed in its config; export a new vocabulary under another --name"
        )


def _write_onnx_version(
    onnx_dir: Path,
    version: int,
    onnx_path: Path,
    checkpoint: dict,
    size: tuple[int, int],
    serving: ServingConfig,
) -> None:
    """Move the ONNX graph into version ``version`` of the ONNX Runtime backend's model, with its config
    (the front's version folder then holds no weights: it asks this model for scores)."""
    _check_input_size(onnx_dir, size)
    num_tags = len(checkpoint["vocab"]["tags"])
    _check_scores_width(onnx_dir, num_tags)
    onnx_dir.mkdir(parents=True, exist_ok=True)
    staging = _staging(onnx_dir, version)
    try:
        os.replace(onnx_path, staging / "model.onnx")
        config = model_config(onnx_dir.name, "onnxruntime", size, serving, num_tags=num_tags)
        _write_config(
            onnx_dir, keep_rollout(onnx_dir.with_name(onnx_dir.name.removesuffix(ONNX_SUFFIX)), config)
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, onnx_dir, version)


def _write_plan_version(
    plan_dir: Path,
    version: int,
    onnx_path: Path,
    checkpoint: dict,
    size: tuple[int, int],
    serving: ServingConfig,
    precision: str,
    build_plan: Callable[..., dict] | None,
) -> dict:
    """Build ``model.plan`` from the ONNX file into version ``version`` of the plan model; its build report."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if build_plan is None:
        from trainer.tensorrt import build_engine as build_plan
    _check_input_size(plan_dir, size)
    num_tags = len(checkpoint["vocab"]["tags"])
    _check_scores_width(plan_dir, num_tags)
    plan_dir.mkdir(parents=True, exist_ok=True)
    staging = _staging(plan_dir, version)
    try:
        report = build_plan(
            onnx_path, staging / "model.plan", max_batch=serving.max_batch_size, precision=precision
        )
        text = model_config(plan_dir.name, "gpu", size, serving, num_tags=num_tags)
        _write_config(
            plan_dir, keep_rollout(plan_dir.with_name(plan_dir.name.removesuffix(PLAN_SUFFIX)), text)
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, plan_dir, version)
    return report


def load_calibration_images(folder: Path, size: tuple[int, int], limit: int) -> np.ndarray:
    """Up to ``limit`` images from ``folder`` decoded exactly as the worker decodes uploads (uint8 NHWC)."""
    from contracts.photos import decode

    if not folder.is_dir():
        raise ValueError(f"calibration folder {folder} not found")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[
        :limit
    ]
    if not paths:
        raise ValueError(f"no .jpg/.png/.webp images in calibration folder {folder}")
    return np.stack([decode(p.read_bytes(), (size[1], size[0]), 50_000_000) for p in paths])


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 8,16,32, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom export",
        description="Export a checkpoint as version N+1 of a Triton model (vocabulary and thresholds included).",
    )
    defaults = ServingConfig()
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt from darkroom train")
    parser.add_argument("--repo", type=Path, default=Path("triton_models"), help="Triton model repository")
    parser.add_argument("--name", default="tagger", help="model name (default tagger)")
    parser.add_argument("--target", choices=TARGETS, default="cpu",
                        help="cpu: ONNX Runtime; gpu: TensorRT plan + thresholding front")  # fmt: skip
    parser.add_argument("--backend", choices=BACKENDS, default="python",
                        help="cpu: python (inside the Python backend; the embedded server) or onnxruntime "
                        "(Triton's ONNX Runtime backend + thresholding front; NGC Triton)")  # fmt: skip
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size)
    parser.add_argument("--preferred-batch-sizes", type=_batch_sizes, default=defaults.preferred_batch_sizes,
                        metavar="B,B,...", help="dynamic batching's preferred sizes (default 8,16,32)")  # fmt: skip
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us)
    parser.add_argument("--instances", type=int, default=defaults.instances, help="instance_group count")
    parser.add_argument("--intra-op-threads", type=int, default=defaults.intra_op_threads,
                        help="ONNX Runtime threads per CPU instance (0 = all cores)")  # fmt: skip
    parser.add_argument("--version-policy", default="latest:1", metavar="POLICY",
                        help="latest:N (default latest:1), all, or specific:1,2,...")  # fmt: skip
    parser.add_argument("--precision", choices=PRECISIONS, help="TensorRT precision (gpu; default fp16)")
    parser.add_argument("--calibration-images", type=Path, metavar="DIR",
                        help="sample photos that calibrate the INT8 Q/DQ graph (gpu)")  # fmt: skip
    parser.add_argument("--calibration-count", type=int, default=512, help="at most this many (default 512)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``darkroom export``: print the new version folder; exit 2 with one line naming the problem."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        serving = ServingConfig(
            max_batch_size=args.max_batch_size,
            preferred_batch_sizes=args.preferred_batch_sizes,
            max_queue_delay_us=args.max_queue_delay_us,
            instances=args.instances,
            intra_op_threads=args.intra_op_threads,
            **parse_version_policy(args.version_policy),
        )
        serving.check()
        if args.target == "gpu" and args.backend != "python":
            raise ValueError("--backend applies to --target cpu; the gpu target serves a TensorRT plan")
        checkpoint = load_checkpoint(args.checkpoint)
        calibration = None
        if args.target == "gpu":
            from trainer.tensorrt import (
                TENSORRT_VERSION,
                TRITON_IMAGE,
                TensorRTUnavailable,
                require_tensorrt,
                same_release,
            )

            try:
                trt = require_tensorrt()
            except TensorRTUnavailable as exc:
                raise ValueError(f"--target gpu: {exc}") from None
            if not same_release(trt.__version__):
                raise ValueError(
                    f"--target gpu: TensorRT {trt.__version__} builds plans that {TRITON_IMAGE} (TensorRT "
                    f"{TENSORRT_VERSION}) cannot load; pip install '.[gpu]'"
                )
            if args.calibration_images:
                calibration = load_calibration_images(
                    args.calibration_images, tuple(checkpoint["input_size"]), args.calibration_count
                )
        elif args.calibration_images or args.precision:
            raise ValueError("--precision and --calibration-images apply to --target gpu only")
        version_dir = write_version(
            args.repo, checkpoint, args.name, serving, args.target, args.precision or "fp16", calibration,
            backend=args.backend,
        )  # fmt: skip
    except (ValueError, OSError) as exc:
        parser.exit(2, f"darkroom export: error: {exc}\n")
    print(f"added {version_dir} ({args.target}, {args.backend if args.target == 'cpu' else 'tensorrt'})")
    return 0
