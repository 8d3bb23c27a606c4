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
import contextlib
import dataclasses
import io
import json
import os
import platform
import random
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.progress import track
from rich.table import Table

console = Console(stderr=True)

#: Mostly 1024x768, some 2–4 MP, as uploads from phones and cameras after a site's own resize.
SIZES = [((1024, 768), 0.8), ((1600, 1200), 0.08), ((2048, 1536), 0.08), ((2304, 1728), 0.04)]


@dataclass(frozen=True)
class Plan:
    photos: int
    naive_photos: int
    latency_photos: int
    decode_sample: int
    repeats: int = 1  # offline and streaming runs each; the median is reported (this host is noisy)


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


# -- workload --------------------------------------------------------------------------------------------------
def build_workload(folder: Path, n: int, seed: int = 4242) -> list[Path]:
    """``n`` JPEG q85 photos at realistic sizes, rendered once and reused by later runs."""
    from trainer.data.scenes import render, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes, weights = zip(*SIZES, strict=True)
    plan = [(folder / f"bench-{i:05d}.jpg", rng.choices(sizes, weights)[0]) for i in range(n)]
    todo = [(p, s) for p, s in plan if not p.exists()]
    for path, size in track(
        todo, description="rendering benchmark photos", console=console, disable=not todo
    ):
        tmp = path.with_suffix(".tmp")
        render(sample_scene(rng), size, rng).save(tmp, "JPEG", quality=85)
        os.replace(tmp, path)
    return [p for p, _ in plan]


def megapixels(paths: list[Path]) -> float:
    from PIL import Image

    total = 0
    for p in paths:
        with Image.open(p) as img:
            total += img.width * img.height
    return total / 1e6


# -- decode alone ------------------------------------------------------------------------------------------------
def bench_decode(paths: list[Path], size: tuple[int, int]) -> dict:
    """Source megapixels per second for Pillow full decode (+ resize) and the worker's draft decode."""
    from PIL import Image

    from stream.images import decode

    blobs = [p.read_bytes() for p in paths]
    mp = megapixels(paths)

    def full(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB").resize(size, Image.Resampling.BILINEAR)

    def draft(data: bytes) -> None:
        decode(data, size, 100_000_000)

    out = {}
    for name, fn in (("full", full), ("draft", draft)):
        started = time.perf_counter()
        for data in blobs:
            fn(data)
        seconds = time.perf_counter() - started
        out[f"{name}_mp_s"] = round(mp / seconds, 1)
        out[f"{name}_img_s"] = round(len(blobs) / seconds, 1)
    out["draft_speedup"] = round(out["draft_mp_s"] / out["full_mp_s"], 2)
    return out


# -- CPU accounting ---------------------------------------------------------------------------------------------------
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


# -- offline ceiling -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OfflineConfig:
    batch: int
    decode_threads: int
    ort_threads: int
    processes: int = 1


def offline_span(
    paths: list[Path], onnx_path: Path, size: tuple[int, int], cfg: OfflineConfig, barrier: object = None
) -> tuple[float, float, float]:
    """Fetch + decode (thread pool) + ONNX Runtime over ``paths`` in this process, decode overlapping
    inference: (start, end) wall-clock times and CPU seconds of the run. With ``barrier``, it starts when
    every process of a multi-process run is ready."""
    import onnxruntime as ort

    from stream.images import decode, fetch

    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.ort_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    roots = [str(paths[0].parent.resolve())]
    batch = cfg.batch

    def load(path: Path) -> np.ndarray:
        return decode(fetch(path.resolve().as_uri(), roots, 50_000_000, 10.0), size, 100_000_000)

    session.run(["SCORES"], {"IMAGE": np.zeros((batch, size[1], size[0], 3), np.uint8)})  # warm-up
    if barrier is not None:
        barrier.wait()  # type: ignore[attr-defined]
    cpu, started = time.process_time(), time.time()
    with ThreadPoolExecutor(cfg.decode_threads) as pool:
        chunks = [paths[i : i + batch] for i in range(0, len(paths), batch)]
        pending = [pool.submit(lambda c=c: np.stack([load(p) for p in c])) for c in chunks[:2]]
        for i in range(len(chunks)):
            images = pending[i].result()
            if i + 2 < len(chunks):
                pending.append(pool.submit(lambda c=chunks[i + 2]: np.stack([load(p) for p in c])))
            session.run(["SCORES"], {"IMAGE": images})
    return started, time.time(), time.process_time() - cpu


def _offline_share(
    paths: list[Path],
    onnx_path: Path,
    size: tuple[int, int],
    cfg: OfflineConfig,
    barrier: object,
    out: object,
) -> None:
    out.put(offline_span(paths, onnx_path, size, cfg, barrier))  # type: ignore[attr-defined]


def offline_rate(
    paths: list[Path], onnx_path: Path, size: tuple[int, int], cfg: OfflineConfig
) -> tuple[float, float, float]:
    """Images/s, CPU seconds and wall seconds of ``cfg.processes`` processes tagging ``paths`` between
    them (each its own share, all started together), from the first start to the last end."""
    if cfg.processes == 1:
        start, end, cpu = offline_span(paths, onnx_path, size, cfg)
        return len(paths) / (end - start), cpu, end - start
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # not fork: this process holds threads (and maybe torch)
    barrier, out = ctx.Barrier(cfg.processes), ctx.Queue()
    procs = [
        ctx.Process(
            target=_offline_share, args=(paths[i :: cfg.processes], onnx_path, size, cfg, barrier, out)
        )
        for i in range(cfg.processes)
    ]
    for p in procs:
        p.start()
    try:
        spans = [out.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    return len(paths) / (end - start), sum(s[2] for s in spans), end - start


def bench_offline(
    paths: list[Path], onnx_path: Path, size: tuple[int, int], quick: bool, repeats: int = 1
) -> dict:
    """The ceiling: the best configuration over a sweep on a sample, then its rate on the whole workload
    (the median of ``repeats`` runs). Batch size, decode threads (up to one more than the cores: Pillow
    holds the GIL part of each decode) and ONNX Runtime threads in one process first; then the best of
    those in 2..cores processes (one GIL each), which is what several workers do."""
    cores = os.cpu_count() or 1
    sample = paths[: min(len(paths), 120 if not quick else 60)]
    grid = [OfflineConfig(b, d, t) for b in (8, 16, 32) for d in range(1, cores + 2) for t in (1, 2)]
    results = []
    for cfg in track(grid, description="offline sweep, 1 process", console=console):
        results.append((cfg, offline_rate(sample, onnx_path, size, cfg)[0]))
    best, _ = max(results, key=lambda r: r[1])
    sample = paths[: min(len(paths), 2 * len(sample))]  # more photos: each process gets a share
    one = offline_rate(sample, onnx_path, size, best)[0]
    multi = [
        OfflineConfig(best.batch, d, best.ort_threads, n)
        for n in range(2, min(cores, 4) + 1)
        for d in sorted({1, best.decode_threads})
    ]
    results_multi = [(best, one)]
    for cfg in track(multi, description="offline sweep, processes", console=console, disable=not multi):
        results_multi.append((cfg, offline_rate(sample, onnx_path, size, cfg)[0]))
    best, _ = max(results_multi, key=lambda r: r[1])
    meter = CpuMeter({})
    runs, cpu_s, wall_s = zip(
        *(offline_rate(paths, onnx_path, size, best) for _ in range(repeats)), strict=True
    )
    return {
        "img_s": round(float(np.median(runs)), 1),
        "runs_img_s": [round(r, 1) for r in runs],
        "cpu_ms_per_photo": round(1000 * sum(cpu_s) / (len(paths) * repeats), 2),
        "cores_busy": round(sum(cpu_s) / sum(wall_s), 2),
        "host_steal": meter.steal_share(),
        "best": dataclasses.asdict(best),
        "sweep": [{**dataclasses.asdict(c), "img_s": round(r, 1)} for c, r in results + results_multi[1:]],
    }


# -- streaming on the embedded stack ----------------------------------------------------------------------------------
class TagCollector(threading.Thread):
    """Reads photo-tags and the DLQ from the start; records when each photo_id's outcome was seen."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.seen: dict[str, float] = {}
        self.dead: set[str] = set()
        self._stopping = threading.Event()  # not `_stop`: Thread has an internal method of that name

    def run(self) -> None:
        from stream.clients import follow

        for topic, _, value in follow(
            self.bootstrap,
            ["photo-tags", "photo-uploads-dlq"],
            idle_timeout_s=None,
            should_stop=self._stopping.is_set,
        ):
            pid = orjson.loads(value or b"{}").get("photo_id")
            self.seen.setdefault(pid, time.time())
            if topic == "photo-uploads-dlq":
                self.dead.add(pid)

    def wait(self, ids: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.seen.keys():
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping.set()


def upload_value(pid: str, path: Path) -> bytes:
    from stream.events import now_rfc3339

    return orjson.dumps(
        {"photo_id": pid, "url": path.resolve().as_uri(), "uploaded_at": now_rfc3339(), "user_tags": []}
    )


def tag_burst(
    publisher: object, collector: TagCollector, paths: list[Path], prefix: str, timeout_s: float = 600
) -> float:
    """Publish one upload per photo at once and wait for every outcome: images/s from the first outcome to
    the last."""
    ids = [f"{prefix}-{i:05d}" for i in range(len(paths))]
    for pid, path in zip(ids, paths, strict=True):
        publisher.send(pid, upload_value(pid, path))  # type: ignore[attr-defined]
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
    from stream.embedded import Ports, Stack

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
            publisher.send(pid, upload_value(pid, paths[i % len(paths)]))  # send() serves delivery callbacks
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


# -- naive baseline -----------------------------------------------------------------------------------------------------
def bench_naive(paths: list[Path], checkpoint: dict, repo: Path, run_dir: Path) -> dict:
    """A hand-written kafka-python loop: full decode, PyTorch at batch 1, a produce per message."""
    import torch
    from kafka import KafkaConsumer, KafkaProducer
    from PIL import Image

    from stream.embedded import Ports, Stack
    from trainer.train import load_tagger

    stack = Stack(run_dir, repo, Ports.free(), with_worker=False)  # the broker; Triton idles unused
    stack.start()
    try:
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap)
        for i, path in enumerate(paths):
            producer.send("photo-uploads", key=f"naive-{i}".encode(), value=upload_value(f"naive-{i}", path))
        producer.flush()
        model = load_tagger(checkpoint)
        h, w = checkpoint["input_size"]
        tags = checkpoint["vocab"]["tags"]
        # The same short fetch wait as the worker's: the embedded broker's long fetch holds are not the
        # baseline's fault, and the comparison is about the processing, not about that quirk.
        consumer = KafkaConsumer(
            "photo-uploads",
            bootstrap_servers=stack.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        done, started = 0, None
        for msg in consumer:
            started = started or time.perf_counter()
            event = json.loads(msg.value)
            img = Image.open(event["url"][len("file://") :]).convert("RGB").resize((w, h))
            with torch.no_grad():
                scores = model(torch.from_numpy(np.array(img)).unsqueeze(0))[0].numpy()
            result = {
                "photo_id": event["photo_id"],
                "tags": [t for t, s in zip(tags, scores, strict=True) if s > 0.5],
            }
            producer.send("photo-tags", key=msg.key, value=json.dumps(result).encode())
            done += 1
            if done == len(paths):
                break
        producer.flush()
        consumer.close()
        return {"img_s": round(done / (time.perf_counter() - started), 1)}
    finally:
        stack.stop()


# -- report --------------------------------------------------------------------------------------------------------------
def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _stream_cpu(results: dict) -> dict[str, float]:
    """The streaming run's CPU per photo by process (without the total and cores)."""
    cpu = results["stream"]["cpu_ms_per_photo"]
    return {k: v for k, v in cpu.items() if k not in ("total", "cores_busy", "host_steal")}


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    rows = [
        (
            "offline ceiling (in-process ORT; {batch} per batch, {decode_threads} decode threads, "
            "{ort_threads} ORT thread(s), {processes} process(es))".format(**results["offline"]["best"]),
            results["offline_img_s"],
        ),  # fmt: skip
        ("streaming (Kafka + Faust + Triton)", results["stream_img_s"]),
        ("naive baseline", results["naive_img_s"]),
    ]
    run_lists = [results["offline"]["runs_img_s"], results["stream"]["runs_img_s"], []]
    lat = results["latency_ms"]
    md = [
        "# Darkroom benchmark",
        "",
        f"{results['photos']} photos ({results['megapixels']:.0f} MP), model input {results['model_input']}, "
        f"{results['machine']['cores']} cores ({results['machine']['cpu']}), {results['mode']} run, "
        f"{results['workers']} worker(s) on {results['partitions']} partitions.",
        "",
        "| path | images/s | runs (median reported) |",
        "| --- | ---: | --- |",
        *[
            f"| {name} | {rate} | {', '.join(map(str, runs))} |"
            for (name, rate), runs in zip(rows, run_lists, strict=True)
        ],
        "",
        f"ratio streaming/offline **{results['ratio_stream_offline']}**, streaming/naive **{results['ratio_stream_naive']}**; "
        f"latency at {results['stream']['latency_load_img_s']} img/s (50 % load): p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms.",
        "",
        f"Decode: full {results['decode']['full_mp_s']} MP/s, draft {results['decode']['draft_mp_s']} MP/s "
        f"(x{results['decode']['draft_speedup']}).",
        "",
        "CPU per photo (ms), measured per process over the streaming burst and over the offline run:",
        "",
        "| where | ms of CPU per photo |",
        "| --- | ---: |",
        f"| offline (no broker, no Triton) | {results['offline']['cpu_ms_per_photo']} |",
        *[f"| streaming: {name} | {ms} |" for name, ms in _stream_cpu(results).items()],
        f"| streaming: all | {results['stream']['cpu_ms_per_photo']['total']} |",
        "",
        f"Cores busy: offline {results['offline']['cores_busy']}, "
        f"streaming {results['stream']['cpu_ms_per_photo']['cores_busy']} of {results['machine']['cores']}. "
        f"CPU time taken by the host (steal): offline {results['offline']['host_steal']:.1%}, "
        f"streaming {results['stream']['cpu_ms_per_photo']['host_steal']:.1%}; a run with several % "
        "of steal measured a busy host, not this code.",
    ]
    (out / "latest.md").write_text("\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(15, 3.8))
    short = ["offline ceiling", f"streaming ({results['workers']} worker(s))", "naive"]
    ax1.barh(short[::-1], [r[1] for r in rows][::-1], color=["#999", "#2a6", "#47a"])
    ax1.set_xlabel("images / s")
    ax1.set_title("throughput")
    left = 0.0
    colors = ["#2a6", "#c93", "#a64", "#d96", "#e8b", "#666"]
    ax3.barh(["offline"], [results["offline"]["cpu_ms_per_photo"]], color="#47a")
    for (name, ms), color in zip(_stream_cpu(results).items(), colors, strict=False):
        ax3.barh(["streaming"], [ms], left=left, color=color, label=name)
        left += ms
    ax3.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax3.set_xlabel("ms of CPU per photo")
    ax3.set_title("where the CPU goes")
    ax2.bar(list(lat), list(lat.values()), color="#a64")
    ax2.set_ylabel("ms")
    ax2.set_title(f"latency at {results['stream']['latency_load_img_s']:.0f} img/s (50% load)")
    fig.tight_layout()
    fig.savefig(out / "latest.png", dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict:
    import torch

    from trainer.export import versions, write_version
    from trainer.pipeline import build_synthetic_model

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
    checkpoint = torch.load(ckpt_path, weights_only=False)
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
    parser = argparse.ArgumentParser(prog="darkroom bench", description=__doc__.split("\n\n")[0])
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
        from stream.embedded import default_workers

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
    write_report(results, args.out)
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
