"""Decode alone and the offline ceiling: fetch + decode + the model in-process, swept over configurations."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track

from contracts.records import Upload
from contracts.tensors import INPUT_NAME, SCORES_OUTPUT
from tools.bench.cpu import CpuMeter
from tools.bench.workload import megapixels

console = Console(stderr=True)


def bench_decode(paths: list[Path], size: tuple[int, int]) -> dict:
    """One thread, source megapixels per second: Pillow full decode (+ resize), Pillow's draft decode (the
    worker's decode before libjpeg-turbo) and the worker's decode (``contracts.photos.decode``); and the
    worker's decode in two threads (a decoder that holds the GIL does not scale)."""
    from PIL import Image, ImageOps

    from contracts.photos import decode

    blobs = [p.read_bytes() for p in paths]
    mp = megapixels(paths)

    def full(data: bytes) -> None:
        with Image.open(io.BytesIO(data)) as img:
            img.convert("RGB").resize(size, Image.Resampling.BILINEAR)

    def draft(data: bytes) -> None:  # the worker's decode as it was: Pillow's draft mode
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (size[0] * 2, size[1] * 2))
            ImageOps.exif_transpose(img, in_place=True)
            img.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)

    def worker(data: bytes) -> None:
        decode(data, size, 100_000_000)

    out: dict = {}
    for name, fn in (("full", full), ("draft", draft), ("worker", worker)):
        fn(blobs[0])
        started, cpu = time.perf_counter(), time.process_time()
        for data in blobs:
            fn(data)
        seconds = time.perf_counter() - started
        out[f"{name}_mp_s"] = round(mp / seconds, 1)
        out[f"{name}_img_s"] = round(len(blobs) / seconds, 1)
        out[f"{name}_cpu_ms"] = round(1000 * (time.process_time() - cpu) / len(blobs), 3)
    for name, fn in (("draft", draft), ("worker", worker)):
        with ThreadPoolExecutor(2) as pool:
            started = time.perf_counter()
            list(pool.map(fn, blobs))
            out[f"{name}_2threads_img_s"] = round(len(blobs) / (time.perf_counter() - started), 1)
    out["draft_speedup"] = round(out["draft_mp_s"] / out["full_mp_s"], 2)
    out["worker_speedup"] = round(out["worker_mp_s"] / out["full_mp_s"], 2)
    return out


@dataclass(frozen=True)
class OfflineConfig:
    batch: int
    decode_threads: int
    ort_threads: int
    processes: int = 1


def offline_span(
    paths: list[Path], onnx_path: Path, size: tuple[int, int], cfg: OfflineConfig, barrier: object = None
) -> tuple[float, float, float, float]:
    """Fetch + decode (thread pool) + ONNX Runtime over ``paths`` in this process, decode overlapping
    inference: (start, end) wall-clock times, CPU seconds of the run and CPU seconds of its fetch + decode
    alone (the decode threads' own clocks). With ``barrier``, it starts when every process of a
    multi-process run is ready."""
    import onnxruntime as ort

    from contracts.tensors import ModelInput
    from stream.loading import read_and_decode_upload
    from stream.settings import Settings

    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.ort_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the served model runs
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batch = cfg.batch
    # The worker's own read + decode of a file:// upload, with the worker's default limits (bytes, pixels,
    # frames, deadlines): the ceiling measures the path streaming runs, not a lighter copy of it.
    settings = Settings(file_roots=str(paths[0].parent.resolve()))
    model_input = ModelInput(width=size[0], height=size[1], max_batch_size=batch)

    decode_cpu: list[float] = []  # list.append is atomic: the decode threads add their own CPU time

    def load(path: Path) -> np.ndarray:
        cpu = time.thread_time()
        upload = Upload(photo_id=path.stem, url=path.resolve().as_uri(), uploaded_at="2026-01-01T00:00:00Z")
        image = read_and_decode_upload(upload, settings, model_input)[1]
        decode_cpu.append(time.thread_time() - cpu)
        return image

    session.run([SCORES_OUTPUT], {INPUT_NAME: np.zeros((batch, size[1], size[0], 3), np.uint8)})  # warm-up
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
            session.run([SCORES_OUTPUT], {INPUT_NAME: images})
    return started, time.time(), time.process_time() - cpu, sum(decode_cpu)


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
) -> tuple[float, float, float, float]:
    """Images/s, CPU seconds, wall seconds and fetch + decode CPU seconds of ``cfg.processes`` processes
    tagging ``paths`` between them (each its own share, all started together), from the first start to the
    last end."""
    if cfg.processes == 1:
        start, end, cpu, decode_cpu = offline_span(paths, onnx_path, size, cfg)
        return len(paths) / (end - start), cpu, end - start, decode_cpu
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
    return len(paths) / (end - start), sum(s[2] for s in spans), end - start, sum(s[3] for s in spans)


def bench_offline(
    paths: list[Path],
    onnx_path: Path,
    size: tuple[int, int],
    quick: bool,
    repeats: int = 1,
    batches: tuple[int, ...] = (8, 16, 32),
    sample: int = 120,
) -> dict:
    """The ceiling: the best configuration over a sweep on a sample, then its rate on the whole workload
    (the median of ``repeats`` runs). Batch size, decode threads (up to one more than the cores) and ONNX
    Runtime threads in one process first; then the best of those in 2..cores processes (one GIL each),
    which is what several workers do. Also the fetch + decode CPU per photo of those runs: what a worker
    cannot avoid spending."""
    cores = os.cpu_count() or 1
    sample_paths = paths[: min(len(paths), sample if not quick else max(20, sample // 2))]
    threads = sorted({1, cores}) if quick else range(1, cores + 2)
    grid = [OfflineConfig(b, d, t) for b in batches for d in threads for t in (1, 2)]
    results = []
    for cfg in track(grid, description="offline sweep, 1 process", console=console):
        results.append((cfg, offline_rate(sample_paths, onnx_path, size, cfg)[0]))
    best, _ = max(results, key=lambda r: r[1])
    sample_paths = paths[: min(len(paths), 2 * len(sample_paths))]  # more photos: each process gets a share
    one = offline_rate(sample_paths, onnx_path, size, best)[0]
    multi = [
        OfflineConfig(best.batch, d, best.ort_threads, n)
        for n in range(2, min(cores, 4) + 1)
        for d in sorted({1, best.decode_threads} if not quick else {1})
    ]
    results_multi = [(best, one)]
    for cfg in track(multi, description="offline sweep, processes", console=console, disable=not multi):
        results_multi.append((cfg, offline_rate(sample_paths, onnx_path, size, cfg)[0]))
    best, _ = max(results_multi, key=lambda r: r[1])
    meter = CpuMeter({})
    runs, cpu_s, wall_s, decode_s = zip(
        *(offline_rate(paths, onnx_path, size, best) for _ in range(repeats)), strict=True
    )
    photos = len(paths) * repeats
    return {
        "img_s": round(float(np.median(runs)), 1),
        "runs_img_s": [round(r, 1) for r in runs],
        "cpu_ms_per_photo": round(1000 * sum(cpu_s) / photos, 2),
        "fetch_decode_cpu_ms_per_photo": round(1000 * sum(decode_s) / photos, 3),
        "cores_busy": round(sum(cpu_s) / sum(wall_s), 2),
        "host_steal": meter.steal_share(),
        "best": dataclasses.asdict(best),
        "sweep": [{**dataclasses.asdict(c), "img_s": round(r, 1)} for c, r in results + results_multi[1:]],
    }
