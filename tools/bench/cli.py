"""``darkroom bench``: what one machine tags, measured the way serving benchmarks measure it.

One run, the same photos, two models — ``small`` (the synthetic demo model, 96 px, decode-bound) and
``general`` (the general tagger, EfficientNet-Lite0, 256 px sent / 224 px inside, inference-bound) — and
for each:

* **decode alone** — Pillow full decode, Pillow's draft decode and the worker's decode (libjpeg-turbo), one
  thread and two;
* **offline ceiling** — the worker's own fetch + decode + the model in-process (ONNX Runtime), decode in a
  thread pool overlapping inference, best batch size / thread counts / processes: no Kafka, no Triton;
  with the fetch + decode CPU per photo of that run;
* **naive baseline** — what a user would hand-write: a kafka-python loop, full decode per message, PyTorch at
  batch 1, one produce per message (on the stack's broker before the workers start);
* **streaming bursts** — the full embedded stack (Tansu, tritonserver, the Faust workers), all uploads at
  once: images/s, CPU per photo by process and by worker stage, and the **worker overhead** (the workers'
  CPU per photo minus the offline fetch + decode CPU per photo);
* **latency–throughput curve** — Poisson arrivals from an independent producer process at 25/50/75/90 % of
  the offline ceiling: p50/p95/p99 upload → tag event;
* **server scenario** (MLPerf Inference's) — the highest offered rate whose p99 stays within the bound
  (150 ms small, 300 ms general), found by bisection; ``server_offline_ratio`` = that rate ÷ the ceiling.

The full run adds **scaling** (bursts with 1…4 workers and fewer partitions, small model) and a **GPU
projection** (worker cores per GPU from the measured decode rate per core). Results go to
``bench/results/latest.json`` (+ ``latest.md``, ``latest.png`` and ``latency.png``). No assertion on speed
lives in the tests; this command is where the numbers come from.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from contracts.helpformat import DefaultsHelpFormatter
from tools.bench.models import MODELS, BenchModel, export, load_model
from tools.bench.naive import bench_naive
from tools.bench.offline import bench_decode, bench_offline
from tools.bench.report import machine, write_results
from tools.bench.scaling import bench_scaling, gpu_projection
from tools.bench.streaming import bench_stream
from tools.bench.workload import build_workload, megapixels

console = Console(stderr=True)

#: What ``darkroom bench`` prints as its one line of JSON (``latest.json`` holds these and the details):
#: the small model's figures at the top level (as before there were two models), then each model's.
SUMMARY_KEYS = (
    "offline_img_s",
    "stream_img_s",
    "naive_img_s",
    "ratio_stream_offline",
    "ratio_stream_naive",
    "latency_ms",
    "models",
)
#: Each model's headline figures, under ``models.<name>``.
MODEL_KEYS = (
    "offline_img_s",
    "stream_img_s",
    "naive_img_s",
    "server_img_s",
    "server_offline_ratio",
    "ratio_stream_offline",
    "ratio_stream_naive",
    "latency_ms",
    "worker_overhead_ms",
)


def bench_model(model: BenchModel, paths: list[Path], run_dir: Path, args: argparse.Namespace) -> dict:
    """Every measurement of one model on ``paths``."""
    plan = model.plan
    paths = paths[: plan.photos]
    size = model.size
    onnx_path = export(model, run_dir / "triton_models", args.triton_threads, args.queue_delay_us)
    console.rule(f"{model.name}: {model.description} — decode alone")
    decode = bench_decode(paths[: plan.decode_sample], size)
    console.rule(f"{model.name}: offline ceiling")
    offline = bench_offline(
        paths, onnx_path, size, args.quick, plan.repeats, plan.batches, plan.offline_sample
    )
    console.rule(f"{model.name}: naive baseline, then streaming")
    naive: dict = {}

    def run_naive(stack: object) -> None:
        naive.update(bench_naive(paths[: plan.naive_photos], model.checkpoint, stack))

    env = {
        "DARKROOM_BATCH_SIZE": str(args.batch_size),
        "DARKROOM_INFER_BATCH_SIZE": str(args.infer_batch_size),
        "DARKROOM_DECODE_THREADS": str(args.decode_threads),
        "DARKROOM_BATCH_WINDOW_S": str(args.batch_window_s),
    }
    stream = bench_stream(
        paths, run_dir / "triton_models", run_dir / "stack", plan, args.workers, env, args.partitions,
        offline["img_s"], model.bound_ms, before_workers=run_naive,
    )  # fmt: skip
    overhead = stream["worker_cpu_ms_per_photo"] - offline["fetch_decode_cpu_ms_per_photo"]
    return {
        "model": model.description,
        "photos": len(paths),
        "model_input": f"{size[0]}x{size[1]}",
        "bound_ms": model.bound_ms,
        "offline_img_s": offline["img_s"],
        "stream_img_s": stream["img_s"],
        "naive_img_s": naive["img_s"],
        "server_img_s": stream["server"]["img_s"],
        "server_offline_ratio": stream["server"]["server_offline_ratio"],
        "ratio_stream_offline": round(stream["img_s"] / offline["img_s"], 3),
        "ratio_stream_naive": round(stream["img_s"] / naive["img_s"], 2),
        "latency_ms": {f"{round(100 * r['load'])}%": {q: r[q] for q in ("p50", "p95", "p99")} for r in stream["curve"]},
        "worker_overhead_ms": round(overhead, 3),
        "gpu": gpu_projection(offline["fetch_decode_cpu_ms_per_photo"], stream["worker_cpu_ms_per_photo"]),
        "decode": decode,
        "offline": offline,
        "stream": stream,
        "naive": naive,
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    run_dir = args.run_dir.resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    models = [load_model(name, args.checkpoint, args.workdir, args.quick) for name in args.models]
    if args.photos:
        models = [BenchModel(m.name, m.checkpoint, m.plan.limited(args.photos), m.bound_ms) for m in models]
    paths = build_workload(args.workdir / "bench-photos", max(m.plan.photos for m in models))
    per_model, elapsed = {}, {"setup": round(time.monotonic() - started)}
    for m in models:
        begun = time.monotonic()
        per_model[m.name] = bench_model(m, paths, run_dir / m.name, args)
        elapsed[m.name] = round(time.monotonic() - begun)
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "photos": len(paths),
        "megapixels": round(megapixels(paths), 1),
        "workers": args.workers,
        "partitions": args.partitions,
        "serving": {"intra_op_threads": args.triton_threads, "max_queue_delay_us": args.queue_delay_us},
        "worker": {
            "batch_size": args.batch_size,
            "batch_window_s": args.batch_window_s,
            "infer_batch_size": args.infer_batch_size,
            "decode_threads": args.decode_threads,
        },
    }
    first = per_model.get("small") or next(iter(per_model.values()))
    # The keys of the one-model bench, kept: the small model's (or the only model's) figures.
    results.update({
        "model_input": first["model_input"],
        **{k: first[k] for k in ("offline_img_s", "stream_img_s", "naive_img_s", "ratio_stream_offline",
                                 "ratio_stream_naive")},
        "latency_ms": first["stream"]["latency_ms"],
        "decode": first["decode"], "offline": first["offline"], "stream": first["stream"], "naive": first["naive"],
    })  # fmt: skip
    results["models"] = {name: {k: r[k] for k in MODEL_KEYS} for name, r in per_model.items()}
    results["details"] = per_model
    if not args.quick and "small" in per_model:
        console.rule("scaling: workers and partitions (small model)")
        results["scaling"] = bench_scaling(
            paths[: min(1000, len(paths))], run_dir / "small" / "triton_models", run_dir / "scaling",
            {"DARKROOM_DECODE_THREADS": str(args.decode_threads)},
        )  # fmt: skip
        elapsed["scaling"] = round(time.monotonic() - started - sum(elapsed.values()))
    results["elapsed_s"] = {**elapsed, "total": round(time.monotonic() - started)}
    results["machine"] = machine()
    results["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter, prog="darkroom bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run (under 2 minutes) that keeps the command working"
    )
    parser.add_argument("--photos", type=int, help="at most this many photos per model (default: 2000 small, "
                        "600 general; 200 and 40 with --quick)")  # fmt: skip
    parser.add_argument("--models", default=",".join(MODELS), help="models to run, comma-separated "
                        f"(default {','.join(MODELS)})")  # fmt: skip
    parser.add_argument(
        "--triton-threads", type=int, default=2, help="ONNX Runtime threads of the Triton model"
    )
    parser.add_argument(
        "--queue-delay-us", type=int, default=2000, help="Triton dynamic batching's max queue delay"
    )
    parser.add_argument("--workers", type=int, help="worker processes in the streaming run (default: as "
                        "`darkroom up`, one per core, at most 4)")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the uploads topic")
    parser.add_argument("--batch-size", type=int, default=64, help="worker micro-batch size (events)")
    parser.add_argument("--batch-window-s", type=float, default=0.0, help="how long a worker micro-batch "
                        "waits for more events (DARKROOM_BATCH_WINDOW_S)")  # fmt: skip
    parser.add_argument("--infer-batch-size", type=int, default=16, help="images per Triton request")
    parser.add_argument("--decode-threads", type=int, default=2, help="worker decode threads")
    parser.add_argument("--checkpoint", type=Path, default=Path("data/synthetic/checkpoint/checkpoint.pt"))
    parser.add_argument("--workdir", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--run-dir", type=Path, default=Path("run/bench"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if args.workers is None:
        from tools.embedded import default_workers

        args.workers = default_workers()
    if (
        args.workers < 1
        or args.workers > args.partitions
        or args.partitions < 1
        or args.batch_size < 1
        or args.decode_threads < 1
        or (args.photos is not None and args.photos < 20)
        or args.triton_threads < 0
        or args.queue_delay_us < 0
        or not 0 <= args.batch_window_s <= 10
    ):
        parser.error(
            "--workers, --partitions, --batch-size and --decode-threads must be >= 1, --workers at most "
            "--partitions, --photos >= 20, --triton-threads and --queue-delay-us >= 0, --batch-window-s "
            "between 0 and 10"
        )
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models or set(args.models) - set(MODELS):
        parser.error(f"--models: a comma-separated choice of {', '.join(MODELS)}")
    results = run(args)
    write_results(results, args.out)
    table = Table(title=f"darkroom bench ({results['mode']})", title_justify="left")
    table.add_column("measure")
    for name in results["models"]:
        table.add_column(name, justify="right")
    for key in MODEL_KEYS:
        table.add_row(key, *(json.dumps(m[key]) for m in results["models"].values()))
    console.print(table)
    summary = {key: results[key] for key in SUMMARY_KEYS}
    print(json.dumps(summary))
    console.print(
        f"results: {args.out / 'latest.json'}, {args.out / 'latest.md'}, {args.out / 'latest.png'}, "
        f"{args.out / 'latency.png'}"
    )
    return 0
