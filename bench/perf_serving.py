"""Serving overhead: the embedded Triton (gRPC → Python backend → ONNX Runtime) against ONNX Runtime in process.

    .venv/bin/python bench/perf_serving.py --repo triton_models [--out bench/results/serving.json]

Starts tritonserver alone (no broker, no worker) on free ports, on a private copy of the repository, and
loads it over batch sizes × concurrency. The load generator is Triton's own ``perf_analyzer`` when it is on
PATH; otherwise a tritonclient gRPC load generator that measures the same things the same way: C clients
each send a ``[B, H, W, 3]`` uint8 request, wait for the answer (TAGS, what the worker asks for) and send the
next, for a fixed interval after a warm-up; throughput is images answered per second, latency is per request.
The in-process baseline is the same ``model.onnx`` with the same ONNX Runtime thread count, followed by the
same thresholding (``select_tags``), called from C threads. Overhead ratio = in-process ÷ served throughput.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.embedded import Ports, Stack  # noqa: E402
from trainer.serving.tagger_backend import encode_tags, select_tags  # noqa: E402


def _latest_version(model_dir: Path) -> Path:
    numbered = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not numbered:
        raise SystemExit(f"error: no version in {model_dir}; run `make model` (or `darkroom export`) first")
    return max(numbered, key=lambda p: int(p.name))


def _config_value(config: str, key: str) -> str:
    match = re.search(rf"{key}\D*?(\d+)", config)
    if not match:
        raise SystemExit(f"error: {key} not found in config.pbtxt")
    return match[1]


def measure(
    make_call: Callable[[], Callable[[], object]], concurrency: int, batch: int, seconds: float
) -> dict:
    """Run ``concurrency`` closed loops (each its own ``make_call()``) for ``seconds`` after a warm-up;
    images per second and per-request latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loop() -> None:
        call = make_call()
        for _ in range(2):
            call()
        while not stop.is_set():
            started = time.perf_counter()
            call()
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(1.0)  # warm-up, not counted
    with lock:
        latencies.clear()
    started = time.perf_counter()
    time.sleep(seconds)
    with lock:
        done = list(latencies)
        elapsed = time.perf_counter() - started
    stop.set()
    for t in threads:
        t.join()
    ms = np.asarray(done) * 1000
    return {
        "batch": batch,
        "concurrency": concurrency,
        "images_per_s": round(len(done) * batch / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 2) if len(ms) else None,
        "requests": len(done),
    }


def ort_call(
    session: object, images: np.ndarray, tags: list[str], thresholds: np.ndarray
) -> Callable[[], object]:
    """In process: the same graph, then the same thresholding and encoding the served model does."""
    return lambda: encode_tags(select_tags(session.run(["SCORES"], {"IMAGE": images})[0], tags, thresholds))


def triton_call(url: str, images: np.ndarray) -> Callable[[], object]:
    """Served: one gRPC client per loop, asking for TAGS as the worker does."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput("IMAGE", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    outputs = [grpcclient.InferRequestedOutput("TAGS")]
    return lambda: client.infer("tagger", [inp], outputs=outputs)


def perf_analyzer(binary: str, grpc: str, batch: int, concurrency: int, seconds: float) -> dict:
    """One cell with Triton's ``perf_analyzer`` (CSV output parsed)."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as out:
        subprocess.run(
            [binary, "-m", "tagger", "-u", grpc, "-i", "grpc", "-b", str(batch),
             f"--concurrency-range={concurrency}:{concurrency}", "--measurement-mode=time_windows",
             f"--measurement-interval={int(seconds * 1000)}", "-f", out.name],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        row = next(csv.DictReader(io.StringIO(Path(out.name).read_text())))
    return {
        "batch": batch,
        "concurrency": concurrency,
        "images_per_s": round(float(row["Inferences/Second"]), 1),
        "p50_ms": round(float(row["p50 latency"]) / 1000, 2),
        "p95_ms": round(float(row["p95 latency"]) / 1000, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("triton_models"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/serving.json"))
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=3.0, help="measurement interval per cell")
    args = parser.parse_args(argv)
    load_at_start = os.getloadavg()[0]  # the CPUs are shared: say how busy they were
    batches = [int(b) for b in args.batches.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    import onnxruntime as ort

    model_dir = args.repo / "tagger"
    if not (model_dir / "config.pbtxt").exists():
        raise SystemExit(f"error: no model in {model_dir}; run `make model` first")
    config = (model_dir / "config.pbtxt").read_text()
    version_dir = _latest_version(model_dir)
    threads = int(re.search(r'"intra_op_threads" value: \{ string_value: "(\d+)"', config)[1])
    h, w = (int(d) for d in re.search(r"dims: \[ (\d+), (\d+), 3 \]", config).groups())
    tags = json.loads((version_dir / "vocab.json").read_text())["tags"]
    thresholds = np.asarray(
        json.loads((version_dir / "thresholds.json").read_text())["thresholds"], np.float32
    )
    images = np.random.default_rng(0).integers(0, 256, (max(batches), h, w, 3), dtype=np.uint8)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    in_process = []
    for b in batches:
        for c in concurrencies:
            in_process.append(
                measure(lambda b=b: ort_call(session, images[:b], tags, thresholds), c, b, args.seconds)
            )
            print("onnxruntime", in_process[-1], flush=True)

    tool = shutil.which("perf_analyzer")
    work = Path(tempfile.mkdtemp(prefix="darkroom-perf-"))
    shutil.copytree(args.repo, work / "triton_models")
    served = []
    with Stack(work / "run", work / "triton_models", Ports.free(), with_worker=False) as stack:
        for b in batches:
            for c in concurrencies:
                if tool:
                    served.append(perf_analyzer(tool, stack.triton_grpc, b, c, args.seconds))
                else:
                    served.append(
                        measure(lambda b=b: triton_call(stack.triton_grpc, images[:b]), c, b, args.seconds)
                    )
                print("triton", served[-1], flush=True)
    shutil.rmtree(work, ignore_errors=True)

    cells = []
    for mine, theirs in zip(in_process, served, strict=True):
        cells.append(
            {
                "batch": mine["batch"],
                "concurrency": mine["concurrency"],
                "onnxruntime_images_per_s": mine["images_per_s"],
                "triton_images_per_s": theirs["images_per_s"],
                "overhead_ratio": round(mine["images_per_s"] / max(theirs["images_per_s"], 1e-9), 2),
                "onnxruntime_p50_ms": mine["p50_ms"],
                "triton_p50_ms": theirs["p50_ms"],
                "triton_p95_ms": theirs["p95_ms"],
            }
        )
    result = {
        "load_generator": "perf_analyzer"
        if tool
        else "tritonclient gRPC closed-loop (bench/perf_serving.py)",
        "model": json.loads((version_dir / "metadata.json").read_text()).get("model"),
        "input": [h, w, 3],
        "onnxruntime_intra_op_threads": threads,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1min_at_start": load_at_start,
            "load_avg_1min_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
        },
        "seconds_per_cell": args.seconds,
        "cells": cells,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
