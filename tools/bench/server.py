"""The server scenario, as MLPerf Inference defines it: uploads arrive as a Poisson process at an offered rate,
produced by an independent client process; latency is upload → tag event as an independent reader sees it.

* ``LoadGenerator`` — a producer process of its own (its own GIL and librdkafka), told a rate and a list of
  uploads, which it sends at exponential inter-arrival times. Latency counts from each upload's *scheduled*
  time, so a producer that falls behind cannot hide a queue (no coordinated omission).
* ``offer`` — one trial at one rate: p50/p95/p99 and the rate achieved.
* ``latency_curve`` — trials at fixed fractions of the offline ceiling (25/50/75/90 %).
* ``server_search`` — the highest offered rate whose p99 stays within the bound, by bisection between the
  curve's last passing and first failing points.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from rich.console import Console

from tools.outcomes import TagCollector

console = Console(stderr=True)

#: Fractions of the offline ceiling at which the latency–throughput curve is measured.
CURVE_LOADS = (0.25, 0.5, 0.75, 0.9)
#: Repeat trials at most, when the rate found must pass a second time (``server_search(confirm=True)``).
MAX_CONFIRMATIONS = 3


def _produce(bootstrap: str, conn: object) -> None:  # in the load generator's process
    from contracts.records import upload_value
    from stream.clients import UploadPublisher

    publisher = UploadPublisher(bootstrap)
    conn.send("ready")  # type: ignore[attr-defined]
    while True:
        job = conn.recv()  # type: ignore[attr-defined]
        if job is None:
            return
        rate, uploads, seed = job
        values = [(pid, upload_value(pid, uri)) for pid, uri in uploads]
        rng = random.Random(seed)
        scheduled = []
        at = time.time() + 0.2
        for pid, value in values:
            at += rng.expovariate(rate)
            delay = at - time.time()
            if delay > 0:
                time.sleep(delay)
            publisher.send(pid, value)
            scheduled.append(at)
        publisher.flush()
        conn.send(scheduled)  # type: ignore[attr-defined]


class LoadGenerator:
    """A producer process that sends uploads as a Poisson process (``offer``); one per stack."""

    def __init__(self, bootstrap: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # not fork: this process holds threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_produce, args=(bootstrap, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the load generator process did not start")

    def send(self, rate: float, uploads: list[tuple[str, str]], seed: int) -> list[float]:
        """Send ``uploads`` (photo id, url) at Poisson arrivals of ``rate``/s; their scheduled times."""
        self.conn.send((rate, uploads, seed))
        timeout = 60 + 3 * len(uploads) / rate
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the load generator did not finish {len(uploads)} uploads in {timeout:.0f}s")
        return self.conn.recv()

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()


@dataclass
class Trial:
    offered: float  # uploads/s asked of the load generator
    realized: float  # uploads/s of this trial's Poisson draws (first to last scheduled time)
    achieved: float  # tag events/s, first scheduled upload to last tag event
    photos: int
    p50: float
    p95: float
    p99: float
    dead: int
    missing: int = 0  # uploads with no outcome by the trial's deadline (their latency counts as that wait)

    def passes(self, bound_ms: float) -> bool:
        # A queue that grows through the trial shows in p99; a rate the stack does not keep up with is a
        # failure too, however short the trial (against the rate drawn: a short trial's draws vary).
        return (
            self.p99 <= bound_ms
            and self.achieved >= 0.8 * self.realized
            and self.dead == 0
            and not self.missing
        )

    def row(self) -> dict:
        return {k: round(v, 1) if isinstance(v, float) else v for k, v in vars(self).items()}


class Stacks(Protocol):
    """Where the trials run: the current stack's load generator and reader; ``fresh_for(n)`` makes room for a
    trial of ``n`` uploads (a fresh stack if the current one has taken too many) and says whether it did."""

    load: LoadGenerator
    collector: TagCollector

    def fresh_for(self, uploads: int) -> bool: ...

    def stalled(self) -> dict: ...


class Server:
    """Trials against the running stack(s): the load generator, the reader and the photos they cycle through."""

    def __init__(self, stacks: Stacks, paths: list[Path], duration_s: float, min_photos: int) -> None:
        self.stacks = stacks
        self.uris = [p.resolve().as_uri() for p in paths]
        self.duration_s = duration_s
        self.min_photos = min_photos
        self.trials = 0
        self.stalls: list[dict] = []  # trials whose uploads did not all get an outcome, with diagnostics

    def offer(self, rate: float, photos: int | None = None) -> Trial:
        """One trial: ``rate`` uploads/s for ``duration_s`` (at least ``min_photos`` uploads), or ``photos``."""
        n = photos or max(self.min_photos, round(rate * self.duration_s))
        warm = max(10, self.min_photos // 4)
        if self.stacks.fresh_for(n + warm):  # a new load generator's first uploads look up partition leaders
            console.print("  (fresh stack; warm-up trial, not reported)")
            self._trial(rate, warm)
        return self._trial(rate, n)

    def _trial(self, rate: float, n: int) -> Trial:
        self.trials += 1
        load, collector = self.stacks.load, self.stacks.collector
        ids = [f"srv{self.trials}-{i:05d}" for i in range(n)]
        uploads = [(pid, self.uris[i % len(self.uris)]) for i, pid in enumerate(ids)]
        scheduled = load.send(rate, uploads, seed=self.trials)
        wait_s = 120 + 3 * n / rate
        missing = 0
        if not collector.wait(set(ids), wait_s):
            # Recorded as a failing trial (and the next one gets a fresh stack) rather than ending the run;
            # what the workers said they did goes to the console and the run's JSON.
            missing = len(set(ids) - collector.seen.keys())
            self.stalls.append({"offered": rate, "photos": n, "missing": missing, **self.stacks.stalled()})
            console.print(f"  [red]{missing} of {n} uploads got no outcome within {wait_s:.0f} s[/]: "
                          f"{self.stalls[-1]}")  # fmt: skip
        deadline = time.time()
        seen = np.array([collector.seen.get(p, deadline) for p in ids])
        latencies = 1000 * (seen - np.array(scheduled))
        p50, p95, p99 = (float(np.percentile(latencies, q)) for q in (50, 95, 99))
        achieved = (n - 1) / max(1e-9, seen.max() - scheduled[0])
        realized = (n - 1) / max(1e-9, scheduled[-1] - scheduled[0])
        dead = len(collector.dead.intersection(ids))
        trial = Trial(rate, realized, achieved, n, p50, p95, p99, dead, missing)
        console.print(
            f"  offered {rate:7.1f}/s → achieved {achieved:7.1f}/s, p50 {p50:6.1f} p95 {p95:6.1f} "
            f"p99 {p99:6.1f} ms ({n} uploads)"
        )
        return trial


def latency_curve(server: Server, ceiling: float, loads: tuple[float, ...] = CURVE_LOADS) -> list[dict]:
    """p50/p95/p99 at each fraction of the offline ceiling, after one unreported warm-up trial (the load
    generator's first produce looks up the topic's partition leaders: hundreds of ms)."""
    console.print("  (warm-up trial, not reported)")
    server.offer(loads[0] * ceiling, photos=max(10, server.min_photos // 4))
    return [{"load": f, **server.offer(f * ceiling).row()} for f in loads]


def server_search(
    server: Server,
    ceiling: float,
    bound_ms: float,
    curve: list[dict],
    top: float,
    steps: int,
    confirm: bool = False,
) -> dict:
    """The highest offered rate (a fraction of ``ceiling``) whose p99 is within ``bound_ms``: bisection
    between the curve's highest passing load and its lowest failing one (``top``, the burst rate's fraction,
    when every curve point passes), ``steps`` trials. With ``confirm``, the rate found is offered once more
    (a p99 from one trial is noisy): if it fails then, the next lower rate that passed is reported instead."""

    def ok(row: dict) -> bool:
        return Trial(**{k: row[k] for k in vars(Trial(0, 0, 0, 0, 0, 0, 0, 0))}).passes(bound_ms)

    passing = [r["load"] for r in curve if ok(r)]  # exact fractions, also of the trials below
    failing = [r["load"] for r in curve if not ok(r)]
    lo = max((f for f in passing if not failing or f < min(failing)), default=0.0)
    hi = min(failing, default=max(top, lo))
    trials = []

    def offer(load: float, **mark: bool) -> bool:
        trial = server.offer(load * ceiling)
        trials.append({"load": round(load, 3), **mark, **trial.row()})
        passed = trial.passes(bound_ms)
        (passing if passed else failing).append(load)
        return passed

    if not failing and hi > lo:  # every curve point passed: try the burst rate itself first
        if offer(hi):
            lo = hi
        steps -= 1
    for _ in range(max(0, steps)):
        if hi - lo < 0.01:
            break
        mid = (lo + hi) / 2
        if offer(mid):
            lo = mid
        else:
            hi = mid
    confirmed = None
    for _ in range(MAX_CONFIRMATIONS if confirm else 0):  # down the passing rates until one passes twice
        if lo <= 0:
            break
        confirmed = offer(lo, confirm=True)
        if confirmed:
            break
        hi = lo
        lo = max((f for f in passing if f < lo), default=0.0)
    return {
        "bound_ms": bound_ms,
        "confirmed": confirmed,
        "img_s": round(lo * ceiling, 1),
        "server_offline_ratio": round(lo, 3),
        "first_failing_ratio": round(hi, 3) if hi > lo else None,
        "trials": trials,
    }
