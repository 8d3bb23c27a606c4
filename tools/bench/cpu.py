"""CPU accounting from /proc: per process, per machine, and the host's steal time."""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_cpu_s(stat: Path) -> float:
    """CPU seconds (user + system) in a ``/proc/<pid>/stat`` or ``/proc/<pid>/task/<tid>/stat`` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / _TICK


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live children: tritonserver runs its model stubs as
    child processes, so its cost is the tree's."""
    try:
        total = stat_cpu_s(Path(f"/proc/{pid}/stat"))
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            total += sum(process_cpu_s(int(c)) for c in children.read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


#: The first eight fields of the machine's ``cpu`` line in ``/proc/stat``, in order.
JIFFY_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def machine_jiffies() -> list[int]:
    """The machine's CPU time so far, in jiffies, one per ``JIFFY_FIELDS`` name."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def steal_jiffies() -> tuple[int, int]:
    """(stolen, all) jiffies of this machine so far: time the hypervisor gave our CPUs to someone else."""
    try:
        values = machine_jiffies()
    except (OSError, ValueError):
        return 0, 0
    return values[JIFFY_FIELDS.index("steal")], sum(values)


class CpuMeter:
    """Milliseconds of CPU per photo spent by each named process (and this one) between start and stop,
    and the share of the machine's CPU time stolen by the host meanwhile (a noisy-neighbour warning)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before = {name: process_cpu_s(pid) for name, pid in pids.items()}
        self.me = time.process_time()
        self.wall = time.perf_counter()
        self.steal = steal_jiffies()

    def steal_share(self) -> float:
        stolen, total = (b - a for a, b in zip(self.steal, steal_jiffies(), strict=True))
        return round(stolen / total, 3) if total > 0 else 0.0

    def per_photo_ms(self, photos: int) -> dict:
        spent = {name: process_cpu_s(pid) - self.before[name] for name, pid in self.pids.items()}
        spent["bench client"] = time.process_time() - self.me  # the publisher and the tag reader
        wall = time.perf_counter() - self.wall
        out = {name: round(1000 * sec / photos, 2) for name, sec in spent.items()}
        out["total"] = round(sum(1000 * sec / photos for sec in spent.values()), 2)
        out["cores_busy"] = round(sum(spent.values()) / wall, 2)
        out["host_steal"] = self.steal_share()
        return out


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of ``pid`` with its name: ``main`` for the main thread (the worker's
    event loop), else the kernel's ``comm`` (the worker names its decode and fetch threads)."""
    out = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        try:
            name = "main" if int(task.name) == pid else (task / "comm").read_text().strip()
            out[int(task.name)] = (name, stat_cpu_s(task / "stat"))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return out


def thread_group(name: str) -> str:
    """The stage a worker thread belongs to, from its name."""
    if name == "main":
        return "event loop"
    for prefix, group in (("decode", "decode threads"), ("fetch", "fetch threads")):
        if name.startswith(prefix):
            return group
    if name in ("python", "python3"):
        return "other Python threads (Faust's consumer thread)"
    return "native threads (gRPC, …)"


class ThreadMeter:
    """Milliseconds of CPU per photo by stage (``thread_group``) over the threads of several processes."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.before = {pid: thread_cpu(pid) for pid in pids}

    def per_photo_ms(self, photos: int) -> dict[str, float]:
        groups: dict[str, float] = {}
        for pid in self.pids:
            before = self.before[pid]
            for tid, (name, sec) in thread_cpu(pid).items():
                spent = sec - before.get(tid, (name, 0.0))[1]
                groups[thread_group(name)] = groups.get(thread_group(name), 0.0) + spent
        return {k: round(1000 * v / photos, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}
