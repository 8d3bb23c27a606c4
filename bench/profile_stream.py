"""Where the streaming CPU goes: bursts through the embedded stack, CPU per photo per process and thread.

    .venv/bin/python bench/profile_stream.py [--photos 1000] [--bursts 3] [--workers 1] [--partitions 4]
                                             [--intra-op-threads 2] [--py-spy] [--env KEY=VALUE ...]

Starts the embedded stack on the bench model and workload (``darkroom bench`` builds both), then per burst
publishes every photo at once and prints one JSON line: images/s, milliseconds of CPU per photo for the
worker, Triton, the broker and this process (publisher + reader), the worker's per-thread CPU (``main`` is
the event loop; the two busiest others are the decode threads) and the machine's CPU shares (``steal``:
taken by the host, so the burst measured a busy neighbour). ``--py-spy`` records the worker's first burst
(``--gil``: only samples holding the GIL, i.e. what serialises the worker) as raw stacks in the run folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from stream.clients import UploadPublisher
from tools.bench.cpu import JIFFY_FIELDS, machine_jiffies, process_cpu_s, stat_cpu_s
from tools.bench.streaming import TagCollector, running_stack, tag_burst
from tools.bench.workload import build_workload
from trainer.checkpoint import load_checkpoint
from trainer.export import ServingConfig, write_version


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each thread of ``pid``, with its name (``comm``; ``main`` for the main thread)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if int(task.name) == pid else (task / "comm").read_text().strip()
            out[int(task.name)] = (name, stat_cpu_s(task / "stat"))
        except FileNotFoundError:
            continue
    return out


def measure_burst(
    burst: int, paths: list[Path], pids: dict[str, int], publisher: UploadPublisher, collector: TagCollector
) -> dict:
    """Publish every photo at once, wait for every tag event; images/s and CPU per photo by process."""
    before = {name: process_cpu_s(pid) for name, pid in pids.items()}
    threads_before = thread_cpu(pids["worker"])
    me_before = time.process_time()
    sys_before = machine_jiffies()
    rate = tag_burst(publisher, collector, paths, f"burst-{burst}")
    photos = len(paths)
    after = {name: process_cpu_s(pid) for name, pid in pids.items()}
    jiffies = [b - a for a, b in zip(sys_before, machine_jiffies(), strict=True)]
    machine = {name: round(j / sum(jiffies), 3) for name, j in zip(JIFFY_FIELDS, jiffies, strict=True)}
    by_name: dict[str, float] = {}
    for tid, (name, sec) in thread_cpu(pids["worker"]).items():
        key = name if name != "python" else f"thread-{tid}"
        by_name[key] = by_name.get(key, 0.0) + sec - threads_before.get(tid, (name, 0.0))[1]
    per_photo = {name: round(1000 * (after[name] - before[name]) / photos, 2) for name in pids}
    per_photo["bench"] = round(1000 * (time.process_time() - me_before) / photos, 2)
    return {
        "burst": burst,
        "img_s": round(rate, 1),
        "cpu_ms_per_photo": per_photo,
        "dead": len(collector.dead),
        "machine_share": machine,
        "worker_threads_ms_per_photo": {
            name: round(1000 * v / photos, 2) for name, v in sorted(by_name.items()) if v > 0
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="worker processes in one consumer group")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the uploads topic")
    parser.add_argument("--bursts", type=int, default=1, help="bursts one after the other, each reported")
    parser.add_argument("--py-spy", action="store_true", help="flame graph of the worker's first burst")
    parser.add_argument("--env", action="append", default=[], help="worker setting, KEY=VALUE")
    parser.add_argument("--intra-op-threads", type=int, default=2, help="ONNX Runtime threads in Triton")
    parser.add_argument("--run-dir", type=Path, default=Path("run/profile"))
    parser.add_argument("--checkpoint", type=Path, default=Path("data/synthetic/checkpoint/checkpoint.pt"))
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    repo = run_dir / "triton_models"
    serving = ServingConfig(intra_op_threads=args.intra_op_threads)
    write_version(repo, load_checkpoint(args.checkpoint), serving=serving)
    paths = build_workload(Path("data/synthetic/bench-photos"), args.photos)
    env = dict(kv.split("=", 1) for kv in args.env)
    stack_dir = run_dir / "stack"
    with running_stack(paths, repo, stack_dir, args.workers, env, args.partitions) as (
        stack,
        publisher,
        collector,
    ):
        pids = {c.name: c.proc.pid for c in stack.children}
        for burst in range(args.bursts):
            spy = None
            if args.py_spy and burst == 0:
                spy = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "-r", "200", "--format",
                     "raw", "-o", str(run_dir / "worker-gil.txt"), "-p", str(pids["worker"])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            print(
                json.dumps(measure_burst(burst, paths, pids, publisher, collector) | {"env": env}), flush=True
            )
            if spy:
                spy.send_signal(2)
                spy.wait()


if __name__ == "__main__":
    main()
