"""``darkroom feedback train`` and ``darkroom tag new`` end to end on a tiny collection: real photos decoded,
a real backbone's features, the index's edit log, and a new Triton model version (or none) written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tools import custom_tag, feedback
from trainer.data.manifest import read_manifest
from trainer.data.synthetic import make_photo_set
from trainer.export import versions
from trainer.train import TrainConfig, build_tagger, make_checkpoint
from trainer.vocab.vocabulary import synthetic_vocabulary


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """40 synthetic photos, a tiny model's checkpoint, and an index with careful owners' edits."""
    root = tmp_path_factory.mktemp("feedback")
    manifest = make_photo_set(root / "photos", 40, seed=5, size=(160, 120), n_owners=6)
    vocab = synthetic_vocabulary()
    config = TrainConfig(model="mobilenet_lite_050", size=32, init_from="scratch")
    checkpoint = make_checkpoint(build_tagger(config, len(vocab.tags), vocab.tags), config, vocab,
                                 [0.5] * len(vocab.tags), {}, [])  # fmt: skip
    torch.save(checkpoint, root / "checkpoint.pt")
    collection = feedback.load_collection(manifest, vocab, 32, None)
    served = [[("sky", 0.9)] for _ in collection.photo_ids]  # what the owners saw
    applied = feedback.simulate_edits(root / "index.sqlite", collection, served, list(range(30)), vocab.tags)
    assert applied == 30
    return root, manifest


def test_feedback_train_writes_a_version_only_when_better_on_heldout_edits(world):
    root, manifest = world
    args = ["train", "--index", str(root / "index.sqlite"), "--manifest", str(manifest), "--checkpoint",
            str(root / "checkpoint.pt"), "--repo", str(root / "repo"), "--out", str(root / "out"), "--votes", "2"]  # fmt: skip
    assert feedback.main(args) == 0
    report = json.loads((root / "out" / "feedback.json").read_text())
    assert report["edited_photos"] == 30 and report["heldout_edits"] > 0
    assert report["corrections"], "six owners editing 30 photos agree on some corrections"
    better = report["heldout_mAP_after"] > report["heldout_mAP_before"]
    assert (report["written"] is not None) == better
    assert versions(root / "repo" / "tagger") == ([1] if better else [])


def test_one_edited_photo_cannot_judge_a_version_and_the_command_says_so(world, tmp_path, capsys):
    root, manifest = world
    vocab = synthetic_vocabulary()
    collection = feedback.load_collection(manifest, vocab, 32, None)
    served = [[("sky", 0.9)] for _ in collection.photo_ids]
    assert feedback.simulate_edits(tmp_path / "index.sqlite", collection, served, [0], vocab.tags) == 1
    args = ["train", "--index", str(tmp_path / "index.sqlite"), "--manifest", str(manifest), "--checkpoint",
            str(root / "checkpoint.pt"), "--repo", str(tmp_path / "repo"), "--out", str(tmp_path / "out"),
            "--votes", "1", "--min-gain", "-1"]  # fmt: skip
    assert feedback.main(args) == 0
    assert "it takes two edited photos or more" in " ".join(capsys.readouterr().err.split())
    assert json.loads((tmp_path / "out" / "feedback.json").read_text())["written"] is None
    assert versions(tmp_path / "repo" / "tagger") == []


def test_feedback_train_refuses_a_missing_index_or_manifest_in_one_line(world, tmp_path, capsys):
    root, manifest = world
    common = ["--checkpoint", str(root / "checkpoint.pt"), "--out", str(tmp_path)]
    assert (
        feedback.main(["train", "--index", str(tmp_path / "none"), "--manifest", str(manifest), *common]) == 2
    )
    assert "no search index" in capsys.readouterr().err
    code = feedback.main(
        ["train", "--index", str(root / "index.sqlite"), "--manifest", str(tmp_path / "x"), *common]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_tag_new_adds_the_tag_to_the_next_version(world, capsys):
    root, manifest = world
    photos = [r.source for r in read_manifest(manifest)]
    args = ["new", "Red Kite", "--examples", *photos[:6], "--collection", str(manifest), "--checkpoint",
            str(root / "checkpoint.pt"), "--repo", str(root / "tag-repo"), "--out", str(root / "tag"),
            "--negatives", "30", "--target-precision", "0.5"]  # fmt: skip
    assert custom_tag.main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["tag"] == "red kite" and result["positives"] == 6 and result["written"]
    version = root / "tag-repo" / "tagger" / "1"
    assert json.loads((version / "vocab.json").read_text())["tags"][-1] == "red kite"
    thresholds = json.loads((version / "thresholds.json").read_text())["thresholds"]
    assert np.isclose(thresholds[-1], result["threshold"], atol=1e-4)


@pytest.mark.parametrize(
    ("examples", "message"),
    [(3, "give 5 to 20"), (21, "give 5 to 20")],
)
def test_tag_new_wants_five_to_twenty_examples(world, capsys, examples, message):
    root, manifest = world
    photos = [r.source for r in read_manifest(manifest)] * 2
    args = ["new", "kite", "--examples", *photos[:examples], "--collection", str(manifest), "--checkpoint",
            str(root / "checkpoint.pt"), "--no-export", "--out", str(root / "x")]  # fmt: skip
    assert custom_tag.main(args) == 2 and message in capsys.readouterr().err


def test_tag_new_names_an_example_that_is_neither_a_file_nor_a_known_photo(world, capsys):
    root, manifest = world
    args = ["new", "kite", "--examples", *[f"nope-{i}" for i in range(5)], "--collection", str(manifest),
            "--checkpoint", str(root / "checkpoint.pt"), "--index", str(root / "index.sqlite"), "--no-export",
            "--out", str(root / "x")]  # fmt: skip
    assert (
        custom_tag.main(args) == 2 and "'nope-0' is neither a file nor a photo id" in capsys.readouterr().err
    )
