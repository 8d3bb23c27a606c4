"""What a shadow version costs the live path: live latency with and without a shadow, same load, same stack.

    .venv/bin/python bench/shadow_overhead.py --repo triton_models [--uploads 300 --rate 10] [--out FILE]

On a private copy of the repository, version 2 is a copy of the newest version (the shadow does exactly the
live model's work: the worst case for a candidate of the same size). Each run starts the embedded stack with
version 1 live, once without a shadow and once with version 2 shadowing it, offers ``--uploads`` uploads at
``--rate`` per second (below the stack's capacity: latency, not throughput, is measured) and reports the live
tag events' latency (publish → event seen) p50/p95/p99, the shadow events seen and the ratio of the two runs.
Runs alternate (off, on, off, on, ...) so that the machine's other load hits both alike. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from contracts.records import upload_value  # noqa: E402
from contracts.rollout import Rollout  # noqa: E402
from stream.clients import UploadPublisher, follow  # noqa: E402
from tools.embedded import Ports, Stack  # noqa: E402
from tools.outcomes import TagCollector  # noqa: E402
from tools.rollout import write_rollout  # noqa: E402
from trainer.export import versions  # noqa: E402


def prepare(repo: Path, work: Path) -> Path:
    """A copy of ``repo`` whose model ``tagger`` has version 1 and a copy of it as version 2."""
    target = work / "repo"
    shutil.copytree(repo, target)
    model_dir = target / "tagger"
    newest = max(versions(model_dir))
    for v in versions(model_dir):
        if v != newest:
            shutil.rmtree(model_dir / str(v))
    (model_dir / str(newest)).rename(model_dir / "1")
    shutil.copytree(model_dir / "1", model_dir / "2")
    return target


def run(
    repo: Path, photos: list[Path], work: Path, shadow: bool, uploads: int, rate: float, tag: str
) -> dict:
    write_rollout(repo / "tagger", Rollout(live="1", shadow="2" if shadow else ""))
    stack = Stack(work / f"run-{tag}", repo, Ports.free(), file_roots=[photos[0].parent])
    stack.start()
    collector = TagCollector(stack.bootstrap)
    try:
        collector.start()
        publisher = UploadPublisher(stack.bootstrap)
        warm = [f"warm-{tag}-{i}" for i in range(16)]
        for pid in warm:
            publisher.send(pid, upload_value(pid, photos[0].resolve().as_uri()))
        publisher.flush()
        if not collector.wait(set(warm), 180):
            raise RuntimeError("warm-up uploads got no outcome")
        ids = [f"{tag}-{i:05d}" for i in range(uploads)]
        sent: dict[str, float] = {}
        started = time.time()
        for i, pid in enumerate(ids):
            delay = started + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            sent[pid] = time.time()
            publisher.send(pid, upload_value(pid, photos[i % len(photos)].resolve().as_uri()))
        publisher.flush()
        if not collector.wait(set(ids), 300):
            raise RuntimeError(f"{tag}: uploads got no outcome")
        latencies = np.array([(collector.seen[p] - sent[p]) * 1000 for p in ids])
        shadow_events = sum(
            1
            for _topic, _key, value in follow(stack.bootstrap, ["photo-tags-shadow"], idle_timeout_s=3.0)
            if value
        )
    finally:
        collector.stop()
        stack.stop()
    return {
        "shadow": shadow,
        "uploads": uploads,
        "shadow_events": shadow_events,
        "latency_ms": {
            q: round(float(np.percentile(latencies, int(q[1:]))), 1) for q in ("p50", "p95", "p99")
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="a Triton model repository with a tagger")
    parser.add_argument("--photos", type=Path, help="a folder of JPEGs (default: the synthetic set it makes)")
    parser.add_argument("--uploads", type=int, default=300)
    parser.add_argument("--rate", type=float, default=10.0, help="uploads per second offered")
    parser.add_argument("--pairs", type=int, default=2, help="(off, on) pairs of runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="shadow-bench-") as tmp:
        work = Path(tmp)
        repo = prepare(args.repo, work)
        if args.photos:
            photos = sorted(args.photos.glob("*.jpg"))
        else:
            from trainer.data.synthetic import make_photo_set

            photos = sorted(
                make_photo_set(work / "photos", 100, seed=3, size=(160, 120), split="bench").parent.glob(
                    "*.jpg"
                )
            )
        runs = []
        for pair in range(args.pairs):
            for shadow in (False, True):
                tag = f"{'on' if shadow else 'off'}{pair}"
                runs.append(run(repo, photos, work, shadow, args.uploads, args.rate, tag))
                print(json.dumps(runs[-1]), file=sys.stderr)
    off = [r["latency_ms"] for r in runs if not r["shadow"]]
    on = [r["latency_ms"] for r in runs if r["shadow"]]
    summary = {
        q: {
            "without_shadow": float(np.median([r[q] for r in off])),
            "with_shadow": float(np.median([r[q] for r in on])),
        }
        for q in ("p50", "p95", "p99")
    }
    for q in summary.values():
        q["ratio"] = round(q["with_shadow"] / q["without_shadow"], 3)
    report = {
        "rate_per_s": args.rate,
        "uploads_per_run": args.uploads,
        "runs": runs,
        "live_latency_ms": summary,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
