"""INT8 by explicit quantization: a Q/DQ ONNX graph calibrated on sample photos, for TensorRT to build from.

TensorRT 10 deprecates its implicit-quantization calibrators (``IInt8EntropyCalibrator2``); the supported
way is a graph that carries its own ``QuantizeLinear``/``DequantizeLinear`` pairs, which TensorRT fuses into
INT8 kernels when the builder has the INT8 flag. ONNX Runtime's static quantizer writes such a graph on CPU:

* QDQ format, symmetric signed INT8 for activations and weights (TensorRT takes zero points of 0 only),
  weights per output channel;
* only convolutions and the classifier's Gemm are quantized, and not the stem convolution: the class → tag
  matrix, the softmax, the preprocessing and the first layer stay float (cheap, and where 8 bits moved
  tag scores most);
* activation ranges from photos decoded exactly as the worker decodes uploads (uint8 NHWC, like serving).

The same file runs in ONNX Runtime, so its tags can be compared with the float model's without a GPU
(tests/trainer/test_quantize.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from contracts.tensors import INPUT_NAME

#: the operators that get Q/DQ pairs; everything else stays float
QUANTIZED_OPS = ("Conv", "Gemm")


class _Photos:
    """ONNX Runtime's CalibrationDataReader protocol over uint8 photos, one at a time (the histogram
    calibrators stack what they collect, so every batch must have the same size)."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(images[i : i + 1] for i in range(len(images)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    def rewind(self) -> None:  # part of the protocol; the calibrators make one pass
        pass


def is_qdq(path: Path) -> bool:
    """Whether the ONNX graph at ``path`` carries explicit quantization (any QuantizeLinear node)."""
    import onnx

    return any(
        node.op_type == "QuantizeLinear" for node in onnx.load(str(path), load_external_data=False).graph.node
    )


def quantize_qdq(onnx_path: Path, out_path: Path, images: np.ndarray, method: str = "Percentile") -> dict:
    """Write the Q/DQ INT8 version of the float graph ``onnx_path`` to ``out_path``; return a short report.

    ``images``: uint8 ``[N, H, W, 3]`` calibration photos, decoded as the worker decodes uploads.
    ``method``: ONNX Runtime's calibration method; the 99.999th percentile of each activation's magnitude
    (the default) kept more tags than the plain min/max on the sample photos (docs/serving.md, "INT8").
    ValueError naming the problem when there are none or their size is not the graph's.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if images is None or not len(images):
        raise ValueError("INT8 needs calibration images (--calibration-images DIR)")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]
    if images.dtype != np.uint8 or list(images.shape[1:]) != dims:
        raise ValueError(
            f"calibration images are {images.dtype} {list(images.shape[1:])}, the graph takes uint8 {dims}"
        )
    # The stem convolution stays float: quantized, it moved tag scores by up to 0.5 on the sample photos
    # (0.14 with it float; docs/serving.md, "INT8").
    stem = [n.name for n in graph.node if n.op_type == "Conv"][:1]
    quantize_static(
        str(onnx_path),
        str(out_path),
        _Photos(images),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod[method],
        nodes_to_exclude=stem,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    nodes = onnx.load(str(out_path), load_external_data=False).graph.node
    return {
        "format": "onnx-qdq",
        "quantized_ops": list(QUANTIZED_OPS),
        "float_ops": stem,
        "calibration": method,
        "qdq_pairs": sum(n.op_type == "QuantizeLinear" for n in nodes),
        "calibration_images": len(images),
    }
