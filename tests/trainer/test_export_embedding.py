"""The exported graph's EMBEDDING is the PyTorch backbone's pooled features, the served model returns it as
float16, and training can take its features from embedding records instead of running the backbone."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tritonclient.grpc import model_config_pb2

from contracts.embeddings import embedding_record
from contracts.photos import decode
from trainer.checkpoint import load_tagger
from trainer.embeddings import collect, features_from_embeddings
from trainer.export import export_onnx, read_model_config, write_version
from trainer.finetune import extract_features
from trainer.serving.tagger_backend import OnnxScores


@pytest.fixture(scope="module")
def images(synthetic_model, checkpoint):
    h, w = checkpoint["input_size"]
    paths = sorted((synthetic_model / "val").glob("*.jpg"))[:12]
    return np.stack([decode(p.read_bytes(), (w, h), 10_000_000) for p in paths])


def test_onnx_embedding_equals_the_pytorch_backbone_s_pooled_features(synthetic_model, checkpoint, images):
    version = synthetic_model / "repo" / "tagger" / "1"
    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    tagger = load_tagger(checkpoint)
    for batch in (images[:1], images):  # the batch axis is dynamic for both outputs
        scores, embedding = session.run(["SCORES", "EMBEDDING"], {"IMAGE": batch})
        with torch.no_grad():
            x = torch.from_numpy(batch)
            want = tagger.net.forward_features(tagger.normalize(x)).numpy()
            want_scores = tagger(x).numpy()
        assert embedding.dtype == np.float32 and embedding.shape == want.shape
        assert np.abs(embedding - want).max() < 1e-4 * max(1.0, np.abs(want).max())
        assert np.abs(scores - want_scores).max() < 1e-4  # the scores did not change
    assert np.abs(want).max() > 0.1, "features of real photos, not zeros"


def test_config_and_metadata_declare_the_float16_embedding(synthetic_model, images):
    model_dir = synthetic_model / "repo" / "tagger"
    config = read_model_config(model_dir / "config.pbtxt")
    [output] = [o for o in config.output if o.name == "EMBEDDING"]
    meta = json.loads((model_dir / "1" / "metadata.json").read_text())["embedding"]
    assert meta == {"output": "EMBEDDING", "dim": output.dims[0], "dtype": "float16"}
    assert output.data_type == model_config_pb2.TYPE_FP16
    scores = OnnxScores(str(model_dir / "1"), 1)
    assert scores.has_embedding
    served_scores, served = scores.with_embedding(images[:3])
    assert served.dtype == np.float16 and served.shape == (3, output.dims[0])
    np.testing.assert_array_equal(served_scores, scores(images[:3]))


def test_old_graphs_and_bls_variants_have_no_embedding(model_repo, checkpoint, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    export_onnx(load_tagger(checkpoint), old / "model.onnx", tuple(checkpoint["input_size"]))
    assert not OnnxScores(str(old), 1).has_embedding
    write_version(model_repo, checkpoint, backend="onnxruntime")  # scores from Triton's ONNX Runtime backend
    config = read_model_config(model_repo / "tagger" / "config.pbtxt")
    assert "EMBEDDING" not in {o.name for o in config.output}
    assert "embedding" not in json.loads((model_repo / "tagger" / "2" / "metadata.json").read_text())


def test_collect_keeps_one_version_and_counts_what_it_skips() -> None:
    rng = np.random.default_rng(0)
    good = {f"p{i}": rng.normal(size=16).astype(np.float16) for i in range(3)}
    values = [embedding_record(pid, "2", v) for pid, v in good.items()]
    values += [embedding_record("p0", "1", np.ones(16)), None, b"{", embedding_record("p9", "2", np.ones(8))]
    read = collect(values, "2")
    assert set(read.vectors) == set(good)
    assert all(np.array_equal(read.vectors[p], v) for p, v in good.items())
    assert read.records == 7 and read.other_versions == {"1": 1}
    assert sum(read.skipped.values()) == 3


def test_features_come_from_the_records_and_another_backbone_is_refused(checkpoint, images):
    tagger = load_tagger(checkpoint)
    ids = [f"p{i}" for i in range(len(images))]
    own = extract_features(tagger, images)
    vectors = {pid: own[i, 0].astype(np.float16) for i, pid in enumerate(ids) if i % 3}  # some missing
    features, found = features_from_embeddings(tagger, images, ids, vectors)
    assert found == len(vectors) and features.shape == own.shape
    for i, pid in enumerate(ids):
        if pid in vectors:
            np.testing.assert_array_equal(features[i, 0], vectors[pid].astype(np.float32))
            np.testing.assert_array_equal(features[i, 1], features[i, 0])  # the topic has no mirror view
        else:
            np.testing.assert_allclose(features[i], own[i], rtol=1e-5, atol=1e-5)
    shuffled = dict(zip(vectors, reversed(list(vectors.values())), strict=True))  # right shape, wrong photos
    with pytest.raises(ValueError, match="another backbone"):
        features_from_embeddings(tagger, images, ids, shuffled)
