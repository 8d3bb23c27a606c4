"""The general tagger: its data files, real photos' classes and tags, and the exported model's parity."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2

from contracts.records import Upload, tag_event
from tests.trainer.test_export import fake_plan_builder
from tools.cli import main as darkroom
from trainer.checkpoint import load_tagger
from trainer.export import config_input_size, export_onnx, read_model_config, tensor_dims, write_version
from trainer.general import vocabulary
from trainer.general.model import general_checkpoint
from trainer.general.samples import classify, decode_for, sample_photos
from trainer.serving.tagger_backend import select_tags

ROOT = Path(__file__).resolve().parents[2]
# photo → (ImageNet classes one of which must be in the top-5, a tag the photo must get)
OBVIOUS = {
    "chelsea": ({"n02123045", "n02123159", "n02124075"}, "cat"),  # tabby, tiger cat, Egyptian cat
    "coffee": ({"n07920052", "n07930864"}, "coffee"),  # espresso, cup
    "rocket": ({"n03773504", "n04008634", "n04266014"}, "rocket"),  # missile, projectile, space shuttle
    "motorcycle": ({"n03785016", "n03791053"}, "motorcycle"),  # moped, motor scooter
    "china": ({"n03877845", "n02825657", "n03781244"}, "building"),  # palace, bell cote, monastery
    "flower": ({"n11939491"}, "flower"),  # daisy
    "grace_hopper": ({"n03763968"}, "uniform"),  # military uniform
}


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return general_checkpoint()


@pytest.fixture(scope="module")
def served(checkpoint) -> dict:
    """Sample photos decoded exactly as the worker decodes uploads, with PyTorch's classes and tags."""
    photos = sample_photos()
    images = np.stack([decode_for(checkpoint, photo) for photo in photos.values()])
    probs, scores = classify(load_tagger(checkpoint), images)
    return {"names": list(photos), "images": images, "probs": probs, "scores": scores}


def _tags(checkpoint: dict, scores: np.ndarray) -> list[list[tuple]]:
    thresholds = np.asarray(checkpoint["thresholds"], dtype=np.float32)
    return select_tags(scores, checkpoint["vocab"]["tags"], thresholds, checkpoint["vocab"]["ids"])


def test_imagenet_classes_are_the_1000_ilsvrc_synsets_in_output_order():
    classes = vocabulary.load_classes(vocabulary.DATA / "imagenet_classes.tsv")
    wnids = [w for w, _ in classes]
    assert len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert classes[0] == ("n01440764", "tench") and classes[999][0] == "n15075141"
    assert classes[281] == ("n02123045", "tabby cat") and classes[967] == ("n07920052", "espresso")


def test_classes_imply_their_tags_parents():
    vocab = vocabulary.load()
    assert {"tabby cat", "cat", "mammal", "animal", "pet"} <= set(vocab.class_tag_names("n02123045"))
    assert {"beach", "sea", "coast"} <= set(vocab.class_tag_names("n09428293"))  # seashore
    assert {"daisy", "flower", "plant"} <= set(vocab.class_tag_names("n11939491"))
    assert {"dog", "pet"} <= set(vocab.class_tag_names("n02099712"))  # Labrador retriever
    assert 200 <= len(vocab.tags) <= 600
    ids = {t.name: t.id for t in vocab.tags}
    assert ids["daisy"] == "n11939491" and ids["animal"] == "n00015388"
    assert len(set(ids.values())) == len(ids)  # stable and distinct
    assert all(0 < t.threshold <= 1 for t in vocab.tags)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("class_tags.tsv", "\tcoffee\n", "\tcofee\n"),
            r"class_tags.tsv:\d+: unknown tag 'cofee'; add it to tags.tsv",
        ),
        (
            ("tags.tsv", "apple\tdarkroom:apple\tfruit\t", "apple\tdarkroom:apple\tfruitt\t"),
            r"tags.tsv:\d+: 'apple' has unknown parent",
        ),
        (
            ("tags.tsv", "apple\tdarkroom:apple\tfruit\t0.3\n", "apple\tdarkroom:apple\tfruit\tlots\n"),
            r"tags.tsv:\d+: threshold of 'apple' must be a number",
        ),
        (("tags.tsv", "mammal\tn01861778\tanimal\t", "mammal\tn01861778\tdog\t"), "cycle: "),
        (("class_tags.tsv", "n01440764\ttench\tfish\n", ""), "must list the 1000 classes"),
        (
            ("imagenet_classes.tsv", "n01440764\ttench\n", "n01440764 tench\n"),
            r"imagenet_classes.tsv:\d+: expected 2",
        ),
    ],
)
def test_a_broken_vocabulary_file_is_an_error_naming_file_line_and_fix(tmp_path, edit, message):
    for name in ("imagenet_classes.tsv", "tags.tsv", "class_tags.tsv"):
        shutil.copy(vocabulary.DATA / name, tmp_path / name)
    name, old, new = edit
    text = (tmp_path / name).read_text()
    assert old in text
    (tmp_path / name).write_text(text.replace(old, new, 1))
    with pytest.raises(ValueError, match=message):
        vocabulary.load(tmp_path)


def test_general_model_builds_in_seconds_without_training():
    start = time.perf_counter()
    checkpoint = general_checkpoint()
    assert time.perf_counter() - start < 30
    assert checkpoint["input_size"] == [256, 256] and checkpoint["crop_size"] == [224, 224]
    assert (
        len(checkpoint["thresholds"]) == len(checkpoint["vocab"]["tags"]) == len(checkpoint["vocab"]["ids"])
    )


@pytest.mark.parametrize("name", sorted(OBVIOUS))
def test_sample_photo_gets_the_obvious_class_in_its_top5_and_the_obvious_tag(served, checkpoint, name):
    classes, tag = OBVIOUS[name]
    row = served["names"].index(name)
    wnids = [w for w, _ in vocabulary.load().classes]
    top5 = {wnids[k] for k in np.argsort(-served["probs"][row])[:5]}
    assert top5 & classes, f"{name}: top-5 {top5}"
    tags = [t for t, *_ in _tags(checkpoint, served["scores"][row : row + 1])[0]]
    assert tag in tags, f"{name}: tags {tags}"


def test_onnx_export_gives_the_same_scores_and_tags_as_pytorch(served, checkpoint, tmp_path):
    path = tmp_path / "general.onnx"
    export_onnx(load_tagger(checkpoint), path, tuple(checkpoint["input_size"]))
    onnx_scores = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"IMAGE": served["images"]}
    )[0]
    np.testing.assert_allclose(onnx_scores, served["scores"], atol=1e-4)
    assert _tags(checkpoint, onnx_scores) == _tags(checkpoint, served["scores"])


def test_tag_events_carry_the_stable_ids_and_match_the_schema(served, checkpoint):
    row = served["names"].index("chelsea")
    [tags] = _tags(checkpoint, served["scores"][row : row + 1])
    upload = Upload(
        photo_id="p1", url="file:///x.jpg", owner=None, uploaded_at="2026-12-01T00:00:00Z", user_tags=[]
    )
    event = json.loads(tag_event(upload, tags, "tagger", "1", "2026-12-01T00:00:01Z"))
    assert {"tag": "cat", "score": pytest.approx(0.96, abs=0.02), "id": "n02121620"} in event["tags"]
    schema = json.loads((ROOT / "schemas" / "photo-tags.schema.json").read_text())
    jsonschema.validate(event, schema)
    untagged = json.loads(tag_event(upload, [("cat", 0.9)], "tagger", "1", "2026-12-01T00:00:01Z"))
    assert untagged["tags"] == [{"tag": "cat", "score": 0.9}]  # a vocabulary without ids: as before


def test_darkroom_model_general_writes_a_normal_version_with_ids(tmp_path, capsys):
    assert darkroom(["model", "--general", "--repo", str(tmp_path)]) == 0
    version = tmp_path / "tagger" / "1"
    vocab = json.loads((version / "vocab.json").read_text())
    assert len(vocab["ids"]) == len(vocab["tags"]) and "cat" in vocab["tags"]
    assert config_input_size(read_model_config(tmp_path / "tagger" / "config.pbtxt")) == (256, 256)
    assert (version / "model.onnx").stat().st_size > 10_000_000  # the pretrained weights, not a stub
    assert str(version) in capsys.readouterr().err.replace("\n", "")


def test_written_version_reexports_through_the_usual_path(tmp_path, checkpoint):
    first = write_version(tmp_path, checkpoint)
    second = write_version(tmp_path, checkpoint)
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((second / "metadata.json").read_text())["model"] == "efficientnet_lite0_general"


def test_gpu_variant_writes_a_tensorrt_plan_config_for_the_general_vocabulary(tmp_path, checkpoint):
    calls: list = []
    front = write_version(tmp_path, checkpoint, target="gpu", build_plan=fake_plan_builder(calls))
    plan_config = read_model_config(tmp_path / "tagger_trt" / "config.pbtxt")
    assert plan_config.platform == "tensorrt_plan"
    assert plan_config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert tensor_dims(plan_config, "SCORES") == [len(checkpoint["vocab"]["tags"])]
    assert config_input_size(plan_config) == (256, 256)
    assert calls[0]["precision"] == "fp16" and (tmp_path / "tagger_trt" / front.name / "model.plan").is_file()
