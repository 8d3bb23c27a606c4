"""Streaming through the embedded stack, one model: the naive baseline on its broker first, then the workers:
bursts of uploads (with CPU per process and per worker stage), the latency–throughput curve and the
server scenario's search."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from contracts.records import upload_value
from tools.bench.cpu import CpuMeter, ThreadMeter
from tools.bench.server import LoadGenerator, Server, latency_curve, server_search
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
    paths: list[Path],
    repo: Path,
    run_dir: Path,
    workers: int,
    worker_env: dict[str, str],
    partitions: int,
    before_workers: Callable[[Any], None] | None = None,
    warm_photos: int = 0,
) -> Iterator[tuple[Any, Any, TagCollector]]:
    """The embedded stack on ``repo`` reading ``paths``' folder, warmed up: (stack, publisher, reader).
    ``before_workers(stack)`` runs once the broker and Triton are up, before any worker starts (the naive
    baseline, which must not share the machine with them)."""
    from stream.clients import UploadPublisher
    from tools.embedded import Ports, Stack

    stack = Stack(
        run_dir, repo, Ports.free(), file_roots=[paths[0].parent], worker_env=worker_env,
        uploads_partitions=partitions, workers=workers, with_worker=before_workers is None,
    )  # fmt: skip
    stack.start()
    collector = TagCollector(stack.bootstrap)
    try:
        if before_workers is not None:
            before_workers(stack)
            stack.with_worker = True
            stack.start_workers()  # all at once: one group join, not one rebalance per worker
        collector.start()
        publisher = UploadPublisher(stack.bootstrap)
        # Unreported, so that a new stack's first batches (slow ones included: the general model's first burst
        # on a fresh stack runs at about half the second's, cause not found; docs/performance.md) start no trial
        tag_burst(publisher, collector, paths[: max(8 * workers, warm_photos)], "warm", 300)
        yield stack, publisher, collector
    finally:
        collector.stop()
        stack.stop()


#: The worker counters a stalled server trial records.
DIAGNOSTIC_METRICS = (
    "darkroom_uploads_consumed_total",
    "darkroom_outputs_produced_total",
    "darkroom_uploads_in_flight",
    "darkroom_retries_total",
    "darkroom_partition_assignments_total",
    "darkroom_triton_request_duration_seconds_count",
)


class FreshStacks:
    """The server scenario's stacks: a fresh one to start with, and a fresh one again whenever the current one
    would take more than ``fresh_after`` uploads. Tansu's memory storage costs more per record as its topics
    grow (measured: the broker's CPU per photo at 150 uploads/s rose 1.56 -> 2.35 -> 2.99 -> 3.48 ms over
    four rounds of 4,000 more uploads), so on one long-lived stack later trials would look worse than
    earlier ones for reasons that are the embedded broker's, not the worker's."""

    def __init__(self, start: Callable[[int], contextlib.AbstractContextManager], fresh_after: int) -> None:
        self._start = start
        self.fresh_after = fresh_after
        self.taken = 0
        self.started = 0
        self._open = contextlib.ExitStack()

    def __enter__(self) -> FreshStacks:
        self._begin()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open.close()

    def _begin(self) -> None:
        self.stack, _, self.collector = self._open.enter_context(self._start(self.started))
        self.load = LoadGenerator(self.stack.bootstrap)
        self._open.callback(self.load.close)
        self.taken = 0
        self.started += 1

    def stalled(self) -> dict:
        """A trial stalled on the current stack: retire it (the next trial gets a fresh one) and return what
        its workers report (their counters, from /metrics) and which children have exited."""
        self.taken = self.fresh_after + 1
        out: dict = {"exited": [c.name for c in self.stack.children if c.proc.poll() is not None]}
        for name, port in self.stack.worker_ports.items():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    text = resp.read().decode()
            except OSError as exc:
                out[name] = f"no metrics: {exc}"
                continue
            out[name] = {
                line.split(" ")[0]: float(line.split(" ")[-1])
                for line in text.splitlines()
                if line.startswith(DIAGNOSTIC_METRICS)
            }
        return out

    def fresh_for(self, uploads: int) -> bool:
        """Room for ``uploads`` more: a fresh stack if the current one would pass ``fresh_after``."""
        fresh = self.taken > 0 and self.taken + uploads > self.fresh_after
        if fresh:
            self._open.close()
            self._open = contextlib.ExitStack()
            self._begin()
        self.taken += uploads
        return fresh


def bench_stream(
    paths: list[Path],
    repo: Path,
    run_dir: Path,
    plan: Plan,
    workers: int,
    worker_env: dict[str, str],
    partitions: int,
    ceiling: float,
    bound_ms: float,
    before_workers: Callable[[Any], None] | None = None,
) -> dict:
    """Bursts (images/s, CPU per photo by process and by worker stage), then the latency curve at fractions
    of ``ceiling`` and the server scenario's highest rate within ``bound_ms`` (p99)."""
    with contextlib.ExitStack() as bursts_stack:
        first = bursts_stack.enter_context(
            running_stack(
                paths, repo, run_dir, workers, worker_env, partitions, before_workers, plan.warm_photos
            )
        )
        stack, publisher, collector = first
        worker_pids = [c.proc.pid for c in stack.children if c.name.startswith("worker")]
        meter = CpuMeter({c.name: c.proc.pid for c in stack.children})
        threads = ThreadMeter(worker_pids)
        runs = [tag_burst(publisher, collector, paths, f"burst-{r}") for r in range(plan.repeats)]
        photos = len(paths) * plan.repeats
        cpu = meter.per_photo_ms(photos)
        stages = threads.per_photo_ms(photos)
        stream_rate = float(np.median(runs))
        if not plan.latency_on_burst_stack:
            bursts_stack.close()

        # The latency curve and the search on stacks of their own: the bursts left the broker thousands of
        # records heavier (FreshStacks). A quick run, which keeps the command working, reuses the bursts'.
        def start(index: int) -> contextlib.AbstractContextManager:
            if index == 0 and plan.latency_on_burst_stack:
                return contextlib.nullcontext(first)
            return running_stack(paths, repo, run_dir.with_name(f"{run_dir.name}-server{index}"), workers,
                                 worker_env, partitions, warm_photos=plan.warm_photos)  # fmt: skip

        with FreshStacks(start, plan.fresh_after) as stacks:
            server = Server(stacks, paths, plan.trial_s, plan.trial_min_photos)
            curve = latency_curve(server, ceiling)
            search = server_search(
                server, ceiling, bound_ms, curve, top=min(1.0, stream_rate / ceiling), steps=plan.search_steps,
                confirm=plan.confirm,
            )  # fmt: skip
            half = next(r for r in curve if r["load"] == 0.5)
            return {
                "img_s": round(stream_rate, 1),
                "runs_img_s": [round(r, 1) for r in runs],
                "dead_letters": len(collector.dead),
                "cpu_ms_per_photo": cpu,
                "worker_cpu_ms_per_photo": round(sum(v for k, v in cpu.items() if k.startswith("worker")), 3),
                "worker_stages_ms_per_photo": stages,
                "latency_load_img_s": round(half["offered"], 1),
                "latency_ms": {q: half[q] for q in ("p50", "p95", "p99")},
                "curve": curve,
                "server": {**search, "stacks": stacks.started, "stalls": server.stalls},
            }
