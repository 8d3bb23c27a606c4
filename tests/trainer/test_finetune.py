"""Fine-tuning a pretrained backbone: the head trains on cached features (computed once), the frozen backbone
is untouched, ``unfreeze`` trains only the last blocks, the result exports as a normal version, and bad
options are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.checkpoint import load_tagger
from trainer.data.synthetic import make_photo_set
from trainer.export import write_version
from trainer.models.mobilenet import MobileNetLite
from trainer.train import TrainConfig, cli, load_data, main, predict
from trainer.vocab.vocabulary import synthetic_vocabulary

SIZE = 48


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> dict[str, Path]:
    """A small synthetic collection (noisy user tags + clean labels) and a backbone trained on its tags."""
    root = tmp_path_factory.mktemp("collection")
    sets = {
        "pre": make_photo_set(root / "pre", 160, seed=1, size=(96, 72)),
        "train": make_photo_set(root / "train", 240, seed=2, size=(96, 72)),
        "val": make_photo_set(root / "val", 160, seed=3, size=(96, 72), split="val"),
    }
    config = TrainConfig(size=SIZE, epochs=3, batch_size=32, threads=2, init_from="scratch")
    main(
        sets["pre"],
        sets["pre"],
        synthetic_vocabulary(),
        root / "pretrained",
        config,
        cache_dir=root / "cache",
    )
    return {**sets, "pretrained": root / "pretrained" / "checkpoint.pt", "cache": root / "cache"}


def _finetune(collection: dict[str, Path], out: Path, features: Path, **options: object) -> dict:
    defaults = {"size": SIZE, "epochs": 20, "batch_size": 32, "lr": 1e-2, "threads": 2}
    config = TrainConfig(**{**defaults, "init_from": str(collection["pretrained"]), **options})
    return main(
        collection["train"], collection["val"], synthetic_vocabulary(), out, config,
        cache_dir=collection["cache"], feature_cache=features,
    )  # fmt: skip


@pytest.fixture
def backbone_calls(monkeypatch) -> list[int]:
    """Photos that went through a MobileNet backbone (``forward_features``) during the test."""
    calls: list[int] = []
    original = MobileNetLite.forward_features

    def counted(self: MobileNetLite, x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(MobileNetLite, "forward_features", counted)
    return calls


def _chance(manifest: Path) -> float:
    """mAP of random scores: the mean frequency of the tags that occur."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    tags = {t for r in rows for t in r["labels"]}
    return float(np.mean([sum(t in r["labels"] for r in rows) / len(rows) for t in tags]))


def test_second_run_reuses_the_cached_features_without_running_the_backbone(
    collection, tmp_path, backbone_calls
):
    first = _finetune(collection, tmp_path / "a", tmp_path / "features")
    assert sum(backbone_calls) == 2 * (240 + 160)  # every photo and its mirror, once
    backbone_calls.clear()
    second = _finetune(collection, tmp_path / "b", tmp_path / "features")
    assert backbone_calls == []
    assert second["metrics"]["val_mAP"] == first["metrics"]["val_mAP"]
    # another backbone is another key: computed again, not served stale features
    _finetune(collection, tmp_path / "c", tmp_path / "features", seed=1, lr=5e-3)
    assert backbone_calls == []  # same backbone, other training options: still cached
    other = torch.load(collection["pretrained"], weights_only=False)
    other["state_dict"]["features.0.0.weight"] += 0.01
    changed = tmp_path / "changed.pt"
    torch.save(other, changed)
    collection_changed = {**collection, "pretrained": changed}
    _finetune(collection_changed, tmp_path / "d", tmp_path / "features")
    assert sum(backbone_calls) == 2 * (240 + 160)


def test_a_corrupt_cache_file_is_computed_again(collection, tmp_path, backbone_calls):
    _finetune(collection, tmp_path / "a", tmp_path / "features")
    for path in (tmp_path / "features").glob("*.npy"):
        path.write_bytes(b"not numpy")
    backbone_calls.clear()
    assert _finetune(collection, tmp_path / "b", tmp_path / "features")["metrics"]["val_mAP"] > 0
    assert sum(backbone_calls) == 2 * (240 + 160)


def test_frozen_backbone_is_unchanged_and_the_head_learns(collection, tmp_path):
    ckpt = _finetune(collection, tmp_path / "run", tmp_path / "features")
    source = torch.load(collection["pretrained"], weights_only=False)["state_dict"]
    for key, value in ckpt["state_dict"].items():  # weights and BatchNorm statistics alike
        assert torch.equal(value, source[key]) != key.startswith("head."), key
    assert ckpt["config"]["unfreeze"] == 0
    # above chance by a clear margin from a weak backbone (3 epochs on 160 photos)
    assert ckpt["metrics"]["val_mAP"] > _chance(collection["val"]) + 0.1
    assert ckpt["metrics"]["losses"][-1] < ckpt["metrics"]["losses"][0]


def test_the_result_is_a_normal_checkpoint_that_exports_and_scores_the_same(collection, tmp_path):
    ckpt = _finetune(collection, tmp_path / "run", tmp_path / "features")
    val = load_data(collection["val"], synthetic_vocabulary(), SIZE, cache_dir=collection["cache"])
    scores = predict(load_tagger(ckpt), val.images)  # the whole network, as serving runs it
    from trainer.metrics import score_metrics

    assert score_metrics(scores, val.clean_targets, synthetic_vocabulary().tags)["mAP"] == pytest.approx(
        ckpt["metrics"]["val_mAP"], abs=1e-4
    )
    version = write_version(tmp_path / "repo", ckpt)
    assert (version / "model.onnx").stat().st_size > 0


def test_lite0_starts_from_its_imagenet_backbone_by_default(collection, tmp_path):
    from trainer.models.efficientnet_lite import MEAN, STD, pretrained_weights
    from trainer.models.weights import read_state_dict

    config = TrainConfig(model="efficientnet_lite0", size=SIZE, epochs=20, batch_size=32, lr=1e-2, threads=2)
    ckpt = main(
        collection["train"], collection["val"], synthetic_vocabulary(), tmp_path / "run", config,
        cache_dir=collection["cache"],
    )  # fmt: skip
    assert ckpt["config"]["init_from"] == "auto" and (ckpt["mean"], ckpt["std"]) == (list(MEAN), list(STD))
    imagenet = read_state_dict(pretrained_weights())
    assert torch.equal(ckpt["state_dict"]["conv_stem.weight"], imagenet["_conv_stem.weight"])
    assert torch.equal(
        ckpt["state_dict"]["bn2.running_var"], imagenet["_bn1.running_var"]
    )  # the head conv's BN
    assert ckpt["state_dict"]["head.1.weight"].shape == (15, 1280)
    assert ckpt["metrics"]["val_mAP"] > _chance(collection["val"]) + 0.1
    assert len(list((tmp_path / "run" / "cache" / "features").glob("efficientnet_lite0-*.npy"))) == 0
    assert len(list((collection["cache"] / "features").glob("efficientnet_lite0-*.npy"))) == 2  # train, val


def test_unfreeze_trains_the_last_blocks_and_keeps_the_rest(collection, tmp_path):
    ckpt = _finetune(collection, tmp_path / "run", tmp_path / "features", unfreeze=2, epochs=2)
    source = torch.load(collection["pretrained"], weights_only=False)["state_dict"]
    last = ("features.6.", "features.7.", "head.")  # mobilenet_lite_050: stem + 7 blocks in `features`
    for key, value in ckpt["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, source[key]) != key.startswith(last), key
    assert not (tmp_path / "features").exists()  # trained on photos: the blocks change the features


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--init", "/no/such.pt"], "option init_from='/no/such.pt': no such checkpoint file"),
        (["--init", "{text}"], "not a PyTorch checkpoint"),
        (["--init", "{dict}"], "holds no state dict"),
        (["--init", "imagenet"], "mobilenet_lite_050 has no ImageNet weights"),
        (
            ["--init", "{pretrained}", "--unfreeze", "99"],
            "option unfreeze=99: MobileNetLite has only 8 blocks",
        ),
        (["--init", "{pretrained}", "--unfreeze", "-2"], "option unfreeze=-2"),
        (["--init", "{pretrained}", "--feature-cache", "{text}"], "is a file, not a folder"),
    ],
)
def test_a_bad_init_unfreeze_or_cache_path_is_a_clear_error(collection, tmp_path, capsys, args, message):
    text, plain = tmp_path / "notes.txt", tmp_path / "dict.pt"
    text.write_text("not a checkpoint")
    torch.save({"weights": 1}, plain)
    paths = {"text": text, "dict": plain, "pretrained": collection["pretrained"]}
    args = [a.format(**paths) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        cli(["--train", str(collection["train"]), "--val", str(collection["val"]), "--out", str(tmp_path / "o"),
             "--cache", str(collection["cache"]), "--set", f"size={SIZE}", "--set", "epochs=1", *args])  # fmt: skip
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
