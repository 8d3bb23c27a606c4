"""TensorRT engines built from the exported ONNX graph: same contract, scores close to ONNX Runtime.

These need the ``tensorrt`` package and a CUDA GPU; elsewhere they skip, saying which is missing.
``scripts/gpu_check.sh`` runs them (and the throughput benchmark) on a machine that has both.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from contracts.photos import decode
from trainer.export import write_version
from trainer.serving.tagger_backend import select_tags
from trainer.tensorrt import TensorRTUnavailable, require_tensorrt

try:  # decided at collection, so a machine without TensorRT skips before training the session's model
    TRT = require_tensorrt()
    MISSING = ""
except TensorRTUnavailable as exc:
    TRT, MISSING = None, str(exc)
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(TRT is None, reason=f"TensorRT path not exercised: {MISSING}"),
]


@pytest.fixture(scope="module")
def trt():
    return TRT


@pytest.fixture(scope="module")
def photos(synthetic_model, checkpoint):
    h, w = checkpoint["input_size"]
    paths = sorted((synthetic_model / "val").glob("*.jpg"))
    return np.stack([decode(p.read_bytes(), (w, h), 10_000_000) for p in paths])


@pytest.mark.parametrize(
    ("precision", "max_diff", "min_same_tags"), [("fp16", 5e-3, 0.95), ("int8", 0.08, 0.7)]
)
def test_engine_matches_onnx_runtime(trt, model_repo, checkpoint, photos, precision, max_diff, min_same_tags):
    from trainer.tensorrt import Engine

    front = write_version(model_repo, checkpoint, target="gpu", precision=precision, calibration=photos[:256])
    plan = model_repo / "tagger_trt" / front.name / "model.plan"
    engine = Engine(plan)
    held_out = photos[256:320]
    session = ort.InferenceSession(str(front / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["SCORES"], {"IMAGE": held_out})[0]
    for batch in (1, 7, 64):  # the profile spans batch 1..max
        got = engine(held_out[:batch])
        assert got.shape == want[:batch].shape
    got = engine(held_out)
    thresholds = np.asarray(checkpoint["thresholds"], np.float32)
    tags = checkpoint["vocab"]["tags"]
    same = np.mean(
        [
            [t for t, _ in a] == [t for t, _ in b]
            for a, b in zip(
                select_tags(got, tags, thresholds), select_tags(want, tags, thresholds), strict=True
            )
        ]
    )
    print(
        f"\n{precision}: max |TensorRT - ONNX Runtime| {np.abs(got - want).max():.2e}; same tags {same:.2%}"
    )
    assert np.abs(got - want).max() < max_diff and same >= min_same_tags
    report = json.loads((front / "metadata.json").read_text())["tensorrt"]
    assert report["precision"] == precision and report["max_batch"] == 64


def test_engine_io_equals_the_plan_config(trt, model_repo, checkpoint, photos):
    from trainer.tensorrt import Engine

    front = write_version(model_repo, checkpoint, target="gpu", precision="fp16")
    engine = Engine(model_repo / "tagger_trt" / front.name / "model.plan").engine
    h, w = checkpoint["input_size"]
    assert engine.get_tensor_dtype("IMAGE") == trt.DataType.UINT8
    assert engine.get_tensor_dtype("SCORES") == trt.DataType.FLOAT
    assert tuple(engine.get_tensor_shape("IMAGE")) == (-1, h, w, 3)
    assert tuple(engine.get_tensor_shape("SCORES")) == (-1, len(checkpoint["vocab"]["tags"]))
    assert tuple(engine.get_tensor_profile_shape("IMAGE", 0)[2]) == (64, h, w, 3)
