"""TensorRT engines from the exported ONNX graph: FP16, or INT8 from a Q/DQ graph (explicit quantization).

Written against the TensorRT 10 Python API. A plan loads only in the TensorRT release that built it, so the
Triton image the manifests run and the TensorRT that ``darkroom export --target gpu`` builds with are one
fact, kept here: :data:`TRITON_IMAGE` and :data:`TENSORRT_VERSION` (the ``gpu`` extra in pyproject.toml pins
the same version; tests/deploy/test_triton_image.py holds the manifests, the docs and the pin to it).
Device buffers are torch CUDA tensors, so nothing beyond ``tensorrt`` and a CUDA build of PyTorch is needed.
On a machine without either, :func:`require_tensorrt` raises :class:`TensorRTUnavailable` naming what is
missing.

INT8 does not use TensorRT's calibrators (``IInt8EntropyCalibrator2`` and friends are deprecated in
TensorRT 10): trainer/quantize.py writes a Q/DQ graph calibrated on sample photos, and the builder only
needs the INT8 flag to turn its Q/DQ pairs into INT8 kernels.

The engine keeps the ONNX graph's contract: input ``IMAGE`` uint8 ``[N, H, W, 3]``, output ``SCORES``
float32 ``[N, tags]``, one optimization profile from batch 1 to the model's max batch size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.serving.tagger_backend import INPUT, SCORES

#: NGC Triton release the manifests deploy → the TensorRT it ships. From NVIDIA's Triton release notes:
#: 25.06 is built on CUDA 12.9.1.010 and is the last release on CUDA 12 (there is no 25.07; 25.08 moved to
#: CUDA 13), which the ``tensorrt-cu12`` wheels target; Triton's compatibility matrix lists TensorRT
#: 10.11.0.33 for its containers on that CUDA build. Change both together, with the `gpu` extra's pin.
TRITON_RELEASE = "25.06"
TRITON_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-py3"
TENSORRT_VERSION = "10.11.0.33"


def same_release(version: str) -> bool:
    """Whether TensorRT ``version`` can build plans the deployed Triton loads (major.minor equal)."""
    return version.split(".")[:2] == TENSORRT_VERSION.split(".")[:2]


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing; the message says which."""


def require_tensorrt() -> Any:
    """The ``tensorrt`` module, once it and a CUDA device are known to be usable."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"needs the TensorRT Python package of the deployed Triton (pip install '.[gpu]'): {exc}"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable(
            f"needs a CUDA GPU and a CUDA build of PyTorch (torch {torch.__version__} sees no CUDA device)"
        )
    return trt


def _logger() -> Any:
    trt = require_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    max_batch: int,
    precision: str = "fp16",
    workspace_bytes: int = 2 << 30,
) -> dict:
    """Build and write ``plan_path`` from ``onnx_path``; return a report (precision, seconds, sizes).

    ``precision``: ``fp32``, ``fp16`` or ``int8``. INT8 needs a Q/DQ graph (trainer.quantize.quantize_qdq):
    its quantized layers run in INT8, the rest in FP16. The profile covers batch 1..``max_batch`` with
    ``max_batch // 2`` as the shape TensorRT tunes for (dynamic batching fills batches to the preferred
    sizes, around there).
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if precision == "int8":
        from trainer.quantize import is_qdq

        if not is_qdq(onnx_path):
            raise ValueError(
                f"INT8 builds from a Q/DQ graph and {onnx_path} has no QuantizeLinear node; "
                "make one with trainer.quantize.quantize_qdq (darkroom export does)"
            )
    trt = require_tensorrt()
    logger = _logger()
    started = time.monotonic()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    shape = tuple(network.get_input(0).shape)[1:]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ scales, no calibrator
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}; see its log above")
    plan_path.write_bytes(bytes(serialized))
    return {
        "tensorrt": trt.__version__,
        "loads_in": TRITON_IMAGE if same_release(trt.__version__) else None,
        "precision": precision,
        "max_batch": max_batch,
        "build_s": round(time.monotonic() - started, 1),
        "plan_bytes": plan_path.stat().st_size,
    }


class Engine:
    """A deserialized plan with one execution context: ``engine(images)`` → scores (for parity and speed)."""

    def __init__(self, plan_path: Path) -> None:
        trt = require_tensorrt()
        import torch

        self.torch = torch
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise ValueError(f"{plan_path} is not a TensorRT plan for this TensorRT/GPU")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()

    def run_device(self, images: Any) -> Any:
        """Scores for a uint8 CUDA tensor ``[N, H, W, 3]``, as a float32 CUDA tensor (no host copies)."""
        torch = self.torch
        self.context.set_input_shape(INPUT, tuple(images.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(SCORES)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(INPUT, images.data_ptr())
        self.context.set_tensor_address(SCORES, out.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.run_device(self.torch.from_numpy(np.ascontiguousarray(images)).cuda()).cpu().numpy()

    def throughput(self, shape: tuple[int, ...], batch: int, seconds: float = 2.0) -> float:
        """Images per second at ``batch`` for inputs of ``shape`` = (H, W, 3), device-resident."""
        images = self.torch.randint(0, 256, (batch, *shape), dtype=self.torch.uint8, device="cuda")
        for _ in range(5):
            self.run_device(images)
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            self.run_device(images)
            runs += 1
        return runs * batch / (time.perf_counter() - started)
