"""Throughput and peak memory of the vocabulary step's query-log reader on large generated logs.

    .venv/bin/python -m bench.vocab_bench [--sizes 1000000 3000000 10000000] [--dir DIR]

Each size is generated (``trainer.data.querylog.write_query_log``: synthetic-world queries with mixed
case, punctuation, plurals, translations, plus 2% never-repeated long-tail queries), then read in a fresh
subprocess so that its peak RSS is the reader's alone. Prints JSON and writes ``bench/results/vocab.json``.
Goal: >= 1M query lines per minute on 2 cores, and peak memory flat as the log grows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_LINES_PER_MIN = 1_000_000
RESULTS = Path(__file__).resolve().parent / "results" / "vocab.json"


def _memory_mib(field: str) -> float:
    """This process's ``VmRSS`` (now) or ``VmHWM`` (peak) in MiB. ``ru_maxrss`` will not do: Linux carries
    the parent's peak over fork and exec, so a child would report the generator's memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; an upper bound


def measure(path: Path) -> dict:
    """Read one log in this process and report lines/min and peak RSS (call in a fresh process)."""
    from trainer.vocab.inputs import read_query_log
    from trainer.vocab.normalize import TagNormalizer

    normalizer = TagNormalizer.from_files()
    baseline = _memory_mib("VmRSS")
    start = time.perf_counter()
    demand = read_query_log(path, normalizer)
    seconds = time.perf_counter() - start
    return {
        "lines": demand.lines,
        "bytes": path.stat().st_size,
        "seconds": round(seconds, 3),
        "lines_per_min": round(demand.lines / seconds * 60),
        "peak_rss_mib": round(_memory_mib("VmHWM"), 1),
        "rss_before_read_mib": round(baseline, 1),
        "distinct_tagsets_kept": len(demand.tagsets.counts),
        "tagsets_evicted": demand.tagsets.evicted_keys,
        "bad_lines": demand.bad.total,
    }


def run(sizes: list[int], workdir: Path) -> dict:
    from trainer.data.querylog import write_query_log

    rows = []
    for n in sizes:
        log = workdir / f"queries-{n}.tsv"
        t0 = time.perf_counter()
        write_query_log(log, n, seed=n)
        generated = time.perf_counter() - t0
        out = subprocess.run(
            [sys.executable, "-m", "bench.vocab_bench", "--measure", str(log)],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout)
        row["generate_seconds"] = round(generated, 2)
        rows.append(row)
        log.unlink()
        print(f"{n:>11,} lines: {row['lines_per_min'] / 1e6:.1f}M lines/min, peak RSS {row['peak_rss_mib']} MiB",
              file=sys.stderr)  # fmt: skip
    return {
        "benchmark": "vocab query-log reader",
        "goal_lines_per_min": GOAL_LINES_PER_MIN,
        "meets_goal": all(r["lines_per_min"] >= GOAL_LINES_PER_MIN for r in rows),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    p.add_argument("--dir", type=Path, help="where to write the generated logs (default: a temp folder)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the subprocess side
    args = p.parse_args(argv)
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result = run(args.sizes, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["meets_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
