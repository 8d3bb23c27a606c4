"""``darkroom models``: every registered network's parameters, FLOPs and measured CPU latency.

FLOPs are counted as multiply-adds of the convolution and linear layers (the convention of the MobileNet
and ResNet papers), from one forward pass with hooks, so they follow the actual shapes at any resolution.
Latency is measured twice: PyTorch (what training runs) and ONNX Runtime on the exported graph with its
uint8 input and preprocessing (what the CPU Triton model serves), at batch 1 and 32. ``--results`` adds
each model's test mAP from a ``darkroom experiment paper`` run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contracts.helpformat import DefaultsHelpFormatter
from trainer.models.preprocess import Tagger
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
    ort_ms_b1: float  # median ONNX Runtime latency of the served graph, batch 1
    ort_ms_b32: float  # the same for a batch of 32


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


def measure_onnx_latency(
    net: nn.Module, size: int, batches: tuple[int, ...], repeats: int = 10
) -> list[float]:
    """Median seconds of one ONNX Runtime run per batch size, on the graph export writes (uint8 NHWC input,
    preprocessing inside) with as many threads as PyTorch uses here."""
    import onnxruntime as ort

    from trainer.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(Tagger(net).eval(), path, (size, size))
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    medians = []
    for batch in batches:
        feed = {name: rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)}
        session.run(None, feed)  # warm-up: allocations and kernel selection
        times = []
        for _ in range(repeats if batch == 1 else max(2, repeats // 4)):
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        medians.append(statistics.median(times))
    return medians


def model_cost(name: str, size: int, num_classes: int = 15, repeats: int = 10) -> ModelCost:
    """Params, FLOPs and measured latency (PyTorch and ONNX Runtime) of registered model ``name`` at ``size`` px."""
    net = create_model(name, num_classes=num_classes)
    ort_b1, ort_b32 = measure_onnx_latency(net, size, (1, 32), repeats)
    return ModelCost(
        name=name,
        size=size,
        params=sum(p.numel() for p in net.parameters()),
        mflops=count_flops(net, size) / 1e6,
        latency_ms=1000 * measure_latency(net, size, 1, repeats),
        throughput=32 / measure_latency(net, size, 32, max(2, repeats // 4)),
        ort_ms_b1=1000 * ort_b1,
        ort_ms_b32=1000 * ort_b32,
    )


def experiment_map(path: Path) -> dict[tuple[str, int], float]:
    """(model, size) → test mAP from a ``darkroom experiment paper`` results.json: the noisy-only models,
    and the ImageNet backbone with a head on the same noisy tags; ValueError naming the file."""
    try:
        results = json.loads(path.read_text())
        size = results["recipe"]["size"]
        found = {(name, size): m["mAP"] for name, m in results["models"].items()}
        lite = results["imagenet"]
        found[(lite["model"], lite["size"])] = lite["noisy_head_mAP"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--results {path}: not a darkroom experiment paper results.json ({exc})") from None
    return found


def main(argv: list[str] | None = None) -> int:
    """Print (or write as JSON) the cost table of every registered model."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter, prog="darkroom models", description=__doc__
    )
    parser.add_argument(
        "--size", type=int, action="append", help="input resolution(s) in px (default 96 and 128)"
    )
    parser.add_argument("--model", action="append", help="only these models (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the latency measurement")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--results", type=Path, help="results.json of darkroom experiment paper: adds mAP")
    args = parser.parse_args(argv)
    names = args.model or list_models()
    unknown = sorted(set(names) - set(list_models()))
    if unknown:
        parser.error(f"unknown --model {', '.join(unknown)}; choose from: {', '.join(list_models())}")
    if any(s < 32 for s in args.size or []):
        parser.error("--size must be at least 32 px")
    try:
        maps = experiment_map(args.results) if args.results else {}
    except ValueError as exc:
        parser.error(str(exc))
    torch.set_num_threads(args.threads)
    costs = [model_cost(n, s, repeats=args.repeats) for s in (args.size or [96, 128]) for n in names]
    if args.json:
        print(json.dumps([{**asdict(c), "mAP": maps.get((c.name, c.size))} for c in costs], indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models on CPU ({args.threads} threads)")
    columns = ("model", "size", "params", "MFLOPs", "torch ms b=1", "torch img/s b=32", "ORT ms b=1",
               "ORT ms b=32", "mAP")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for c in costs:
        table.add_row(
            c.name,
            str(c.size),
            f"{c.params:,}",
            f"{c.mflops:.1f}",
            f"{c.latency_ms:.2f}",
            f"{c.throughput:.0f}",
            f"{c.ort_ms_b1:.2f}",
            f"{c.ort_ms_b32:.1f}",
            f"{maps[(c.name, c.size)]:.3f}" if (c.name, c.size) in maps else "–",
        )
    Console().print(table)
    return 0
