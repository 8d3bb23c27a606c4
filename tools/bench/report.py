"""The benchmark's report: latest.json, latest.md (every table), latest.png (throughput and CPU) and
latency.png (the latency–throughput curves)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

#: The issue's goals on a 2-core machine: (key under models.<name>, model, goal, at least?)
GOALS = (
    ("server_offline_ratio", "general", 0.85, True),
    ("ratio_stream_offline", "general", 0.92, True),
    ("ratio_stream_naive", "general", 4.0, True),
    ("worker_overhead_ms", "small", 0.25, False),
    ("ratio_stream_offline", "small", 0.85, True),
    ("server_offline_ratio", "small", 0.75, True),
    ("ratio_stream_naive", "small", 4.0, True),
)


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


def _process_cpu(stream: dict) -> dict[str, float]:
    """The streaming run's CPU per photo by process (without the total and cores)."""
    cpu = stream["cpu_ms_per_photo"]
    return {k: v for k, v in cpu.items() if k not in ("total", "cores_busy", "host_steal")}


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(align) + " |",
        *["| " + " | ".join(str(c) for c in row) + " |" for row in rows],
        "",
    ]


def _goals(results: dict) -> list[str]:
    rows = []
    for key, name, goal, at_least in GOALS:
        model = results["models"].get(name)
        if model is None:
            continue
        value = model[key]
        met = value >= goal if at_least else value <= goal
        rows.append(
            [f"`{key}`", name, value, f"{'≥' if at_least else '≤'} {goal}", "met" if met else "**not met**"]
        )
    return _table(["measure", "model", "value", "goal", ""], rows)


def _model_section(name: str, r: dict) -> list[str]:
    off, st, srv = r["offline"], r["stream"], r["stream"]["server"]
    best = off["best"]
    md = [
        f"## {name}: {r['model']}",
        "",
        f"{r['photos']} photos; server-scenario bound: p99 ≤ {r['bound_ms']:.0f} ms.",
        "",
        *_table(
            ["path", "images/s", "runs (median reported)"],
            [
                [
                    f"offline ceiling (in-process ORT; batch {best['batch']}, {best['decode_threads']} decode "
                    f"thread(s), {best['ort_threads']} ORT thread(s), {best['processes']} process(es))",
                    r["offline_img_s"],
                    ", ".join(map(str, off["runs_img_s"])),
                ],
                [
                    "streaming burst (Kafka + Faust + Triton)",
                    r["stream_img_s"],
                    ", ".join(map(str, st["runs_img_s"])),
                ],
                [
                    f"server scenario: highest Poisson rate with p99 ≤ {r['bound_ms']:.0f} ms",
                    r["server_img_s"],
                    "",
                ],
                ["naive baseline", r["naive_img_s"], ""],
            ],
        ),  # fmt: skip
        f"`server_offline_ratio` **{r['server_offline_ratio']}**, `ratio_stream_offline` "
        f"**{r['ratio_stream_offline']}**, `ratio_stream_naive` **{r['ratio_stream_naive']}**, "
        f"`worker_overhead_ms` **{r['worker_overhead_ms']}**.",
        "",
        "Latency, upload → tag event, Poisson arrivals from an independent producer process "
        "(latency counted from each upload's scheduled time):",
        "",
        *_table(
            ["offered load", "offered /s", "achieved /s", "uploads", "p50 ms", "p95 ms", "p99 ms"],
            [
                [
                    f"{round(100 * c['load'])} % of ceiling",
                    c["offered"],
                    c["achieved"],
                    c["photos"],
                    c["p50"],
                    c["p95"],
                    c["p99"],
                ]
                for c in st["curve"]
            ]
            + [
                [
                    f"{'repeat' if c.get('confirm') else 'search'}: {round(100 * c['load'], 1)} %",
                    c["offered"],
                    c["achieved"],
                    c["photos"],
                    c["p50"],
                    c["p95"],
                    c["p99"],
                ]
                for c in srv["trials"]
            ],
        ),  # fmt: skip
        *(
            [
                f"**{len(srv['stalls'])} trial(s) stalled**: uploads without an outcome by the trial's deadline "
                "(counted as failing; the workers' counters at that moment are in `latest.json`, "
                f"`details.{name}.stream.server.stalls`).",
                "",
            ]
            if srv.get("stalls")
            else []
        ),  # fmt: skip
        "CPU per photo (ms): the offline run, and each process of the streaming bursts:",
        "",
        *_table(
            ["where", "ms of CPU per photo"],
            [
                ["offline: all", off["cpu_ms_per_photo"]],
                [
                    "offline: fetch + decode (the decode threads' own clocks)",
                    off["fetch_decode_cpu_ms_per_photo"],
                ],
                *[[f"streaming: {k}", v] for k, v in _process_cpu(st).items()],
                ["streaming: all", st["cpu_ms_per_photo"]["total"]],
            ],
        ),  # fmt: skip
        f"**Worker overhead** = workers' CPU per photo ({st['worker_cpu_ms_per_photo']}) − offline fetch + decode "
        f"({off['fetch_decode_cpu_ms_per_photo']}) = **{r['worker_overhead_ms']} ms**. The workers' CPU by stage "
        "(threads of all worker processes):",
        "",
        *_table(
            ["stage", "ms of CPU per photo"], [[k, v] for k, v in st["worker_stages_ms_per_photo"].items()]
        ),
        f"Cores busy: offline {off['cores_busy']}, streaming {st['cpu_ms_per_photo']['cores_busy']}; host steal: "
        f"offline {off['host_steal']:.1%}, streaming {st['cpu_ms_per_photo']['host_steal']:.1%}.",
        "",
        "Decode alone, one thread (and two), source megapixels/s:",
        "",
        *_table(
            ["decoder", "MP/s", "images/s", "CPU ms/photo", "images/s, 2 threads"],
            [
                [
                    "Pillow full decode + resize",
                    r["decode"]["full_mp_s"],
                    r["decode"]["full_img_s"],
                    r["decode"]["full_cpu_ms"],
                    "",
                ],
                [
                    "Pillow draft (the worker's decode before)",
                    r["decode"]["draft_mp_s"],
                    r["decode"]["draft_img_s"],
                    r["decode"]["draft_cpu_ms"],
                    r["decode"]["draft_2threads_img_s"],
                ],
                [
                    "the worker's decode (libjpeg-turbo)",
                    r["decode"]["worker_mp_s"],
                    r["decode"]["worker_img_s"],
                    r["decode"]["worker_cpu_ms"],
                    r["decode"]["worker_2threads_img_s"],
                ],
            ],
        ),  # fmt: skip
    ]
    gpu = r["gpu"]
    md += [
        f"GPU node: one core prepares {gpu['decode_img_s_per_core']} photos/s (fetch + decode alone) or "
        f"{gpu['worker_img_s_per_core']} (all the worker's CPU per photo), so a GPU serving this model at R "
        "images/s needs R ÷ that many worker cores:",
        "",
        *_table(
            ["GPU rate (img/s)", "cores: fetch + decode only", "cores: whole worker"],
            [[k, v["decode_only"], v["worker"]] for k, v in gpu["cores_per_gpu"].items()],
        ),
    ]
    return md


def _worker_settings(worker: dict | None) -> str:
    if not worker:  # results written before the worker's settings were recorded
        return ""
    return (
        f"workers: micro-batches of up to {worker['batch_size']} (window {worker['batch_window_s']} s), "
        f"{worker['infer_batch_size']} images per Triton request, {worker['decode_threads']} decode threads; "
    )


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    m = results["machine"]
    serving = results["serving"]
    md = [
        "# Darkroom benchmark",
        "",
        f"{results['mode']} run at {results['at']}: {results['photos']} photos ({results['megapixels']:.0f} MP), "
        f"{m['cores']} cores ({m['cpu']}), {results['workers']} worker(s) on {results['partitions']} partitions; "
        f"Triton: {serving['intra_op_threads']} ONNX Runtime thread(s), dynamic batching max queue delay "
        f"{serving['max_queue_delay_us']} µs; {_worker_settings(results.get('worker'))}took "
        f"{results['elapsed_s']['total']} s "
        f"({', '.join(f'{k} {v} s' for k, v in results['elapsed_s'].items() if k != 'total')}). "
        "Method and reading: docs/performance.md.",
        "",
        *_goals(results),
        "![throughput and CPU](latest.png)",
        "",
        "![latency–throughput](latency.png)",
        "",
    ]
    for name, r in results["details"].items():
        md += _model_section(name, r)
    if "scaling" in results:
        md += [
            "## Scaling: workers and partitions (small model, one burst each)",
            "",
            *_table(
                ["workers × partitions", "images/s", "cores busy", "CPU ms/photo", "host steal"],
                [
                    [
                        f"{s['workers']} × {s['partitions']}",
                        s["img_s"],
                        s["cores_busy"],
                        s["cpu_ms_per_photo"],
                        f"{s['host_steal']:.1%}",
                    ]
                    for s in results["scaling"]
                ],
            ),  # fmt: skip
        ]
    (out / "latest.md").write_text("\n".join(md) + "\n")
    _plots(results, out)


def _plots(results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    details = results["details"]
    fig, axes = plt.subplots(len(details), 2, figsize=(13, 3.4 * len(details)), squeeze=False)
    for (name, r), (ax1, ax2) in zip(details.items(), axes, strict=True):
        bars = {
            "offline ceiling": r["offline_img_s"],
            "streaming burst": r["stream_img_s"],
            f"server (p99 ≤ {r['bound_ms']:.0f} ms)": r["server_img_s"],
            "naive": r["naive_img_s"],
        }
        ax1.barh(list(bars)[::-1], list(bars.values())[::-1], color=["#47a", "#c93", "#2a6", "#999"])
        ax1.set_xlabel("images / s")
        ax1.set_title(f"{name}: throughput")
        left = 0.0
        colors = ["#2a6", "#c93", "#a64", "#d96", "#e8b", "#666", "#8ac", "#b7d"]
        ax2.barh(["offline"], [r["offline"]["cpu_ms_per_photo"]], color="#47a")
        for (part, ms), color in zip(_process_cpu(r["stream"]).items(), colors, strict=False):
            ax2.barh(["streaming"], [ms], left=left, color=color, label=part)
            left += ms
        ax2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax2.set_xlabel("ms of CPU per photo")
        ax2.set_title(f"{name}: where the CPU goes")
    fig.tight_layout()
    fig.savefig(out / "latest.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(details), figsize=(6.5 * len(details), 4), squeeze=False)
    for (name, r), ax in zip(details.items(), axes[0], strict=True):
        points = sorted(r["stream"]["curve"] + r["stream"]["server"]["trials"], key=lambda c: c["offered"])
        x = [c["offered"] for c in points]
        for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(x, [c[q] for c in points], style, label=q)
        ax.axhline(r["bound_ms"], color="#a33", linestyle="--", label=f"bound {r['bound_ms']:.0f} ms")
        ax.axvline(r["offline_img_s"], color="#47a", linestyle=":", label="offline ceiling")
        ax.axvline(r["server_img_s"], color="#2a6", linestyle="-.", label="server scenario rate")
        ax.set_xlabel("offered uploads / s (Poisson)")
        ax.set_ylabel("upload → tag latency, ms")
        ax.set_yscale("log")
        ax.set_title(f"{name}: latency vs offered load")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=100)
    plt.close(fig)
