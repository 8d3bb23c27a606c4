"""The exported model is the trained model: same numbers, and the names Triton's config promises."""

import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from contracts.photos import decode
from trainer.checkpoint import load_tagger
from trainer.export import (
    ServingConfig,
    model_config,
    parse_version_policy,
    read_model_config,
    versions,
    write_version,
)
from trainer.export import main as export_main
from trainer.quantize import is_qdq
from trainer.serving.tagger_backend import encode_tags, select_tags

ONNX_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


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


def _config_tensors(config: model_config_pb2.ModelConfig, section: str) -> dict[str, tuple[str, list[int]]]:
    """name → (data type, dims) of a config's inputs or outputs."""
    return {
        t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in getattr(config, section)
    }


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_onnx_names_types_and_shapes_equal_config_pbtxt(synthetic_model):
    model_dir = synthetic_model / "repo" / "tagger"
    config = read_model_config(model_dir / "config.pbtxt")
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
    text = model_config(
        "tagger",
        "cpu",
        (96, 96),
        ServingConfig(max_batch_size=32, instances=2, preferred_batch_sizes=(8, 64)),
    )
    config = _parse(text)
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [8]
    assert [g.count for g in config.instance_group] == [2]
    assert _parse(model_config("tagger", "gpu", (96, 96), ServingConfig())).platform == "tensorrt_plan"
    with pytest.raises(ValueError, match="unknown target"):
        model_config("tagger", "tpu", (96, 96), ServingConfig())


def test_select_tags_applies_per_tag_thresholds_sorted_by_score():
    scores = np.array([[0.9, 0.2, 0.6], [0.1, 0.1, 0.1]], dtype=np.float32)
    selected = select_tags(scores, ["sea", "sky", "boat"], np.array([0.5, 0.1, 0.7], dtype=np.float32))
    assert selected == [[("sea", 0.9), ("sky", 0.2)], [("sky", 0.1)]]
    encoded = encode_tags(selected)
    assert encoded.shape == (2, 1) and json.loads(encoded[0, 0]) == [["sea", 0.9], ["sky", 0.2]]


# -- the repository writer and `darkroom export` -----------------------------------------------------------
def fake_plan_builder(calls: list):
    """Stands in for TensorRT where there is none: records the call and writes a placeholder plan."""

    def build(onnx_path, plan_path, max_batch, precision):
        calls.append({"onnx": onnx_path, "max_batch": max_batch, "precision": precision})
        plan_path.write_bytes(b"plan built from " + onnx_path.name.encode())
        return {"precision": precision, "max_batch": max_batch}

    return build


def test_export_cli_adds_the_next_version_with_the_serving_options(synthetic_model, model_repo, capsys):
    ckpt = synthetic_model / "checkpoint" / "checkpoint.pt"
    argv = ["--checkpoint", str(ckpt), "--repo", str(model_repo), "--max-batch-size", "32",
            "--preferred-batch-sizes", "4,16", "--max-queue-delay-us", "500", "--instances", "2",
            "--version-policy", "latest:2"]  # fmt: skip
    assert export_main(argv) == 0
    assert f"{model_repo / 'tagger' / '2'}" in capsys.readouterr().out
    assert versions(model_repo / "tagger") == [1, 2]
    config = read_model_config(model_repo / "tagger" / "config.pbtxt")
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [g.count for g in config.instance_group] == [2] and config.version_policy.latest.num_versions == 2
    thresholds = json.loads((model_repo / "tagger" / "2" / "thresholds.json").read_text())
    assert thresholds["tags"] == json.loads((model_repo / "tagger" / "2" / "vocab.json").read_text())["tags"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preferred-batch-sizes", "8,128"], "preferred batch sizes [128] are outside 1..64"),
        (["--version-policy", "newest"], "version policy 'newest'"),
        (["--version-policy", "specific:"], "version policy 'specific:'"),
        (["--instances", "0"], "instances must be >= 1"),
        (["--precision", "int8"], "apply to --target gpu only"),
        (["--target", "gpu"], "--target gpu: needs"),
    ],
)
def test_export_cli_names_the_bad_option_without_a_traceback(
    synthetic_model, model_repo, capsys, extra, message
):
    if extra == ["--target", "gpu"]:
        pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: --target gpu may be valid here")
    ckpt = synthetic_model / "checkpoint" / "checkpoint.pt"
    with pytest.raises(SystemExit) as exit_:
        export_main(["--checkpoint", str(ckpt), "--repo", str(model_repo), *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err, err
    assert versions(model_repo / "tagger") == [1]


def test_export_cli_refuses_a_missing_or_foreign_checkpoint(model_repo, tmp_path, capsys):
    for path, message in [
        (tmp_path / "nope.pt", "not found"),
        (tmp_path / "other.pt", "not a Darkroom checkpoint"),
    ]:
        if path.name == "other.pt":
            torch.save({"weights": 1}, path)
        with pytest.raises(SystemExit):
            export_main(["--checkpoint", str(path), "--repo", str(model_repo)])
        err = capsys.readouterr().err
        assert f"darkroom export: error: {path}" in err or str(path) in err
        assert message in err and "Traceback" not in err


def test_version_policies_render_as_triton_expects():
    every = _parse(model_config("t", "cpu", (96, 96), ServingConfig(**parse_version_policy("all"))))
    assert every.version_policy.WhichOneof("policy_choice") == "all"
    specific = ServingConfig(**parse_version_policy("specific:1,3"))
    assert list(_parse(model_config("t", "cpu", (96, 96), specific)).version_policy.specific.versions) == [
        1,
        3,
    ]
    # the plan keeps one version more, so the front's outgoing version still finds its plan
    plan = _parse(model_config("t", "gpu", (96, 96), ServingConfig()))
    assert plan.version_policy.latest.num_versions == 2
    # and Triton's own text format is what is written: its parser reads every field back
    assert "version_policy {" in model_config("t", "gpu", (96, 96), ServingConfig())


def test_unchanged_config_is_not_rewritten_so_triton_only_adds_the_version(model_repo, checkpoint):
    config = model_repo / "tagger" / "config.pbtxt"
    before = config.stat().st_mtime_ns
    time.sleep(0.01)
    write_version(model_repo, checkpoint)
    assert config.stat().st_mtime_ns == before


def test_gpu_target_writes_the_plan_and_a_front_that_pins_the_same_version(
    model_repo, checkpoint, real_images
):
    calls: list = []
    front = write_version(model_repo, checkpoint, target="gpu", precision="int8", calibration=real_images,
                          build_plan=fake_plan_builder(calls))  # fmt: skip
    plan_model = model_repo / "tagger_trt"
    assert front == model_repo / "tagger" / "2" and versions(plan_model) == [2]
    # INT8 is built from the Q/DQ graph calibrated on the photos, kept beside the float graph
    assert (plan_model / "2" / "model.plan").read_bytes() == b"plan built from model.qdq.onnx"
    [call] = calls
    assert call["precision"] == "int8" and call["max_batch"] == 64 and call["onnx"].name == "model.qdq.onnx"
    assert is_qdq(front / "model.qdq.onnx") and not is_qdq(front / "model.onnx")
    quantization = json.loads((front / "metadata.json").read_text())["quantization"]
    assert quantization["calibration_images"] == len(real_images) and quantization["qdq_pairs"] > 0
    plan_config = read_model_config(plan_model / "config.pbtxt")
    num_tags = len(checkpoint["vocab"]["tags"])
    assert plan_config.platform == "tensorrt_plan"
    assert [g.kind for g in plan_config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert _config_tensors(plan_config, "output")["SCORES"] == ("TYPE_FP32", [num_tags])
    front_config = read_model_config(model_repo / "tagger" / "config.pbtxt")
    assert front_config.parameters["scores_model"].string_value == "tagger_trt"
    assert {p.name for p in front.iterdir()} >= {"model.py", "vocab.json", "thresholds.json", "model.onnx"}
    assert json.loads((front / "metadata.json").read_text())["tensorrt"]["precision"] == "int8"
    # TensorRT takes uint8 only as an input cast at once: the graph it is built from starts with that cast
    graph = onnx.load(str(front / "model.onnx")).graph
    assert graph.node[0].op_type == "Cast" and graph.node[0].input[0] == "IMAGE"
    cpu = ort.InferenceSession(
        str(model_repo / "tagger" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    gpu = ort.InferenceSession(str(front / "model.onnx"), providers=["CPUExecutionProvider"])
    diff = cpu.run(["SCORES"], {"IMAGE": real_images})[0] - gpu.run(["SCORES"], {"IMAGE": real_images})[0]
    assert np.abs(diff).max() < 1e-6


def test_a_failed_plan_build_adds_no_version(model_repo, checkpoint):
    def broken(*args, **kwargs):
        raise RuntimeError("TensorRT failed to build an engine")

    with pytest.raises(RuntimeError, match="failed to build"):
        write_version(model_repo, checkpoint, target="gpu", build_plan=broken)
    assert versions(model_repo / "tagger") == [1] and versions(model_repo / "tagger_trt") == []
    leftovers = [p for d in model_repo.iterdir() for p in d.iterdir() if p.name.startswith(".")]
    assert not leftovers
    with pytest.raises(ValueError, match="INT8 needs calibration images"):
        write_version(model_repo, checkpoint, target="gpu", precision="int8", build_plan=broken)
