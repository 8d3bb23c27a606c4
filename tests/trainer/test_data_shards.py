"""Tar shards: what goes in comes out, each rank reads its own shards, and a bad photo is skipped."""

from __future__ import annotations

import tarfile

import numpy as np

from tests.trainer.test_data_manifest import _collection
from trainer.data.shards import ShardStream, shard_index, write_shards
from trainer.vocab.vocabulary import synthetic_vocabulary


def test_shards_round_trip_split_across_ranks(tmp_path):
    manifest = _collection(tmp_path / "photos", n=10)  # + missing, corrupt, non-image
    shards = write_shards(manifest, tmp_path / "shards", photos_per_shard=3)
    index = shard_index(tmp_path / "shards")
    assert sum(count for _, count in index) == 12  # the missing file cannot be packed
    assert len(shards) == 4
    with tarfile.open(shards[0]) as tar:
        assert tar.getnames()[:2] == ["000000000.jpg", "000000000.json"]
    encode = synthetic_vocabulary().encode
    streams = [
        ShardStream(tmp_path / "shards", encode, 32, "labels", rank=r, world_size=2, buffer=4) for r in (0, 1)
    ]
    samples = [list(s) for s in streams]
    assert sum(len(s) for s in samples) == 10  # the two undecodable ones are skipped ...
    assert sum(s.skipped for s in streams) == 2  # ... and counted
    assert all(len(s) > 0 for s in samples)
    image, target = samples[0][0]
    assert image.shape == (32, 32, 3) and image.dtype.is_floating_point is False and target.shape == (15,)
    # rank slices are disjoint: together they hold every readable photo exactly once
    keys = {bytes(np.asarray(img).tobytes()) for part in samples for img, _ in part}
    assert len(keys) == 10


def test_epochs_reshuffle(tmp_path):
    manifest = _collection(tmp_path / "photos", n=12)
    write_shards(manifest, tmp_path / "shards", photos_per_shard=2)
    stream = ShardStream(tmp_path / "shards", synthetic_vocabulary().encode, 16, buffer=4)
    first = [img.sum().item() for img, _ in stream]
    stream.set_epoch(1)
    second = [img.sum().item() for img, _ in stream]
    assert sorted(first) == sorted(second) and first != second


def test_darkroom_train_streams_from_a_shard_folder(tmp_path):
    import torch

    from trainer.train import cli

    manifest = _collection(tmp_path / "photos", n=20)
    write_shards(manifest, tmp_path / "shards", photos_per_shard=8)
    out = tmp_path / "run"
    args = ["--train", str(tmp_path / "shards"), "--val", str(manifest), "--out", str(out), "--target", "labels",
            "--set", "epochs=2", "--set", "size=32", "--set", "batch_size=8", "--set", "threads=1"]  # fmt: skip
    assert cli(args) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(ckpt["metrics"]["losses"]) == 2 and ckpt["input_size"] == [32, 32]
