"""The synthetic world: noise knobs do what they say, realistic sizes, a pretraining set of its own labels."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from trainer.data.scenes import CONCEPTS, PRETRAIN_CLASSES, render_closeup
from trainer.data.synthetic import (
    SYNONYMS,
    TagNoise,
    make_photo_set,
    make_pretrain_set,
    noisy_user_tags,
    owner_styles,
)
from trainer.vocab.vocabulary import synthetic_vocabulary


def test_noise_knobs_bound_what_users_write():
    rng = random.Random(0)
    labels = ["sky", "sea", "boat"]
    exact = TagNoise(keep=1.0, synonym=0.0, wrong=0.0, non_visual_mean=0.0, keep_spread=0, synonym_spread=0)
    assert sorted(noisy_user_tags(labels, [], rng, exact)) == sorted(labels)
    silent = TagNoise(keep=0.0, wrong=0.0, non_visual_mean=0.0, keep_spread=0)
    assert noisy_user_tags(labels, [], rng, silent) == []
    foreign = TagNoise(keep=1.0, synonym=1.0, wrong=0.0, non_visual_mean=0.0, keep_spread=0, synonym_spread=0)
    tags = noisy_user_tags(labels, [], rng, foreign)
    vocab = synthetic_vocabulary()
    assert {vocab.canonical(t) for t in tags} == set(labels)  # synonyms and translations map back ...
    assert all(t.lower() in SYNONYMS[vocab.canonical(t)] for t in tags)  # ... and none is the concept's name


def test_owners_differ_in_how_thoroughly_they_tag():
    styles = owner_styles(300, random.Random(1), TagNoise(keep=0.6, keep_spread=0.3))
    keeps = [s.keep for s in styles]
    assert min(keeps) < 0.4 and max(keeps) > 0.8 and all(0 <= k <= 1 for k in keeps)


def test_bad_noise_knob_is_an_error_naming_it():
    with pytest.raises(ValueError, match="TagNoise.keep"):
        TagNoise(keep=1.5)


def test_realistic_sizes_and_a_pretraining_set_with_its_own_labels(tmp_path):
    manifest = make_photo_set(tmp_path / "scenes", 4, seed=0, long_side=(640, 1600))
    for row in map(json.loads, manifest.read_text().splitlines()):
        with Image.open(tmp_path / "scenes" / row["path"]) as img:
            assert 640 <= max(img.size) <= 1600 and img.format == "JPEG"
        assert set(row["labels"]) <= set(CONCEPTS)
    pre = make_pretrain_set(tmp_path / "pre", 16, seed=0)
    rows = [json.loads(x) for x in pre.read_text().splitlines()]
    assert {r["labels"][0] for r in rows} == set(PRETRAIN_CLASSES) and all("user_tags" not in r for r in rows)
    assert not set(PRETRAIN_CLASSES) & set(CONCEPTS)
    with pytest.raises(ValueError, match="unknown pretraining class"):
        render_closeup("giraffe", (64, 64), random.Random(0))
