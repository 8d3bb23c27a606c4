"""``darkroom demo``: the paper's story on this machine, with numbers, a contact sheet and a search at the end.

1. The general tagger (EfficientNet-Lite0 with ImageNet weights, classes mapped to a photo vocabulary) is built
   into the demo's own model repository as version 1, and the embedded stack (broker, Triton, workers, search
   indexer) starts on it. Real sample photographs (scikit-image, scikit-learn, matplotlib) get real tags.
2. The backbone is fine-tuned on a synthetic collection's noisy user tags (a new head on cached features) and
   rolled out live as version 2: Triton loads it while the workers keep running.
3. Held-out photos of the collection are tagged by version 2 with the collection's own vocabulary, scored
   against their known content; then the search index is queried.

The demo's repository (``data/demo/triton_models``) is rebuilt each run, so ``darkroom up`` on
``triton_models/`` keeps serving the general tagger.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from contracts.records import parse_rfc3339
from search.cli import print_hits
from search.store import SearchIndex
from stream.clients import UploadPublisher, end_offsets, photo_id_for, upload_event
from stream.settings import Settings
from tools.embedded import Ports, Stack, StackError, default_workers
from tools.outcomes import TagCollector

console = Console()
HOLDOUT_SEED = 1234


@dataclass
class Outcome:
    photo_id: str
    path: Path
    labels: list[str]
    event: dict
    kind: str  # "tags" or "dlq"
    seen_at: float

    @property
    def latency_ms(self) -> float:
        return (self.seen_at - parse_rfc3339(self.event.get("uploaded_at") or "").timestamp()) * 1000


#: Marks a model repository as the demo's own, which each run may rebuild.
DEMO_MARKER = ".darkroom-demo"
#: The collection the general tagger is fine-tuned on: small enough for a demo, enough for a head.
FINETUNE_TRAIN, FINETUNE_VAL = 800, 300


def run_demo(args: argparse.Namespace) -> int:
    from trainer.data.synthetic import make_photo_set

    repo: Path = args.model_repo
    if (repo / "tagger").exists() and not (repo / DEMO_MARKER).exists():
        console.print(
            f"[red]error:[/] {repo} holds a model the demo did not make, and the demo rebuilds its repository; "
            "give --model-repo a folder of its own (default data/demo/triton_models)"
        )
        return 2
    _fresh_general_repo(repo)
    samples = _sample_photos(args.workdir / "samples")
    console.rule(f"rendering {args.photos} held-out photos of the collection (640x480 JPEG)")
    holdout = make_photo_set(
        args.workdir / "holdout", args.photos, seed=HOLDOUT_SEED, size=(640, 480), split="holdout"
    )
    records = [json.loads(line) for line in holdout.read_text().splitlines()]
    photos = {photo_id_for(holdout.parent / r["path"]): (holdout.parent / r["path"], r) for r in records}

    stack = Stack(
        args.run_dir,
        repo,
        Ports.free(),
        file_roots=[args.workdir],
        with_indexer=True,
        workers=default_workers(),
    )
    console.rule("starting broker, Triton (the general tagger, version 1), workers and search indexer")
    try:
        stack.start()
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    collector = TagCollector(stack.bootstrap)
    collector.start()
    try:
        console.rule("1. real photographs, tagged by the general tagger")
        sample_outcomes, _ = _publish_and_collect(stack, collector, samples, timeout_s=args.timeout)
        _show_samples(sample_outcomes)
        console.rule(
            "2. fine-tuning the backbone on the collection's noisy user tags, rolled out as version 2"
        )
        version = _finetune_and_roll_out(repo, args.workdir / "finetune", stack)
        console.rule(f"3. the collection's held-out photos, tagged by version {version}")
        outcomes, wall = _publish_and_collect(stack, collector, photos, timeout_s=args.timeout)
        code = _report(outcomes, photos, wall, args.out, list(sample_outcomes.values()))
        _show_search(stack, [o for o in outcomes.values() if o.kind == "tags"])
        _keep_page_open(stack)
    except StackError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    finally:
        collector.stop()
        stack.stop()
    return code


def _fresh_general_repo(repo: Path) -> None:
    """Rebuild ``repo`` with the general tagger as version 1 (seconds: no training)."""
    import shutil

    from trainer.general.model import build_general_model

    console.rule("building the general tagger: EfficientNet-Lite0, ImageNet weights, a photo vocabulary")
    shutil.rmtree(repo / "tagger", ignore_errors=True)
    repo.mkdir(parents=True, exist_ok=True)
    (repo / DEMO_MARKER).write_text("the model repository of `darkroom demo`, rebuilt on every run\n")
    build_general_model(repo)


def _sample_photos(folder: Path) -> dict[str, tuple[Path, dict]]:
    """The sample photographs shipped with scikit-image, scikit-learn and matplotlib, as files to upload."""
    from trainer.general.samples import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos = {}
    for name, png in sample_photos().items():
        path = folder / f"{name}.png"
        path.write_bytes(png)
        photos[photo_id_for(path)] = (path, {"owner": "demo", "user_tags": [], "labels": []})
    return photos


def _show_samples(outcomes: dict[str, Outcome]) -> None:
    table = Table(title="real photographs, general tagger", title_justify="left")
    for col in ("photo", "tags (score)"):
        table.add_column(col)
    for o in sorted(outcomes.values(), key=lambda o: o.path.name):
        tags = ", ".join(f"{t['tag']} {t['score']:.2f}" for t in o.event.get("tags", []))
        table.add_row(
            o.path.stem, tags or ("dead letter: " + str(o.event.get("error")) if o.kind == "dlq" else "-")
        )
    console.print(table)


def _finetune_and_roll_out(repo: Path, workdir: Path, stack: Stack, timeout_s: float = 180.0) -> int:
    """Train a head for the collection's vocabulary on the general tagger's frozen ImageNet backbone (its
    features cached, so a rerun trains in seconds), export it as the next version and wait until Triton
    serves it; the workers keep running throughout."""
    import urllib.request

    from trainer.data.synthetic import make_photo_set
    from trainer.export import versions, write_version
    from trainer.train import TrainConfig
    from trainer.train import main as train_main
    from trainer.vocab.vocabulary import synthetic_vocabulary

    served = versions(repo / "tagger")[-1]
    train = make_photo_set(workdir / "train", FINETUNE_TRAIN, seed=0, split="train")
    val = make_photo_set(workdir / "val", FINETUNE_VAL, seed=1, split="val")
    size = _served_input_size(repo)  # versions of one model share the input size
    config = TrainConfig(model="efficientnet_lite0", size=size, init_from="imagenet", unfreeze=0)
    checkpoint = train_main(
        train, val, synthetic_vocabulary(), workdir / "checkpoint", config, cache_dir=workdir / "cache",
        feature_cache=workdir / "features",
    )  # fmt: skip
    version_dir = write_version(repo, checkpoint)
    version = int(version_dir.name)
    console.print(
        f"head trained on {FINETUNE_TRAIN} photos' user tags: val mAP {checkpoint['metrics']['val_mAP']:.3f} "
        f"(clean labels) → version {version} (was {served}); waiting for Triton to load it"
    )
    url = f"http://{stack.triton_http}/v2/models/tagger/versions/{version}/ready"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return version
        except OSError:
            pass
        time.sleep(0.5)
    raise StackError(f"Triton did not serve version {version} within {timeout_s:.0f}s; see {stack.run_dir}")


def _served_input_size(repo: Path) -> int:
    """The square input size the repository's ``tagger`` serves (its config.pbtxt)."""
    from trainer.export import config_input_size, read_model_config

    size = config_input_size(read_model_config(repo / "tagger" / "config.pbtxt"))
    assert size is not None and size[0] == size[1], size
    return size[0]


def _publish_and_collect(
    stack: Stack, collector: TagCollector, photos: dict[str, tuple[Path, dict]], timeout_s: float
) -> tuple[dict[str, Outcome], float]:
    """Publish one upload per photo and wait (up to ``timeout_s``) until each has its tag event or dead letter."""
    settings = Settings()
    publisher = UploadPublisher(stack.bootstrap, settings.uploads_topic)
    started = time.time()
    for path, record in photos.values():
        key, value = upload_event(path, owner=record["owner"], user_tags=record["user_tags"])
        publisher.send(key, value)
    publisher.flush()
    console.print(f"published {len(photos)} uploads in {time.time() - started:.2f}s; waiting for tags")
    with console.status("tagging") as status:
        collector.wait(set(photos), timeout_s, lambda n: status.update(f"tagged {n}/{len(photos)}"))
    outcomes = {}
    for pid in photos.keys() & collector.outcomes.keys():
        topic, event = collector.outcomes[pid]
        kind = "dlq" if topic == settings.dlq_topic else "tags"
        outcomes[pid] = Outcome(
            pid, photos[pid][0], photos[pid][1]["labels"], event, kind, collector.seen[pid]
        )
    return outcomes, max(o.seen_at for o in outcomes.values()) - started if outcomes else 0.0


def _report(
    outcomes: dict[str, Outcome], photos: dict, wall: float, out: Path, samples: list[Outcome]
) -> int:
    tagged = [o for o in outcomes.values() if o.kind == "tags"]
    table = Table(title="first 15 photos", title_justify="left")
    for col in ("photo", "predicted tags", "true content", "latency"):
        table.add_column(col)
    for o in tagged[:15]:
        tags = ", ".join(f"{t['tag']} {t['score']:.2f}" for t in o.event["tags"])
        table.add_row(o.photo_id, tags, ", ".join(o.labels), f"{o.latency_ms:.0f} ms")
    console.print(table)

    latencies = np.array([o.latency_ms for o in tagged]) if tagged else np.zeros(1)
    predicted = sum(len(o.event["tags"]) for o in tagged)
    correct = sum(len({t["tag"] for t in o.event["tags"]} & set(o.labels)) for o in tagged)
    truth = sum(len(o.labels) for o in tagged)
    summary = {
        "uploads": len(photos),
        "tag_events": len(tagged),
        "dead_letters": len(outcomes) - len(tagged),
        "missing": len(photos) - len(outcomes),
        "throughput_img_s": round(len(outcomes) / wall, 1) if wall else 0.0,
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50))),
            "p95": round(float(np.percentile(latencies, 95))),
        },
        "tag_precision": round(correct / predicted, 3) if predicted else 0.0,
        "tag_recall": round(correct / truth, 3) if truth else 0.0,
    }
    console.print(
        f"[bold]{summary['tag_events']}[/] tag events, {summary['dead_letters']} dead letters, {summary['missing']} missing; "
        f"{summary['throughput_img_s']} photos/s; latency p50 {summary['latency_ms']['p50']} ms, "
        f"p95 {summary['latency_ms']['p95']} ms (all {len(photos)} published at once); "
        f"tags vs true content: precision {summary['tag_precision']}, recall {summary['tag_recall']}"
    )
    write_contact_sheet(out, [o for o in samples if o.kind == "tags"] + tagged, summary)
    console.print(
        f"contact sheet: {(out / 'index.html').resolve()}   events: {(out / 'tags.jsonl').resolve()}"
    )
    return 0 if summary["missing"] == 0 and summary["tag_events"] > 0 else 1


def _show_search(stack: Stack, tagged: list[Outcome], stall_s: float = 120.0) -> None:
    """Search the index the stack's indexer built from the demo's tag events, and say where the page is."""
    index = _caught_up_index(stack, stall_s)
    query = demo_query([[t["tag"] for t in o.event["tags"]] for o in tagged])
    console.rule(f"search: darkroom search {query!r}")
    hits = index.search(query, limit=10)
    index.close()
    print_hits(query, hits, console)
    truth = {o.photo_id: set(o.labels) for o in tagged}
    right = sum(set(query.split()) <= truth.get(h.photo_id, set()) for h in hits)
    console.print(
        f"{right} of these {len(hits)} photos truly show {query!r}. "
        f"Search again: [bold]darkroom search --db {stack.index_db} WORDS[/]"
    )
    console.print(
        f"search page: [bold]{stack.web_url}[/] (while this stack runs; `darkroom up` serves one on :8080)"
    )


def _caught_up_index(stack: Stack, stall_s: float) -> SearchIndex:
    """The stack's search index once its indexer has read every tag event and dead letter the broker holds.

    Caught up is decided by offsets (the index stores the next offset of each partition it has read), not
    by a fixed wait: however slow the machine, the search runs on everything the demo produced. Only an
    indexer that makes no progress for ``stall_s`` (or has died) ends the wait early, saying so, and the
    search then runs on what the index has."""
    settings = Settings()
    ends = end_offsets(stack.bootstrap, [settings.tags_topic, settings.dlq_topic])
    progress_at, last_behind = time.monotonic(), None
    with console.status("waiting for the search index") as status:
        while True:
            stored = _stored_offsets(stack.index_db)
            behind = sum(max(0, end - stored.get(tp, 0)) for tp, end in ends.items())
            if behind == 0:
                break
            if behind != last_behind:
                progress_at, last_behind = time.monotonic(), behind
            failed = stack.failed_child()
            if failed is not None or time.monotonic() - progress_at > stall_s:
                why = (
                    f"{failed.name} exited (see {failed.log})"
                    if failed
                    else f"no progress for {stall_s:.0f}s"
                )
                console.print(f"[yellow]the search index is {behind} record(s) behind: {why}[/]")
                break
            status.update(f"search index: {behind} record(s) to go")
            time.sleep(0.3)
    if not stack.index_db.exists():
        raise StackError(f"the indexer wrote no index at {stack.index_db}")
    return SearchIndex(stack.index_db, readonly=True)


def _stored_offsets(db: Path) -> dict[tuple[str, int], int]:
    """The next offset of each partition the index at ``db`` has read (none before it exists)."""
    if not db.exists():
        return {}
    index = SearchIndex(db, readonly=True)
    try:
        return index.offsets()
    finally:
        index.close()


def demo_query(tag_lists: list[list[str]]) -> str:
    """Two tags that often occur together but each on at most half the photos (a query that picks photos
    out rather than returning most of them); ties alphabetical. Else the commonest pair or tag."""
    pairs: Counter[tuple[str, str]] = Counter()
    singles: Counter[str] = Counter()
    for tags in tag_lists:
        singles.update(set(tags))
        pairs.update(itertools.combinations(sorted(set(tags)), 2))
    selective = {p: n for p, n in pairs.items() if max(singles[p[0]], singles[p[1]]) <= len(tag_lists) / 2}
    for candidates in (selective, pairs):
        if candidates:
            return " ".join(min(candidates.items(), key=lambda kv: (-kv[1], kv[0]))[0])
    return min(singles.items(), key=lambda kv: (-kv[1], kv[0]))[0] if singles else "sea"


def _keep_page_open(stack: Stack) -> None:
    """In a terminal, keep the stack (and its page) up until Enter; elsewhere (CI, pipes) stop at once."""
    if not sys.stdin.isatty():
        return
    try:
        console.input(f"open [bold]{stack.web_url}[/] to search the demo photos; press Enter to stop ")
    except (EOFError, KeyboardInterrupt):
        pass


def write_contact_sheet(out: Path, tagged: list[Outcome], summary: dict) -> None:
    """``out/index.html`` (each thumbnail with its tags), ``out/tags.jsonl`` and ``out/summary.json``."""
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    cards = []
    with (out / "tags.jsonl").open("w") as fh:
        for o in tagged:
            fh.write(json.dumps(o.event) + "\n")
            with Image.open(o.path) as img:
                img.thumbnail((200, 150))
                img.save(thumbs / f"{o.photo_id}.jpg", quality=80)
            tags = "".join(
                f'<span class="{"hit" if t["tag"] in o.labels else "miss" if o.labels else "tag"}">{html.escape(t["tag"])} {t["score"]:.2f}</span>'
                for t in o.event["tags"]
            )
            cards.append(
                f'<figure><img src="thumbs/{html.escape(o.photo_id)}.jpg" alt=""><figcaption>{tags or "<i>no tag</i>"}'
                f"<small>{'truth: ' + html.escape(', '.join(o.labels)) if o.labels else html.escape(o.path.name) + ' (general tagger)'} · v{html.escape(str(o.event.get('model_version')))} · {o.latency_ms:.0f} ms</small></figcaption></figure>"
            )
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "index.html").write_text(
        "<!doctype html><meta charset=utf-8><title>Darkroom demo</title><style>"
        "body{font:14px system-ui;margin:1.5em;background:#111;color:#eee}"
        "main{display:grid;grid-template-columns:repeat(auto-fill,210px);gap:10px}"
        "figure{margin:0;background:#222;padding:5px;border-radius:4px}img{width:200px;height:150px;object-fit:cover}"
        "span{display:inline-block;margin:2px;padding:1px 5px;border-radius:3px;font-size:12px}"
        ".hit{background:#2a6}.miss{background:#a44}.tag{background:#457}small{display:block;color:#999;margin-top:3px}</style>"
        f"<h1>Darkroom demo</h1><p>{html.escape(json.dumps(summary))}</p>"
        "<p>First the real sample photographs, tagged by the general tagger (blue). Then the collection's held-out "
        "photos, tagged by the fine-tuned version: green where the tag is in the photo's true content, red where "
        "it is not.</p>"
        f"<main>{''.join(cards)}</main>\n"
    )
