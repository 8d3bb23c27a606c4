"""``darkroom index`` and ``darkroom search``: the reference consumer of ``photo-tags`` and its query tool."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from contracts.helpformat import DefaultsHelpFormatter
from search.consumer import consume
from search.counters import LiveCounters
from search.store import Applied, Hit, SearchIndex, TopicNames, query_terms
from stream.settings import Settings, SettingsError

console = Console(stderr=True)

DEFAULT_DB_ENV = "DARKROOM_INDEX_DB"
DEFAULT_DB = Path("run/index.sqlite")


def default_db() -> Path:
    """``$DARKROOM_INDEX_DB``, else ``run/index.sqlite`` (where ``darkroom up`` keeps it by default)."""
    return Path(os.environ.get(DEFAULT_DB_ENV) or DEFAULT_DB)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom index",
        description="Index tag events (and upload URLs, dead letters) into a SQLite search index; "
        "optionally serve the search page. Topic names come from DARKROOM_*_TOPIC.",
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (default DARKROOM_KAFKA_BOOTSTRAP)")
    parser.add_argument(
        "--db", type=Path, default=None, help=f"index file (default ${DEFAULT_DB_ENV} or {DEFAULT_DB})"
    )
    parser.add_argument("--once", action="store_true", help="index what the topics hold now, then exit")
    parser.add_argument(
        "--reset", action="store_true", help="empty the index and read the topics from the start"
    )
    parser.add_argument("--serve", action="store_true", help="serve the search page while indexing")
    parser.add_argument("--web-port", type=int, default=8080, help="port of the search page (default 8080)")
    parser.add_argument(
        "--web-bind", default="127.0.0.1", help="address of the search page (default 127.0.0.1)"
    )
    parser.add_argument(
        "--file-root",
        type=Path,
        action="append",
        help="folder whose file:// photos the page may show as thumbnails (repeatable; default: cwd)",
    )
    parser.add_argument(
        "--compare-json",
        type=Path,
        help="the page's rollout panel shows this `darkroom compare --json` summary (rewrite it on a schedule)",
    )
    parser.add_argument(
        "--topic-wait", type=float, default=30.0, help="seconds to wait for the topics to exist"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """``darkroom index``: consume until SIGTERM/Ctrl-C (or, with ``--once``, until caught up)."""
    from confluent_kafka import KafkaException

    from stream.clients import check_broker

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.once and args.serve:
        console.print("[red]error:[/] --once and --serve exclude each other: a page needs a running indexer")
        return 2
    try:
        settings = Settings.from_env(kafka_bootstrap=args.bootstrap)
    except SettingsError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    db_path = args.db or default_db()
    try:
        index = SearchIndex(db_path)
    except sqlite3.DatabaseError as exc:
        console.print(
            f"[red]error:[/] {escape(str(db_path))} is not a usable search index ({escape(str(exc))}); "
            "pass another --db"
        )
        return 2
    try:  # the topics may come later (--topic-wait), the broker must answer now
        check_broker(settings.kafka_bootstrap, settings=settings)
    except KafkaException as exc:
        index.close()
        console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    if args.reset:
        index.reset()
    topics, counters, stop = TopicNames.from_settings(settings), LiveCounters(), threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    server = None
    if args.serve:
        from search.web import serve

        roots = [str(p) for p in (args.file_root or [Path.cwd()])]
        try:
            from stream.clients import UploadPublisher

            edits = UploadPublisher(settings.kafka_bootstrap, settings.edits_topic, settings)
            server = serve(db_path, counters, args.web_bind, args.web_port, roots, settings, edits=edits,
                           compare_path=args.compare_json)  # fmt: skip
        except OSError as exc:
            console.print(f"[red]error:[/] cannot serve the page on {args.web_bind}:{args.web_port}: {escape(str(exc))}; "
                          "pick another --web-port")  # fmt: skip
            return 2
        console.print(f"search page: http://{args.web_bind}:{args.web_port}/")
    console.print(
        escape(f"indexing {', '.join(topics.all())} from {settings.kafka_bootstrap} into {db_path}")
    )
    total = Applied()
    last_report = time.monotonic()
    try:
        for applied in consume(
            index, settings.kafka_bootstrap, topics, counters, stop, args.once, args.topic_wait, settings
        ):
            _accumulate(total, applied)
            for problem in applied.invalid[:5]:
                console.print(f"[yellow]skipped[/] {escape(problem)}")
            if time.monotonic() - last_report > 5:
                _report(total)
                last_report = time.monotonic()
    except KafkaException as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    finally:
        if server is not None:
            server.shutdown()
        index.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _report(total)
    return 0


def _accumulate(total: Applied, batch: Applied) -> None:
    total.tag_events += batch.tag_events
    total.stale += batch.stale
    total.uploads += batch.uploads
    total.dead_letters += batch.dead_letters
    total.invalid.extend(batch.invalid[: max(0, 100 - len(total.invalid))])


def _report(total: Applied) -> None:
    console.print(
        f"indexed {total.tag_events} tag event(s) ({total.stale} replayed or older), {total.uploads} upload(s), "
        f"{total.dead_letters} dead letter(s); {len(total.invalid)} invalid record(s) skipped"
    )


def search_main(argv: list[str] | None = None) -> int:
    """``darkroom search "beach sunset"``: ranked photo ids with their tags. Exit 1 when nothing matches."""
    parser = argparse.ArgumentParser(
        formatter_class=DefaultsHelpFormatter,
        prog="darkroom search",
        description="Search the index that `darkroom index` (or `up`) keeps.",
    )
    parser.add_argument("query", nargs="+", help="words; a photo must carry a tag matching each")
    parser.add_argument(
        "--db", type=Path, default=None, help=f"index file (default ${DEFAULT_DB_ENV} or {DEFAULT_DB})"
    )
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    query = " ".join(args.query)
    if not query_terms(query):
        console.print(f"[red]error:[/] the query {escape(repr(query))} has no words to search for")
        return 2
    if args.limit < 1:
        console.print(f"[red]error:[/] --limit must be >= 1, got {args.limit}")
        return 2
    try:
        index = SearchIndex(args.db or default_db(), readonly=True)
        hits = index.search(query, args.limit)
    except (FileNotFoundError, sqlite3.DatabaseError) as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    if args.json:
        for hit in hits:
            sys.stdout.write(orjson.dumps(hit.to_json()).decode() + "\n")
    else:
        print_hits(query, hits)
    return 0 if hits else 1


def print_hits(query: str, hits: Iterable[Hit], out: Console | None = None) -> None:
    """A table of ranked hits: photo id, relevance, model version and tags. Every value from the index or the
    query is printed as plain text: a tag like ``[/x]`` or ``[bold]`` is not Rich markup."""
    hits = list(hits)
    out = out or Console()
    if not hits:
        out.print(Text(f"no photo matches {query!r}"))
        return
    table = Table(title=Text(f"{len(hits)} photo(s) for {query!r}"), title_justify="left")
    for col in ("#", "photo", "relevance", "model", "tags"):
        table.add_column(col)
    for rank, hit in enumerate(hits, 1):
        tags = ", ".join(f"{t['tag']} {t['score']:.2f}" for t in hit.tags)
        cells = (str(rank), hit.photo_id, f"{hit.relevance:.2f}", f"{hit.model} v{hit.model_version}", tags)
        table.add_row(*map(Text, cells))
    out.print(table)
