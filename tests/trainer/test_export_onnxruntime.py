"""The ONNX Runtime backend variant: a model Triton's own backend can serve, behind the same front.

Triton's ONNX Runtime backend is not in the embedded tritonserver wheel, so it cannot run here: these tests
check what it is given (its config.pbtxt, as Triton's ModelConfig, against the ONNX graph and the contract),
and that the front's tags from that graph's scores are exactly the Python-backend variant's tags on real
photos. The backend's part is stood in for by ONNX Runtime in this process with the config's thread
settings; the front is the version's own ``model.py``, initialised as Triton initialises it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from contracts.tensors import INPUT_NAME, MODEL_NAME, SCORES_OUTPUT, TAGS_OUTPUT
from trainer.export import ServingConfig, read_model_config, versions, write_version
from trainer.export import main as export_main
from trainer.general.model import general_checkpoint
from trainer.general.samples import decode_for, sample_photos

pb = model_config_pb2


@pytest.fixture(scope="module")
def general() -> dict:
    return general_checkpoint()


@pytest.fixture(scope="module")
def photos(general) -> dict[str, np.ndarray]:
    return {name: decode_for(general, photo) for name, photo in sample_photos().items()}


@pytest.fixture(scope="module")
def repos(general, tmp_path_factory) -> dict[str, Path]:
    """The same checkpoint exported as both CPU variants."""
    root = tmp_path_factory.mktemp("variants")
    serving = ServingConfig(intra_op_threads=2, instances=2, preferred_batch_sizes=(4, 8))
    for backend in ("python", "onnxruntime"):
        write_version(root / backend, general, serving=serving, backend=backend)
    return {"python": root / "python", "onnxruntime": root / "onnxruntime"}


def _front(version_dir: Path) -> object:
    """The version's own ``model.py``, initialised with the arguments Triton passes (no server needed)."""
    spec = importlib.util.spec_from_file_location(f"front_{id(version_dir)}", version_dir / "model.py")
    module: ModuleType = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    config = read_model_config(version_dir.parent / "config.pbtxt")
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
        }
    )
    model.module = module
    return model


def _ort_backend(model_dir: Path, version: str) -> ort.InferenceSession:
    """ONNX Runtime configured from the model's config.pbtxt, as the ONNX Runtime backend configures it."""
    params = {k: v.string_value for k, v in read_model_config(model_dir / "config.pbtxt").parameters.items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params["intra_op_thread_count"])
    options.inter_op_num_threads = int(params["inter_op_thread_count"])
    return ort.InferenceSession(
        str(model_dir / version / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )


def _tags(front, scores: np.ndarray) -> list[bytes]:
    """The TAGS output the front's ``execute`` builds from ``scores`` (the same two functions)."""
    m = front.module
    return list(m.encode_tags(m.select_tags(scores, front.tags, front.thresholds, front.ids))[:, 0])


def test_onnxruntime_model_config_is_a_triton_model_config_for_the_graph(repos, general):
    model_dir = repos["onnxruntime"] / f"{MODEL_NAME}_onnx"
    config = read_model_config(model_dir / "config.pbtxt")  # Triton's own ModelConfig message
    num_tags = len(general["vocab"]["tags"])
    h, w = general["input_size"]
    assert config.name == model_dir.name and config.backend == "onnxruntime" and not config.platform
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        (INPUT_NAME, pb.TYPE_UINT8, [h, w, 3])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        (SCORES_OUTPUT, pb.TYPE_FP32, [num_tags])
    ]
    assert config.max_batch_size == 64
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert [(g.kind, g.count) for g in config.instance_group] == [(pb.ModelInstanceGroup.KIND_CPU, 2)]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {"intra_op_thread_count": "2", "inter_op_thread_count": "1"}
    assert config.version_policy.latest.num_versions == 2  # the front's outgoing version still finds its own
    graph = onnx.load(str(model_dir / "1" / "model.onnx")).graph
    assert [i.name for i in graph.input] == [INPUT_NAME] and [o.name for o in graph.output] == [SCORES_OUTPUT]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [h, w, 3]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == num_tags


def test_front_pins_the_same_version_of_the_onnxruntime_model_and_holds_no_weights(repos):
    front_dir = repos["onnxruntime"] / MODEL_NAME
    config = read_model_config(front_dir / "config.pbtxt")
    assert config.backend == "python"
    assert config.parameters["scores_model"].string_value == f"{MODEL_NAME}_onnx"
    assert {o.name for o in config.output} == {SCORES_OUTPUT, TAGS_OUTPUT}
    names = {p.name for p in (front_dir / "1").iterdir()}
    assert (
        names >= {"model.py", "vocab.json", "thresholds.json", "metadata.json"} and "model.onnx" not in names
    )
    assert json.loads((front_dir / "1" / "metadata.json").read_text())["backend"] == "onnxruntime"


def test_onnxruntime_variant_tags_real_photos_exactly_as_the_python_backend_variant(repos, photos):
    python_front = _front(repos["python"] / MODEL_NAME / "1")
    ort_front = _front(repos["onnxruntime"] / MODEL_NAME / "1")
    assert type(python_front.scores).__name__ == "OnnxScores"
    assert type(ort_front.scores).__name__ == "ModelScores"
    assert (ort_front.scores.model, ort_front.scores.version) == (f"{MODEL_NAME}_onnx", 1)
    backend = _ort_backend(repos["onnxruntime"] / f"{MODEL_NAME}_onnx", "1")
    images = np.stack(list(photos.values()))
    for batch in (images[:1], images[:3], images):  # dynamic batching hands the backend any size
        python_scores = python_front.scores(batch)
        served_scores = backend.run([SCORES_OUTPUT], {INPUT_NAME: batch})[0]
        assert np.abs(served_scores - python_scores).max() < 1e-6
        assert _tags(ort_front, served_scores) == _tags(python_front, python_scores)
    tags = {
        name: [t[0] for t in json.loads(row)]
        for name, row in zip(photos, _tags(ort_front, served_scores), strict=True)
    }
    assert sum(bool(t) for t in tags.values()) >= 5, tags  # real tags, not agreement on nothing
    assert "cat" in tags["chelsea"] and "coffee" in tags["coffee"]


def test_second_export_numbers_both_models_alike(repos, general, tmp_path):
    repo = tmp_path / "repo"
    write_version(repo, general, backend="onnxruntime")
    front = write_version(repo, general, backend="onnxruntime")
    assert front.name == "2"
    assert versions(repo / MODEL_NAME) == versions(repo / f"{MODEL_NAME}_onnx") == [1, 2]


def test_backend_option_is_refused_for_the_gpu_target(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export_main(["--checkpoint", str(tmp_path / "x.pt"), "--target", "gpu", "--backend", "onnxruntime"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "--backend applies to --target cpu" in err[0]
