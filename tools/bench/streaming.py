"""Streaming through the embedded stack: bursts of uploads, and latency at a fixed load."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from contracts.records import upload_value
from tools.bench.cpu import CpuMeter
from tools.bench.workload import Plan
from tools.outcomes import TagCollector


def tag_burst(
    publisher: object, collector: TagCollector, paths: list[Path], prefix: str, timeout_s: float = 600
) -> float:
    """Publish one upload per photo at once and wait for every outcome: images/s from the first outcome to
    the last."""
    ids = [f"{prefix}-{i:05d}" for i in range(len(paths))]
    for pid, path in zip(ids, paths, strict=True):
        publisher.send(pid, upload_value(pid, path.resolve().as_uri()))  # type: ignore[attr-defined]
    publisher.flush()  # type: ignore[attr-defined]
    if not collector.wait(set(ids), timeout_s):
        missing = len(set(ids) - collector.seen.keys())
        raise RuntimeError(f"{missing} of {len(ids)} {prefix} uploads got no outcome; see the worker logs")
    times = sorted(collector.seen[p] for p in ids)
    return (len(times) - 1) / max(1e-9, times[-1] - times[0])


@contextlib.contextmanager
def running_stack(
    paths: list[Path], repo: Path, run_dir: Path, workers: int, worker_env: dict[str, str], partitions: int
) -> Iterator[tuple[Any, Any, TagCollector]]:
    """The embedded stack on ``repo`` reading ``paths``' folder, warmed up: (stack, publisher, reader)."""
    from stream.clients import UploadPublisher
    from tools.embedded import Ports, Stack

    stack = Stack(
        run_dir, repo, Ports.free(), file_roots=[paths[0].parent], worker_env=worker_env,
        uploads_partitions=partitions, workers=workers,
    )  # fmt: skip
    stack.start()
    collector = TagCollector(stack.bootstrap)
    try:
        collector.start()
        publisher = UploadPublisher(stack.bootstrap)
        tag_burst(publisher, collector, paths[: 8 * workers], "warm", 120)
        yield stack, publisher, collector
    finally:
        collector.stop()
        stack.stop()


def bench_stream(
    paths: list[Path],
    repo: Path,
    run_dir: Path,
    plan: Plan,
    workers: int,
    worker_env: dict[str, str],
    partitions: int = 4,
) -> dict:
    """Sustained images/s through broker → worker(s) → Triton → broker, then latency at 50 % of that."""
    with running_stack(paths, repo, run_dir, workers, worker_env, partitions) as (
        stack,
        publisher,
        collector,
    ):
        meter = CpuMeter({c.name: c.proc.pid for c in stack.children})
        runs = [tag_burst(publisher, collector, paths, f"burst-{r}") for r in range(plan.repeats)]
        cpu = meter.per_photo_ms(len(paths) * plan.repeats)
        stream_rate = float(np.median(runs))

        rate = 0.5 * stream_rate
        lat_ids = [f"lat-{i:05d}" for i in range(plan.latency_photos)]
        sent: dict[str, float] = {}
        started = time.time()
        for i, pid in enumerate(lat_ids):
            delay = started + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            sent[pid] = time.time()
            publisher.send(
                pid, upload_value(pid, paths[i % len(paths)].resolve().as_uri())
            )  # send() serves delivery callbacks
        publisher.flush()
        if not collector.wait(set(lat_ids), 300):
            raise RuntimeError("latency-phase uploads got no outcome")
        latencies = np.array([(collector.seen[p] - sent[p]) * 1000 for p in lat_ids])
        return {
            "img_s": round(stream_rate, 1),
            "runs_img_s": [round(r, 1) for r in runs],
            "dead_letters": len(collector.dead),
            "cpu_ms_per_photo": cpu,
            "latency_load_img_s": round(rate, 1),
            "latency_ms": {
                q: round(float(np.percentile(latencies, int(q[1:]))), 1) for q in ("p50", "p95", "p99")
            },
        }
