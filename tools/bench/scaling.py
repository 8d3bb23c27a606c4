"""Scaling: burst throughput against worker processes and partitions (full run), and what a GPU node needs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tools.bench.cpu import CpuMeter
from tools.bench.streaming import running_stack, tag_burst

console = Console(stderr=True)

#: (workers, partitions) of the scaling runs: workers 1…4 on the 4 partitions `darkroom up` creates, then
#: two workers on two partitions (one each: no partition to rebalance).
LAYOUTS = ((1, 4), (2, 4), (3, 4), (4, 4), (2, 2))
#: GPU inference rates (images/s) the projection is written for when none was measured here.
GPU_RATES = (2_000, 10_000, 30_000)


def bench_scaling(paths: list[Path], repo: Path, run_dir: Path, worker_env: dict[str, str]) -> list[dict]:
    """One burst of ``paths`` per layout, each on a fresh stack."""
    rows = []
    for workers, partitions in LAYOUTS:
        console.print(f"scaling: {workers} worker(s) on {partitions} partition(s)")
        with running_stack(
            paths, repo, run_dir / f"w{workers}p{partitions}", workers, worker_env, partitions
        ) as (stack, publisher, collector):
            meter = CpuMeter({c.name: c.proc.pid for c in stack.children})
            rate = tag_burst(publisher, collector, paths, f"scale-{workers}-{partitions}")
            cpu = meter.per_photo_ms(len(paths))
        rows.append({
            "workers": workers, "partitions": partitions, "img_s": round(rate, 1),
            "cores_busy": cpu["cores_busy"], "cpu_ms_per_photo": cpu["total"], "host_steal": cpu["host_steal"],
        })  # fmt: skip
    return rows


def gpu_projection(
    decode_cpu_ms: float, worker_cpu_ms: float, gpu_img_s: tuple[float, ...] = GPU_RATES
) -> dict:
    """Worker cores a GPU needs to stay busy: its inference rate ÷ the photos one core prepares per second,
    from the fetch + decode CPU per photo alone (the floor) and from everything the workers spent per photo
    in the streaming bursts (what to provision; the broker and Triton run on other cores on such a node)."""
    decode_rate, worker_rate = 1000 / decode_cpu_ms, 1000 / worker_cpu_ms
    return {
        "decode_img_s_per_core": round(decode_rate, 1),
        "worker_img_s_per_core": round(worker_rate, 1),
        "cores_per_gpu": {
            str(int(r)): {"decode_only": round(r / decode_rate, 1), "worker": round(r / worker_rate, 1)}
            for r in gpu_img_s
        },
    }
