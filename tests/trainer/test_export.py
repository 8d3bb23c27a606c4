"""The exported model is the trained model: same numbers, and the names Triton's config promises."""

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stream.images import decode
from trainer.export import ServingConfig, model_config, versions, write_version
from trainer.serving.tagger_backend import encode_tags, select_tags
from trainer.train import load_tagger

ONNX_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


@pytest.fixture(scope="module")
def checkpoint(synthetic_model):
    return torch.load(synthetic_model / "checkpoint" / "checkpoint.pt", weights_only=False)


@pytest.fixture(scope="module")
def real_images(synthetic_model, checkpoint):
    h, w = checkpoint["input_size"]
    paths = sorted((synthetic_model / "val").glob("*.jpg"))[:24]
    return np.stack([decode(p.read_bytes(), (w, h), 10_000_000) for p in paths])


def test_onnx_matches_pytorch_on_real_images(synthetic_model, checkpoint, real_images):
    onnx_path = synthetic_model / "repo" / "tagger" / "1" / "model.onnx"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (real_images[:1], real_images[:7], real_images):  # the batch axis is dynamic
        got = session.run(["SCORES"], {"IMAGE": batch})[0]
        with torch.no_grad():
            want = load_tagger(checkpoint)(torch.from_numpy(batch)).numpy()
        assert got.shape == want.shape == (len(batch), len(checkpoint["vocab"]["tags"]))
        assert np.abs(got - want).max() < 1e-4


def _config_tensors(text: str, section: str) -> dict[str, tuple[str, list[int]]]:
    block = re.search(rf"{section} \[(.*?)\n\]", text, re.S)[1]
    return {
        m[1]: (m[2], [int(d) for d in m[3].split(",")])
        for m in re.finditer(r'name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \]', block)
    }


def test_onnx_names_types_and_shapes_equal_config_pbtxt(synthetic_model):
    model_dir = synthetic_model / "repo" / "tagger"
    config = (model_dir / "config.pbtxt").read_text()
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    inputs, outputs = _config_tensors(config, "input"), _config_tensors(config, "output")
    for tensor, declared in [(graph.input[0], inputs), (graph.output[0], outputs)]:
        dtype, dims = declared[tensor.name]
        shape = tensor.type.tensor_type.shape.dim
        assert ONNX_TYPES[tensor.type.tensor_type.elem_type] == dtype
        assert shape[0].dim_param, "batch axis must be dynamic (max_batch_size > 0 in config)"
        onnx_dims = [d.dim_value if d.dim_value else -1 for d in shape[1:]]
        assert onnx_dims == dims or dims == [-1]  # SCORES is [-1]: the vocabulary size belongs to the version
    assert {i.name for i in graph.input} == set(inputs)
    assert {o.name for o in graph.output} | {"TAGS"} == set(outputs)
    vocab = json.loads((model_dir / "1" / "vocab.json").read_text())
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == len(vocab["tags"])


def test_new_version_is_added_beside_the_old_and_size_mismatch_is_refused(model_repo, checkpoint):
    assert versions(model_repo / "tagger") == [1]
    v2 = write_version(model_repo, checkpoint)
    assert v2.name == "2" and versions(model_repo / "tagger") == [1, 2]
    assert {p.name for p in v2.iterdir()} >= {"model.onnx", "model.py", "vocab.json", "thresholds.json"}
    assert not [p for p in (model_repo / "tagger").iterdir() if p.name.startswith(".")]
    with pytest.raises(ValueError, match="input size"):
        write_version(model_repo, {**checkpoint, "input_size": [128, 128]})


def test_config_declares_dynamic_batching_and_instances():
    text = model_config("tagger", "cpu", (96, 96), ServingConfig(max_batch_size=32, instances=2, preferred_batch_sizes=(8, 64)))
    assert "max_batch_size: 32" in text and "preferred_batch_size: [ 8 ]" in text and "count: 2" in text
    assert 'platform: "tensorrt_plan"' in model_config("tagger", "gpu", (96, 96), ServingConfig())
    with pytest.raises(ValueError, match="unknown target"):
        model_config("tagger", "tpu", (96, 96), ServingConfig())


def test_select_tags_applies_per_tag_thresholds_sorted_by_score():
    scores = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]], dtype=np.float32)
    selected = select_tags(scores, ["sea", "sky", "boat"], np.array([0.5, 0.1, 0.7], dtype=np.float32))
    assert selected == [[("sea", 0.9), ("sky", 0.2)], [("sky", 0.1)]]
    encoded = encode_tags(selected)
    assert encoded.shape == (2, 1) and json.loads(encoded[0, 0]) == [["sea", 0.9], ["sky", 0.2]]
