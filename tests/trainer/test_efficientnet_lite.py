"""EfficientNet-Lite: the shipped ImageNet weights load whole, the variants scale, any checkpoint loads with a report."""

from __future__ import annotations

import re

import pytest
import torch

from trainer.models import create_model
from trainer.models.efficientnet_lite import _same_padding, pretrained_weights
from trainer.models.weights import load_weights, read_state_dict


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    net = create_model("efficientnet_lite0", num_classes=1000).eval()
    load_weights(net, pretrained_weights())
    return net


def test_pretrained_lite0_loads_every_key_with_none_missing_unexpected_or_misshaped():
    net = create_model("efficientnet_lite0", num_classes=1000)
    report = load_weights(net, pretrained_weights())
    assert report.complete, report.describe()
    assert report.loaded == len(read_state_dict(pretrained_weights())) == len(net.state_dict()) == 296
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(4.65e6, rel=0.01)


def test_variants_scale_depth_width_and_resolution():
    sizes = {}
    for i in range(5):
        net = create_model(f"efficientnet_lite{i}", num_classes=10)
        sizes[i] = (
            net.default_config["input_size"][0],
            sum(len(s) for s in net.blocks),
            net.blocks[-1][0].bn3.num_features,
        )
    assert sizes[0] == (224, 16, 320)
    assert [s[0] for s in sizes.values()] == [224, 240, 260, 280, 300]
    assert sizes[4][1] > sizes[2][1] > sizes[0][1]
    assert sizes[4][2] == 448  # 320 x 1.4, and the stem/head stay 32/1280 (Lite keeps them fixed)
    assert create_model("efficientnet_lite4", 10).conv_stem.out_channels == 32


def test_same_padding_is_tensorflows_extra_pixel_bottom_right():
    assert _same_padding(224, 224, 3, 2) == (0, 1, 0, 1)
    assert _same_padding(14, 14, 5, 2) == (1, 2, 1, 2)
    assert _same_padding(15, 16, 5, 2) == (1, 2, 2, 2)  # odd input: symmetric
    conv = create_model("efficientnet_lite0", 3).blocks[1][0].conv_dw  # 3x3, stride 2
    assert conv(torch.zeros(1, 96, 112, 112)).shape[-2:] == (56, 56)


def test_pretrained_network_is_confident_on_a_plain_photo_only_with_its_own_normalization(lite0):
    """The weights were trained on (x - 127) / 128: ImageNet mean/std inputs should do clearly worse."""
    from skimage import data

    from trainer.models.efficientnet_lite import MEAN, STD

    photo = torch.tensor(data.coffee()).permute(2, 0, 1)[None].float()
    photo = torch.nn.functional.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    espresso = 967
    own = (photo / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    imagenet = (photo / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        p_own = torch.softmax(lite0(own), 1)[0, espresso]
        p_imagenet = torch.softmax(lite0(imagenet), 1)[0, espresso]
    assert p_own > 0.8 and p_own > p_imagenet


def _torchvision_name(key: str, net: torch.nn.Module) -> str:
    """Our key → torchvision's EfficientNet layout (written independently of the module's mapping)."""
    if m := re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(\w+)\.(\w+)", key):
        stage, block, layer, param = int(m[1]), int(m[2]), m[3], m[4]
        expanded = hasattr(net.blocks[stage][block], "conv_pwl")
        order = (
            ["conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3"]
            if expanded
            else ["conv_dw", "bn1", "conv_pw", "bn2"]
        )
        i = order.index(layer)
        return f"features.{stage + 1}.{block}.block.{i // 2}.{i % 2}.{param}"
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": "features.8.0", "bn2": "features.8.1",
           "head.1": "classifier.1"}  # fmt: skip
    prefix, param = key.rsplit(".", 1)
    return f"{top[prefix]}.{param}"


@pytest.mark.parametrize("style", ["timm", "torchvision"])
def test_renamed_copies_of_the_weights_load_through_the_documented_mapping(style, lite0, tmp_path):
    ours = lite0.state_dict()
    if style == "timm":
        renamed = {k.replace("head.1.", "classifier."): v for k, v in ours.items()}
    else:
        renamed = {_torchvision_name(k, lite0): v for k, v in ours.items()}
    assert set(renamed) != set(ours)
    path = tmp_path / f"{style}.pth"
    torch.save({"state_dict": renamed, "epoch": 3}, path)
    net = create_model("efficientnet_lite0", num_classes=1000)
    assert load_weights(net, path).complete
    for key, value in net.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_report_names_misshaped_missing_and_unexpected_keys(tmp_path):
    ten = create_model("efficientnet_lite0", num_classes=10)
    with pytest.raises(
        ValueError, match=r"mis-shaped \(not loaded\) 2: head\.1\.weight \[1000, 1280\] vs model \[10, 1280\]"
    ):
        load_weights(ten, pretrained_weights())
    # a new vocabulary: everything but the head loads
    report = load_weights(ten, pretrained_weights(), exclude=("head.",))
    assert report.complete and report.loaded == 294
    deeper = create_model("efficientnet_lite1", num_classes=1000)
    report = load_weights(deeper, pretrained_weights(), strict=False)
    assert report.missing and all(k.startswith("blocks.") for k in report.missing)
    assert "missing (left as initialized)" in report.describe()
    extra = tmp_path / "extra.pth"
    torch.save({**read_state_dict(pretrained_weights()), "aux.weight": torch.zeros(3)}, extra)
    with pytest.raises(ValueError, match=r"unexpected \(ignored\) 1: aux\.weight"):
        load_weights(create_model("efficientnet_lite0", num_classes=1000), extra)


def test_files_that_hold_no_weights_are_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pth is not a PyTorch checkpoint"):
        load_weights(create_model("efficientnet_lite0", 3), junk)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="list.pth holds no state dict"):
        load_weights(create_model("efficientnet_lite0", 3), listing)
    with pytest.raises(ValueError, match="not found"):
        load_weights(create_model("efficientnet_lite0", 3), tmp_path / "absent.pth")


def test_training_can_start_from_any_supported_checkpoint_with_a_new_head(lite0, tmp_path):
    """``darkroom train --init PATH``: the package's raw state dict starts Lite0; a misfit names its keys."""
    from trainer.train import TrainConfig, build_tagger

    tuned = build_tagger(TrainConfig(model="efficientnet_lite0", init_from=str(pretrained_weights())), 15)
    for key, value in lite0.state_dict().items():
        same = torch.equal(value, tuned.net.state_dict()[key])
        assert same != key.startswith("head."), key
    foreign = tmp_path / "mobilenet.pth"
    torch.save(create_model("mobilenet_lite_050", 15).state_dict(), foreign)
    with pytest.raises(
        ValueError, match=r"(?s)init_from=.*mobilenet.pth.*missing \(left as initialized\).*mis-shaped"
    ):
        build_tagger(TrainConfig(model="efficientnet_lite0", init_from=str(foreign)), 15)


def test_train_cli_init_flag_sets_the_starting_checkpoint(tmp_path, capsys):
    from trainer.train import cli

    with pytest.raises(SystemExit):
        cli(
            [
                "--train",
                "t.jsonl",
                "--val",
                "v.jsonl",
                "--out",
                str(tmp_path),
                "--init",
                str(tmp_path / "no.pt"),
            ]
        )
    assert "option init_from=" in capsys.readouterr().err


def test_tensorflow_same_padding_fits_the_weights_better_than_symmetric_padding(lite0, monkeypatch):
    """The weights come from TensorFlow: padding strided convolutions symmetrically (PyTorch's habit)
    costs confidence on real photos, so the asymmetric "same" padding is the one they were trained with."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    from trainer.models import efficientnet_lite

    photos = [data.coffee(), data.chelsea(), load_sample_images().images[1]]
    expected = [[967], [281, 282, 285], [985]]  # espresso; tabby, tiger cat, Egyptian cat; daisy

    def confidence() -> float:
        total = 0.0
        for photo, classes in zip(photos, expected, strict=True):
            x = torch.tensor(photo).permute(2, 0, 1)[None].float()
            x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
            with torch.no_grad():
                total += float(torch.softmax(lite0((x - 127) / 128), 1)[0, classes].sum())
        return total

    same = confidence()
    monkeypatch.setattr(efficientnet_lite, "_same_padding", lambda h, w, k, s: ((k - 1) // 2,) * 4)
    assert same > confidence() + 0.05  # measured: 1.97 vs 1.83
