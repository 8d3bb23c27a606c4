"""``darkroom bench``: how many uploads per second this machine tags, and what each layer costs.

One run, one workload, one model, four measurements:

* **decode alone** — Pillow full decode vs the worker's draft-mode decode, in source megapixels per second;
* **offline ceiling** — the worker's own fetch + decode + the model in-process (ONNX Runtime), decode in a
  thread pool overlapping inference, best batch size and thread counts: no Kafka, no Triton;
* **streaming** — the full embedded stack (Tansu, tritonserver, Faust worker), uploads produced as fast as
  possible, images/s from the first to the last tag event; then latency at a fixed 50 % load;
* **naive baseline** — what a user would hand-write: a kafka-python loop, full decode per message, PyTorch at
  batch 1, one produce per message.

Results go to ``bench/results/latest.json`` (+ ``latest.md`` and ``latest.png``). No assertion on speed lives in
the tests; this command is where the numbers come from.
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
from tools.bench.naive import bench_naive
from tools.bench.offline import bench_decode, bench_offline
from tools.bench.report import machine, write_results
from tools.bench.streaming import bench_stream
from tools.bench.workload import Plan, build_workload, megapixels

console = Console(stderr=True)

#: What ``darkroom bench`` prints as its one line of JSON (``latest.json`` holds these and the details).
SUMMARY_KEYS = (
    "offline_img_s",
    "stream_img_s",
    "naive_img_s",
    "ratio_stream_offline",
    "ratio_stream_naive",
    "latency_ms",
)

FULL_PLAN = Plan(photos=2000, naive_photos=300, latency_photos=600, decode_sample=200, repeats=3)
QUICK_PLAN = Plan(photos=200, naive_photos=40, latency_photos=60, decode_sample=40)


def run(args: argparse.Namespace) -> dict:
    from trainer.checkpoint import load_checkpoint
    from trainer.export import versions, write_version
    from trainer.synthetic_model import build_synthetic_model

    plan = QUICK_PLAN if args.quick else FULL_PLAN
    if args.photos:
        plan = Plan(
            args.photos,
            min(plan.naive_photos, args.photos),
            plan.latency_photos,
            min(plan.decode_sample, args.photos),
            plan.repeats,
        )
    ckpt_path = args.checkpoint
    if not ckpt_path.exists():
        console.rule("no checkpoint: training the synthetic demo model first")
        build_synthetic_model(args.workdir / "repo", args.workdir)
        ckpt_path = args.workdir / "checkpoint" / "checkpoint.pt"
    checkpoint = load_checkpoint(ckpt_path)
    run_dir = args.run_dir.resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    repo = run_dir / "triton_models"
    write_version(repo, checkpoint)  # one model for all paths: this checkpoint, exported here
    assert versions(repo / "tagger") == [1]
    h, w = checkpoint["input_size"]
    paths = build_workload(args.workdir / "bench-photos", plan.photos)

    console.rule("decode alone")
    decode = bench_decode(paths[: plan.decode_sample], (w, h))
    console.rule("offline ceiling")
    offline = bench_offline(paths, repo / "tagger" / "1" / "model.onnx", (w, h), args.quick, plan.repeats)
    console.rule("streaming")
    env = {
        "DARKROOM_BATCH_SIZE": str(args.batch_size),
        "DARKROOM_INFER_BATCH_SIZE": str(args.infer_batch_size),
        "DARKROOM_DECODE_THREADS": str(args.decode_threads),
    }
    stream = bench_stream(paths, repo, run_dir / "stack", plan, args.workers, env, args.partitions)
    console.rule("naive baseline")
    naive = bench_naive(paths[: plan.naive_photos], checkpoint, repo, run_dir / "naive")
    return {
        "mode": "quick" if args.quick else "full",
        "photos": len(paths),
        "megapixels": round(megapixels(paths), 1),
        "model_input": f"{w}x{h}",
        "workers": args.workers,
        "partitions": args.partitions,
        "offline_img_s": offline["img_s"],
        "stream_img_s": stream["img_s"],
        "naive_img_s": naive["img_s"],
        "ratio_stream_offline": round(stream["img_s"] / offline["img_s"], 3),
        "ratio_stream_naive": round(stream["img_s"] / naive["img_s"], 2),
        "latency_ms": stream["latency_ms"],
        "decode": decode,
        "offline": offline,
        "stream": stream,
        "naive": naive,
        "machine": machine(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter, prog="darkroom bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small run (under 2 minutes) that keeps the command working"
    )
    parser.add_argument("--photos", type=int, help="workload size (default 2000; 200 with --quick)")
    parser.add_argument("--workers", type=int, help="worker processes in the streaming run (default: as "
                        "`darkroom up`, one per core, at most 4)")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the uploads topic")
    parser.add_argument("--batch-size", type=int, default=64, help="worker micro-batch size (events)")
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
    ):
        parser.error(
            "--workers, --partitions, --batch-size and --decode-threads must be >= 1, --workers at most "
            "--partitions, and --photos >= 20"
        )
    results = run(args)
    write_results(results, args.out)
    table = Table(title=f"darkroom bench ({results['mode']})", title_justify="left")
    for col in ("measure", "value"):
        table.add_column(col)
    summary = {key: results[key] for key in SUMMARY_KEYS}
    for key, value in summary.items():
        table.add_row(key, json.dumps(value))
    console.print(table)
    print(json.dumps(summary))
    console.print(f"results: {args.out / 'latest.json'}, {args.out / 'latest.md'}, {args.out / 'latest.png'}")
    return 0
