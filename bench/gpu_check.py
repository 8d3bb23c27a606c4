"""GPU check: the model's CUDA throughput by batch size (FP32, FP16, CUDA graphs) and, where TensorRT is
installed, engine builds (FP16, INT8 from the Q/DQ graph), parity against ONNX Runtime (and, for INT8,
against the Q/DQ graph in ONNX Runtime) and engine throughput by batch size.

    python bench/gpu_check.py [--checkpoint ckpt.pt] [--out bench/results/gpu.json]

Run by ``scripts/gpu_check.sh`` on a machine with an NVIDIA GPU. Without ``--checkpoint`` it trains the
QUICK synthetic model first (about a minute), so its photos serve as INT8 calibration and parity data.
Every part that cannot run (no TensorRT, no ONNX Runtime) is recorded with the reason, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainer.checkpoint import load_checkpoint, load_tagger  # noqa: E402


def cuda_throughput(
    tagger: torch.nn.Module, shape: tuple[int, int], batches: list[int], seconds: float
) -> dict:
    """Images/s of the PyTorch model on CUDA per batch size: FP32 and FP16 (autocast), each as a CUDA graph."""
    tagger = tagger.cuda().eval()
    out: dict = {}
    for precision in ("fp32", "fp16"):
        for batch in batches:
            static = torch.randint(0, 256, (batch, *shape, 3), dtype=torch.uint8, device="cuda")
            with (
                torch.no_grad(),
                torch.autocast("cuda", torch.float16, enabled=precision == "fp16", cache_enabled=False),
            ):
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):  # warm-up on a side stream, as graph capture requires
                        tagger(static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    tagger(static)
            graph.replay()
            torch.cuda.synchronize()
            runs, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                graph.replay()
                runs += 1
            torch.cuda.synchronize()
            out[f"{precision}_b{batch}"] = round(runs * batch / (time.perf_counter() - started), 1)
    return out


def tensorrt_results(checkpoint: dict, photos: np.ndarray, batches: list[int], seconds: float) -> dict:
    """Build FP16 and INT8 plans through the repository writer; parity vs ONNX Runtime; throughput."""
    from trainer.export import write_version
    from trainer.serving.tagger_backend import select_tags
    from trainer.tensorrt import Engine, require_tensorrt

    trt = require_tensorrt()
    results: dict = {"tensorrt": trt.__version__}
    repo = Path(tempfile.mkdtemp(prefix="darkroom-gpu-"))
    calibration, held_out = photos[: len(photos) // 2], photos[len(photos) // 2 :][:256]
    tags, thresholds = checkpoint["vocab"]["tags"], np.asarray(checkpoint["thresholds"], np.float32)
    for precision in ("fp16", "int8"):
        front = write_version(repo, checkpoint, target="gpu", precision=precision, calibration=calibration)
        engine = Engine(repo / "tagger_trt" / front.name / "model.plan")
        entry: dict = {"build": json.loads((front / "metadata.json").read_text())["tensorrt"]}
        got = np.concatenate([engine(held_out[i : i + 64]) for i in range(0, len(held_out), 64)])
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(front / "model.onnx"), providers=["CPUExecutionProvider"])
            want = session.run(["SCORES"], {"IMAGE": held_out})[0]
            same = [
                [t for t, _ in a] == [t for t, _ in b]
                for a, b in zip(
                    select_tags(got, tags, thresholds), select_tags(want, tags, thresholds), strict=True
                )
            ]
            entry["parity_vs_onnxruntime"] = {
                "images": len(held_out),
                "max_abs_diff": float(np.abs(got - want).max()),
                "mean_abs_diff": float(np.abs(got - want).mean()),
                "same_tags_share": float(np.mean(same)),
            }
            qdq = front / "model.qdq.onnx"  # INT8: the Q/DQ graph the plan was built from, same scales
            if qdq.exists():
                session = ort.InferenceSession(str(qdq), providers=["CPUExecutionProvider"])
                diff = got - session.run(["SCORES"], {"IMAGE": held_out})[0]
                entry["parity_vs_qdq_onnxruntime"] = {"max_abs_diff": float(np.abs(diff).max())}
                entry["quantization"] = json.loads((front / "metadata.json").read_text())["quantization"]
        except ImportError as exc:
            entry["parity_vs_onnxruntime"] = f"not measured: {exc}"
        shape = tuple(held_out.shape[1:])
        entry["images_per_s"] = {f"b{b}": round(engine.throughput(shape, b, seconds), 1) for b in batches}
        results[precision] = entry
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="default: train the QUICK synthetic model here")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"error: no CUDA device visible to torch {torch.__version__}; run this on a GPU machine")
        return 2
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="darkroom-gpu-work-"))
    if args.checkpoint:
        checkpoint = load_checkpoint(args.checkpoint)
    else:
        from trainer.synthetic_model import QUICK, build_synthetic_model

        build_synthetic_model(work / "repo", work, QUICK)
        checkpoint = load_checkpoint(work / "checkpoint" / "checkpoint.pt")
    h, w = checkpoint["input_size"]
    from contracts.photos import decode

    paths = sorted((work / "val").glob("*.jpg"))
    photos = (
        np.stack([decode(p.read_bytes(), (w, h), 50_000_000) for p in paths])
        if paths
        else np.random.default_rng(0).integers(0, 256, (512, h, w, 3), dtype=np.uint8)
    )
    result: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "model": checkpoint["model"],
        "input": [h, w, 3],
        "calibration_and_parity_photos": "synthetic val set" if paths else "random (no photos)",
    }
    result["pytorch_cuda_graphs_images_per_s"] = cuda_throughput(
        load_tagger(checkpoint), (h, w), batches, args.seconds
    )
    print(json.dumps(result, indent=1), flush=True)
    try:
        result["tensorrt"] = tensorrt_results(checkpoint, photos, batches, args.seconds)
    except Exception as exc:  # record why (no TensorRT, build failure) and keep the CUDA numbers
        result["tensorrt"] = {
            "not_run": f"{type(exc).__name__}: {exc}",
            "trace": traceback.format_exc(limit=3),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["tensorrt"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
