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


def test_int8_engine_from_the_qdq_graph_keeps_the_general_taggers_tags(trt, tmp_path):
    """Explicit quantization end to end on real photos: the plan built from the Q/DQ graph (no calibrator)
    computes what that graph computes in ONNX Runtime, and keeps the float model's tags (test_quantize.py's
    tolerance)."""
    pytest.importorskip("skimage", reason="the sample photos come from scikit-image (dev extra)")
    from tests.trainer.test_quantize import MIN_MEAN_JACCARD, MIN_TOP_TAG_AGREEMENT
    from trainer.general.model import general_checkpoint
    from trainer.general.samples import calibration_photos, decode_for, sample_photos
    from trainer.tensorrt import Engine, same_release

    general = general_checkpoint()
    front = write_version(
        tmp_path, general, target="gpu", precision="int8", calibration=calibration_photos(general)
    )
    report = json.loads((front / "metadata.json").read_text())
    assert report["tensorrt"]["precision"] == "int8" and report["quantization"]["qdq_pairs"] > 0
    assert report["tensorrt"]["loads_in"] or not same_release(trt.__version__)
    images = np.stack([decode_for(general, p) for p in sample_photos().values()])
    got = Engine(tmp_path / "tagger_trt" / front.name / "model.plan")(images)
    scores = {
        kind: ort.InferenceSession(str(front / name), providers=["CPUExecutionProvider"]).run(
            ["SCORES"], {"IMAGE": images}
        )[0]
        for kind, name in (("float", "model.onnx"), ("qdq", "model.qdq.onnx"))
    }
    tags, thresholds = general["vocab"]["tags"], np.asarray(general["thresholds"], np.float32)
    want = [{t[0] for t in row} for row in select_tags(scores["float"], tags, thresholds)]
    have = [{t[0] for t in row} for row in select_tags(got, tags, thresholds)]
    jaccard = np.mean([len(a & b) / len(a | b) if a | b else 1.0 for a, b in zip(want, have, strict=True)])
    top = np.mean(scores["float"].argmax(1) == got.argmax(1))
    print(
        f"\nINT8 plan vs FP32: mean Jaccard {jaccard:.3f}, top tag same {top:.3f}; "
        f"max |plan - Q/DQ in ONNX Runtime| {np.abs(got - scores['qdq']).max():.3f}"
    )
    assert jaccard >= MIN_MEAN_JACCARD and top >= MIN_TOP_TAG_AGREEMENT
