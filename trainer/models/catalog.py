"""``darkroom models``: every registered network's parameters, FLOPs and measured CPU latency.

FLOPs are counted as multiply-adds of the convolution and linear layers (the convention of the MobileNet
and ResNet papers), from one forward pass with hooks, so they follow the actual shapes at any resolution.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from trainer.models.registry import create_model, list_models


@dataclass(frozen=True)
class ModelCost:
    """What one network costs at one input resolution."""

    name: str
    size: int
    params: int
    mflops: float  # millions of multiply-adds per image
    latency_ms: float  # median CPU latency of one image, batch 1
    throughput: float  # images per second at batch 32


def count_flops(net: nn.Module, size: int) -> int:
    """Multiply-adds of one ``size``x``size`` image through ``net``'s conv and linear layers."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, size, size))
    net.train(was_training)
    for handle in handles:
        handle.remove()
    return total


def measure_latency(net: nn.Module, size: int, batch: int = 1, repeats: int = 10) -> float:
    """Median seconds of one forward pass of a ``batch`` of images, after a warm-up."""
    net.eval()
    x = torch.randn(batch, 3, size, size)
    times = []
    with torch.no_grad():
        net(x)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_cost(name: str, size: int, num_classes: int = 15, repeats: int = 10) -> ModelCost:
    """Params, FLOPs and measured latency of registered model ``name`` at ``size`` px."""
    net = create_model(name, num_classes=num_classes)
    return ModelCost(
        name=name,
        size=size,
        params=sum(p.numel() for p in net.parameters()),
        mflops=count_flops(net, size) / 1e6,
        latency_ms=1000 * measure_latency(net, size, 1, repeats),
        throughput=32 / measure_latency(net, size, 32, max(2, repeats // 4)),
    )


def main(argv: list[str] | None = None) -> int:
    """Print (or write as JSON) the cost table of every registered model."""
    parser = argparse.ArgumentParser(prog="darkroom models", description=__doc__)
    parser.add_argument(
        "--size", type=int, action="append", help="input resolution(s) in px (default 96 and 128)"
    )
    parser.add_argument("--model", action="append", help="only these models (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the latency measurement")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    names = args.model or list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        parser.error(f"unknown --model {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    if any(s < 32 for s in args.size or []):
        parser.error("--size must be at least 32 px")
    torch.set_num_threads(args.threads)
    costs = [model_cost(n, s, repeats=args.repeats) for s in (args.size or [96, 128]) for n in names]
    if args.json:
        print(json.dumps([asdict(c) for c in costs], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models on CPU ({args.threads} threads)")
    for column in ("model", "size", "params", "MFLOPs", "latency b=1 (ms)", "img/s b=32"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for c in costs:
        table.add_row(
            c.name,
            str(c.size),
            f"{c.params:,}",
            f"{c.mflops:.1f}",
            f"{c.latency_ms:.2f}",
            f"{c.throughput:.0f}",
        )
    Console().print(table)
    return 0
