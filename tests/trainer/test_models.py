"""Models: every registered network has the timm shape, FLOPs are counted right, the catalog prints them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.models import create_model, list_models
from trainer.models.catalog import count_flops, main, model_cost


@pytest.mark.parametrize("name", list_models())
def test_every_model_maps_images_to_tag_logits_through_features_and_head(name):
    net = create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = net.forward_features(x)
        assert features.shape == (2, net.num_features)
        assert torch.allclose(net.forward_head(features), net(x))
    assert net(x).shape == (2, 7)


def test_flops_of_a_known_network():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Flatten(),
        nn.Linear(8 * 10 * 10, 5),
    )
    expected = 10 * 10 * 8 * 3 * 9 + 10 * 10 * 8 * 1 * 9 + 800 * 5
    assert count_flops(net, 10) == expected


def test_flops_grow_with_resolution_and_the_reference_is_much_bigger():
    small = count_flops(create_model("mobilenet_lite_050", 15), 96)
    assert count_flops(create_model("mobilenet_lite_050", 15), 192) == pytest.approx(4 * small, rel=0.05)
    ref = count_flops(create_model("resnet_ref", 15), 96)
    assert ref >= 5 * count_flops(create_model("mobilenet_lite_100", 15), 96)


def test_catalog_prints_params_flops_and_latency(capsys):
    assert main(["--model", "mobilenet_lite_050", "--size", "64", "--repeats", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"mflops"' in out and '"latency_ms"' in out
    cost = model_cost("mobilenet_lite_050", 64, repeats=2)
    assert cost.params == sum(p.numel() for p in create_model("mobilenet_lite_050", 15).parameters())
    assert cost.latency_ms > 0 and cost.throughput > 0


def test_unknown_model_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "vgg16"])
    assert "unknown --model vgg16" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown model 'vgg16'"):
        create_model("vgg16", 3)


def test_catalog_measures_onnx_runtime_at_batch_1_and_32_and_reads_map_from_an_experiment(tmp_path, capsys):
    import json

    cost = model_cost("mobilenet_lite_050", 64, repeats=2)
    assert 0 < cost.ort_ms_b1 < cost.ort_ms_b32  # the served graph, timed at both batch sizes
    results = tmp_path / "results.json"
    results.write_text(json.dumps({
        "recipe": {"size": 64}, "models": {"mobilenet_lite_050": {"mAP": 0.5}},
        "imagenet": {"model": "efficientnet_lite0", "size": 160, "noisy_head_mAP": 0.9},
    }))  # fmt: skip
    assert main(["--model", "mobilenet_lite_050", "--size", "64", "--repeats", "2", "--json",
                 "--results", str(results)]) == 0  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)
    assert row["mAP"] == 0.5 and row["ort_ms_b32"] > 0
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["--results", str(tmp_path / "broken.json")])
    assert "not a darkroom experiment paper results.json" in capsys.readouterr().err
