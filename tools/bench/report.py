"""The benchmark's report: latest.json, latest.md and latest.png."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


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


def write_results(results: dict, out: Path) -> None:
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
